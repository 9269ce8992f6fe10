"""Run a validated prompt: prune, order, look up the cache, call each node, stream events.

One :class:`Executor` per process holds the device and the output cache; ``run`` may be called
from any one thread at a time (a lock serialises concurrent calls). The event sequence of a run is
``execution_start``, ``execution_cached``, then per node ``executing`` / ``progress`` / ``executed``
(``executed`` only for nodes with UI output, cached ones included) or ``execution_error``, and at
the end ``execution_success`` (only when nothing failed) or ``execution_interrupted``, and
finally ``executing`` with ``node=None``. A failing node fails its descendants only.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from graph_runtime.api import Result
from graph_runtime.cache import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, Entry, OutputCache, nbytes, node_key
from graph_runtime.context import CancelToken, Context, Interrupted, Paths, PreviewImage
from graph_runtime.device import choose_device, choose_dtype
from graph_runtime.events import (
    Event,
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    Progress,
)
from graph_runtime.registry import Registry
from graph_runtime.validation import PlannedNode, ValidationReport, gc_paused, validate

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Status = Literal["success", "error", "interrupted"]


class ValidationFailed(Exception):
    """The prompt cannot run; ``report`` holds every problem (``report.to_comfy()`` for HTTP)."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        lines = report.messages()
        super().__init__("invalid workflow:\n" + "\n".join(lines) if lines else "invalid workflow")


@dataclass(frozen=True)
class NodeFailure:
    """Why one node failed: its id and class, the exception's message, type and formatted traceback."""

    node_id: str
    class_type: str
    message: str
    exception_type: str
    traceback: list[str]


@dataclass
class RunResult:
    """The outcome of one run.

    ``outputs`` holds the output tuple of every node that ran or came from the cache (with cache
    policy ``none``, only the targets' outputs are kept). ``skipped`` lists nodes not run because
    something upstream failed; ``report`` is the validation report (node errors of outputs that
    were left out still show there).
    """

    prompt_id: str
    status: Status
    outputs: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    ui: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failures: dict[str, NodeFailure] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    interrupted_at: str | None = None
    report: ValidationReport | None = None

    @property
    def ok(self) -> bool:
        return self.status == "success"


class Executor:
    """Executes prompts on one device with an output cache that survives across runs."""

    def __init__(
        self,
        registry: Registry,
        *,
        device: str | torch.device | None = None,
        cache: str = "lru",
        cache_max_entries: int = DEFAULT_MAX_ENTRIES,
        cache_max_bytes: int = DEFAULT_MAX_BYTES,
        paths: Paths | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.registry = registry
        self.device = choose_device(device)
        self.dtype = dtype if dtype is not None else choose_dtype(self.device)
        self.paths = paths if paths is not None else Paths()
        self.cache = OutputCache(cache, cache_max_entries, cache_max_bytes)
        self._lock = threading.Lock()
        self._runs = 0

    def free(self) -> None:
        """Drop every cached output (what ``POST /free`` asks for)."""
        with self._lock:
            self.cache.clear()

    def run(
        self,
        prompt: dict[str, Any],
        *,
        prompt_id: str | None = None,
        outputs: Sequence[str] | None = None,
        on_event: Callable[[Event], None] | None = None,
        cancel: CancelToken | None = None,
        extra_pnginfo: dict[str, Any] | None = None,
        previews: bool = False,
        report: ValidationReport | None = None,
    ) -> RunResult:
        """Validate and run ``prompt`` (API format); raise :class:`ValidationFailed` if nothing can run.

        ``previews`` asks long nodes for per-step preview images (the editor shows them); off by
        default, since making one copies from the device every step. ``report``: this prompt's
        validation against this registry, made moments ago (a server validates on POST), so it is not
        validated twice; its good outputs are what runs.
        """
        if report is None:
            report = validate(prompt, self.registry, outputs)
        if not report.runnable:
            raise ValidationFailed(report)
        with self._lock:
            self._runs += 1
            run = _Run(self, report, prompt, prompt_id or uuid.uuid4().hex, on_event, cancel or CancelToken())
            run.extra_pnginfo = extra_pnginfo or {}
            run.previews = previews
            return run.execute()


class _Run:
    """The state of one run; split out of Executor so that run() stays readable."""

    def __init__(
        self,
        executor: Executor,
        report: ValidationReport,
        prompt: dict[str, Any],
        prompt_id: str,
        on_event: Callable[[Event], None] | None,
        cancel: CancelToken,
    ) -> None:
        self.ex = executor
        self.report = report
        self.prompt = prompt
        self.prompt_id = prompt_id
        self.on_event = on_event
        self.cancel = cancel
        self.extra_pnginfo: dict[str, Any] = {}
        self.previews = False
        self.result = RunResult(prompt_id, "success", report=report)
        self.salt = f"{prompt_id}:{executor._runs}:{uuid.uuid4().hex}"

    def emit(self, event: Event) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:  # a broken consumer must not break the run
            log.exception("event consumer failed on %s", event.type)

    def progress(self, node_id: str, value: int, total: int, preview: PreviewImage | None) -> None:
        self.emit(Progress(self.prompt_id, node=node_id, value=value, max=total, preview=preview))

    def keys(self) -> dict[str, str]:
        keys: dict[str, str] = {}
        for node_id in self.report.order:
            node = self.report.nodes[node_id]
            upstream = {name: (keys[src], idx) for name, (src, idx) in node.links.items()}
            salt = "" if node.cls.deterministic else self.salt
            keys[node_id] = node_key(node.cls, node.literals, upstream, salt)
        return keys

    def execute(self) -> RunResult:
        res, order, cache = self.result, self.report.order, self.ex.cache
        keep_all = cache.policy != "none"
        targets = set(self.report.good_outputs)
        with gc_paused():
            keys = self.keys()
        by_key: dict[str, Entry] = {}
        for node_id in order:  # pin hits now, so eviction during the run cannot lose them
            entry = cache.get(keys[node_id])
            if entry is not None:
                by_key[keys[node_id]] = entry
        needed = self.needed(keys, by_key)
        consumers = {n: 0 for n in order}
        for node_id in needed:
            if keys[node_id] not in by_key:
                for src, _ in self.report.nodes[node_id].links.values():
                    consumers[src] += 1
        values: dict[str, Entry] = {}
        failed: set[str] = set()
        self.emit(ExecutionStart(self.prompt_id))
        self.emit(ExecutionCached(self.prompt_id, nodes=tuple(n for n in order if keys[n] in by_key)))
        for node_id in order:
            node = self.report.nodes[node_id]
            if failed and any(src in failed for src, _ in node.links.values()):
                failed.add(node_id)
                res.skipped.append(node_id)
                continue
            entry = by_key.get(keys[node_id])
            if entry is None and node_id not in needed:
                continue  # only feeds cached nodes
            if entry is not None:
                res.cached.append(node_id)
                if entry.ui:
                    self.emit(Executed(self.prompt_id, node=node_id, output=entry.ui))
            else:
                if self.cancel.cancelled:
                    return self.interrupted(node)
                try:
                    entry = self.call(node, values)
                except Interrupted:
                    return self.interrupted(node)
                except Exception as exc:
                    self.fail(node, exc, values)
                    failed.add(node_id)
                    continue
                res.executed.append(node_id)
                by_key[keys[node_id]] = entry
                if node.cls.deterministic:
                    cache.put(keys[node_id], entry)
                if entry.ui:
                    self.emit(Executed(self.prompt_id, node=node_id, output=entry.ui))
            values[node_id] = entry
            if not keep_all:
                self.release(node, values, consumers, targets, by_key, keys)
        for node_id, entry in values.items():
            res.outputs[node_id] = entry.outputs
            if entry.ui:
                res.ui[node_id] = entry.ui
        if res.failures:
            res.status = "error"
        else:
            self.emit(ExecutionSuccess(self.prompt_id))
        self.emit(Executing(self.prompt_id, node=None))
        return res

    def needed(self, keys: dict[str, str], by_key: dict[str, Entry]) -> set[str]:
        """The targets and what they need; a cached node needs nothing upstream."""
        needed: set[str] = set()
        stack = list(self.report.good_outputs)
        while stack:
            node_id = stack.pop()
            if node_id in needed:
                continue
            needed.add(node_id)
            if keys[node_id] not in by_key:
                stack.extend(src for src, _ in self.report.nodes[node_id].links.values())
        return needed

    def release(
        self,
        node: PlannedNode,
        values: dict[str, Entry],
        consumers: dict[str, int],
        targets: set[str],
        by_key: dict[str, Entry],
        keys: dict[str, str],
    ) -> None:
        """Cache policy ``none``: drop an upstream output once its last consumer has run."""
        for src, _ in node.links.values():
            consumers[src] -= 1
            if consumers[src] == 0 and src not in targets:
                values.pop(src, None)
                by_key.pop(keys[src], None)

    def call(self, node: PlannedNode, values: dict[str, Entry]) -> Entry:
        """Run one node and check that it returned what it declares."""
        if self.on_event is not None:
            self.emit(Executing(self.prompt_id, node=node.node_id))
        kwargs = self.inputs(node, values)
        ex = self.ex
        ctx = Context(
            node_id=node.node_id,
            class_type=node.cls.__name__,
            device=ex.device,
            dtype=ex.dtype,
            paths=ex.paths,
            prompt=self.prompt,
            extra_pnginfo=self.extra_pnginfo,
            cancel=self.cancel,
            on_progress=self.progress,
            wants_preview=self.previews,
        )
        returned: Any = node.cls.run(ctx, **kwargs)  # type: ignore[attr-defined]
        ui: dict[str, Any] | None = None
        if isinstance(returned, Result):
            ui = returned.ui
            returned = returned.outputs
        if returned is None:
            returned = ()
        if not isinstance(returned, (tuple, list)):
            raise TypeError(
                f"{node.cls.__name__}.run returned {type(returned).__name__}, not a tuple of outputs"
            )
        declared = len(node.cls.outputs)
        if len(returned) != declared:
            raise TypeError(
                f"{node.cls.__name__}.run returned {len(returned)} values for {declared} declared outputs"
            )
        outputs = tuple(returned)
        return Entry(outputs, ui, nbytes(outputs))

    @staticmethod
    def inputs(node: PlannedNode, values: dict[str, Entry]) -> dict[str, Any]:
        """Keyword arguments of ``run``: literals, linked outputs, and defaults (or None) for the rest."""
        kwargs = dict(node.literals)
        for name, (src, idx) in node.links.items():
            kwargs[name] = values[src].outputs[idx]
        if len(kwargs) < len(node.cls.inputs):
            for spec in node.cls.inputs:
                if spec.name not in kwargs:
                    kwargs[spec.name] = getattr(spec, "default", None)
        return kwargs

    def fail(self, node: PlannedNode, exc: Exception, values: dict[str, Entry]) -> None:
        lines = traceback.format_exception(exc)
        failure = NodeFailure(
            node.node_id, node.cls.__name__, str(exc) or type(exc).__name__, type(exc).__name__, lines
        )
        self.result.failures[node.node_id] = failure
        try:
            current = {k: [_short(v)] for k, v in self.inputs(node, values).items()}
        except Exception:
            current = {}
        self.emit(
            ExecutionError(
                self.prompt_id,
                node_id=node.node_id,
                node_type=failure.class_type,
                executed=tuple(self.result.executed),
                exception_message=failure.message,
                exception_type=failure.exception_type,
                traceback=tuple(lines),
                current_inputs=current,
            )
        )

    def interrupted(self, node: PlannedNode) -> RunResult:
        res = self.result
        res.status = "interrupted"
        res.interrupted_at = node.node_id
        self.emit(
            ExecutionInterrupted(
                self.prompt_id,
                node_id=node.node_id,
                node_type=node.cls.__name__,
                executed=tuple(res.executed),
            )
        )
        self.emit(Executing(self.prompt_id, node=None))
        return res


def _short(value: Any) -> str:
    """A one-line description of an input value for error reports: literals as written, tensors by
    shape, anything else by its type (the repr of a value holding a network formats every weight)."""
    torch = sys.modules.get("torch")  # no tensor can exist before torch is imported
    if torch is not None and isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)} {value.dtype} on {value.device}"
    if value is None or isinstance(value, (str, int, float, bool)):
        text = repr(value)
        return text if len(text) <= 200 else text[:197] + "..."
    if isinstance(value, (list, tuple, dict)):
        return f"{type(value).__name__} of {len(value)}"
    return f"<{type(value).__name__}>"
