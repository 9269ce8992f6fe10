"""The one worker thread: takes prompts from the store, runs them, streams their events to the loop.

The executor (and its warm node cache) lives for the whole server, so a prompt that repeats earlier
work runs only what changed. Events cross to the event loop with ``call_soon_threadsafe``; previews are
encoded to JPEG here, off the loop. ``interrupt`` sets the running prompt's CancelToken, which the
runtime checks between nodes and at every sampler step.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graph_runtime.context import CancelToken, PreviewImage
from graph_runtime.events import (
    Event,
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    Progress,
)
from server.hub import Hub
from server.redact import redact
from server.store import ERROR, INTERRUPTED, SUCCESS, PromptRow, PromptStore, now_ms

log = logging.getLogger(__name__)

STORED_MESSAGES = (
    "execution_start",
    "execution_cached",
    "execution_success",
    "execution_error",
    "execution_interrupted",
)


@dataclass
class Running:
    """What the worker is doing now (read by the loop for /queue, /interrupt and reconnects)."""

    prompt_id: str
    client_id: str | None
    cancel: CancelToken
    node: str | None = None


@dataclass
class _RunState:
    """Per-prompt bookkeeping: stored messages, and node states for ``progress_state``."""

    row: PromptRow
    messages: list[list[Any]] = field(default_factory=list)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: dict[str, Any] | None = None


class PromptWorker:
    """Runs queued prompts one at a time on its own thread."""

    def __init__(
        self,
        store: PromptStore,
        executor: Any,
        hub: Hub,
        loop: asyncio.AbstractEventLoop,
        *,
        preview_max_side: int = 512,
    ) -> None:
        self._store = store
        self._executor = executor
        self._hub = hub
        self._loop = loop
        self._preview_max_side = preview_max_side
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._free_requested = threading.Event()
        self._lock = threading.Lock()
        self._running: Running | None = None
        self._thread = threading.Thread(target=self._main, name="guidegraph-worker", daemon=True)
        self.prompts_run = 0

    # -- control (any thread) --------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self.interrupt()
        self._wake.set()
        self._thread.join(timeout)

    def wake(self) -> None:
        """Something was queued."""
        self._wake.set()

    @property
    def running(self) -> Running | None:
        with self._lock:
            return self._running

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Cancel the running prompt (only if it is ``prompt_id``, when given)."""
        with self._lock:
            running = self._running
        if running is None or (prompt_id is not None and running.prompt_id != prompt_id):
            return False
        running.cancel.cancel()
        return True

    def request_free(self) -> None:
        """Drop the node cache between prompts (now, if idle)."""
        self._free_requested.set()
        self._wake.set()

    # -- the thread ------------------------------------------------------------------------------

    def _main(self) -> None:
        while not self._stopping.is_set():
            if self._free_requested.is_set():
                self._free_requested.clear()
                self._safely(self._executor.free)
            try:
                row = self._store.claim_next()
            except Exception:
                log.exception("could not read the queue")
                row = None
            if row is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self._run(row)
            self.prompts_run += 1

    def _run(self, row: PromptRow) -> None:
        token = CancelToken()
        with self._lock:
            self._running = Running(row.id, row.client_id, token)
        state = _RunState(row)
        self._broadcast_status()
        extra_pnginfo = row.extra_data.get("extra_pnginfo")
        status, outputs = ERROR, {}
        try:
            result = self._executor.run(
                row.prompt,
                prompt_id=row.id,
                outputs=row.outputs_to_execute or None,
                on_event=lambda event: self._on_event(state, event),
                cancel=token,
                extra_pnginfo=extra_pnginfo if isinstance(extra_pnginfo, dict) else None,
                previews=True,
            )
            status = {"success": SUCCESS, "interrupted": INTERRUPTED}.get(result.status, ERROR)
            outputs = dict(result.ui or {})
            if status == ERROR and state.error is None:
                self._report_failures(state, result)
        except Exception as exc:  # the executor itself failed: fail this prompt, keep serving
            log.exception("prompt %s failed outside any node", row.id)
            self._emit(
                state,
                "execution_error",
                {
                    "prompt_id": row.id,
                    "node_id": None,
                    "node_type": None,
                    "executed": [],
                    "exception_message": redact(str(exc)),
                    "exception_type": type(exc).__name__,
                    "traceback": [],
                    "current_inputs": {},
                    "current_outputs": [],
                },
            )
        if token.cancelled and status != SUCCESS:
            status = INTERRUPTED
        try:
            self._store.finish(row.id, status, outputs, state.messages, state.error)
        except Exception:
            log.exception("could not record the outcome of prompt %s", row.id)
        with self._lock:
            self._running = None
        self._broadcast_status()

    def _report_failures(self, state: _RunState, result: Any) -> None:
        """An error result without an execution_error event: describe its first failure."""
        failures = getattr(result, "failures", None) or {}
        node_id, failure = next(iter(failures.items()), (None, None))
        self._emit(
            state,
            "execution_error",
            {
                "prompt_id": state.row.id,
                "node_id": node_id,
                "node_type": getattr(failure, "class_type", None) or getattr(failure, "node_type", None),
                "executed": list(getattr(result, "executed", ()) or ()),
                "exception_message": redact(str(getattr(failure, "message", "") or failure or "failed")),
                "exception_type": str(getattr(failure, "exception_type", "") or "Error"),
                "traceback": [],
                "current_inputs": {},
                "current_outputs": [],
            },
        )

    # -- events (worker thread) ------------------------------------------------------------------

    def _on_event(self, state: _RunState, event: Event) -> None:
        try:
            self._translate(state, event)
        except Exception:  # a broken event must not break the run
            log.exception("could not forward event %s", type(event).__name__)

    def _translate(self, state: _RunState, event: Event) -> None:
        data = event.data()
        if isinstance(event, Executing):
            running = self._running
            if running is not None:
                running.node = event.node
            for info in state.nodes.values():
                if info["state"] == "running":
                    info["state"] = "finished"
            if event.node is not None:
                self._node(state, event.node).update(state="running", value=0, max=1)
            self._emit(state, event.type, data)
            if event.node is not None:
                self._emit_progress_state(state)
            return
        if isinstance(event, ExecutionCached):
            for node in event.nodes:
                self._node(state, node).update(state="finished", value=1, max=1)
        if isinstance(event, Progress):
            self._node(state, event.node).update(state="running", value=event.value, max=event.max)
            self._emit(state, event.type, data)
            self._emit_progress_state(state)
            if event.preview is not None:
                self._emit_preview(state, event.node, event.preview)
            return
        if isinstance(event, Executed):
            self._node(state, event.node)["state"] = "finished"
        if isinstance(event, ExecutionError):
            data = {
                **data,
                "exception_message": redact(data.get("exception_message", "")),
                "traceback": [redact(line) for line in data.get("traceback", [])],
                "current_inputs": _short_inputs(data.get("current_inputs", {})),
            }
            if event.node_id:
                self._node(state, event.node_id)["state"] = "error"
            state.error = {
                k: data[k] for k in ("node_id", "node_type", "exception_message", "exception_type")
            }
        if isinstance(event, ExecutionInterrupted):
            self._emit(state, event.type, data, sid=None)  # ComfyUI broadcasts interruptions
            return
        self._emit(state, event.type, data)
        if isinstance(event, (Executed, ExecutionError)):
            self._emit_progress_state(state)

    def _node(self, state: _RunState, node: str) -> dict[str, Any]:
        return state.nodes.setdefault(
            node,
            {
                "value": 0,
                "max": 1,
                "state": "pending",
                "node_id": node,
                "prompt_id": state.row.id,
                "display_node_id": node,
                "parent_node_id": None,
                "real_node_id": node,
            },
        )

    def _emit_progress_state(self, state: _RunState) -> None:
        nodes = {node: dict(info) for node, info in state.nodes.items()}
        self._emit(state, "progress_state", {"prompt_id": state.row.id, "nodes": nodes})

    _UNSET: Any = object()

    def _emit(self, state: _RunState, type: str, data: dict[str, Any], sid: Any = _UNSET) -> None:
        if type in (
            "execution_start",
            "execution_cached",
            "execution_success",
            "execution_error",
            "execution_interrupted",
        ):
            data = {**data, "timestamp": now_ms()}
        if type in STORED_MESSAGES:
            state.messages.append([type, data])
        target = state.row.client_id if sid is self._UNSET else sid
        self._loop.call_soon_threadsafe(self._hub.send, type, data, target)

    def _emit_preview(self, state: _RunState, node: str, preview: PreviewImage) -> None:
        image = encode_jpeg(preview, self._preview_max_side)
        if image is None:
            return
        meta = {
            "node_id": node,
            "display_node_id": node,
            "parent_node_id": None,
            "real_node_id": node,
            "prompt_id": state.row.id,
            "image_type": "image/jpeg",
        }
        self._loop.call_soon_threadsafe(self._hub.send_preview, image, meta, state.row.client_id)

    def _broadcast_status(self) -> None:
        try:
            remaining = self._store.queue_remaining()
        except Exception:
            return
        # Through the loop, after the events already handed over: status 0 follows execution_success.
        self._loop.call_soon_threadsafe(self._hub.send_status, remaining)

    @staticmethod
    def _safely(fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception:
            log.exception("%s failed", getattr(fn, "__name__", fn))


def encode_jpeg(preview: PreviewImage, max_side: int) -> bytes | None:
    """(H, W, 3) uint8 pixels → JPEG bytes, longest side at most ``max_side``."""
    from PIL import Image

    try:
        pixels = preview.pixels.detach().to("cpu").contiguous().numpy()  # (H, W, 3) uint8
        image = Image.fromarray(pixels, "RGB")
        image.thumbnail((max_side, max_side))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        return buffer.getvalue()
    except Exception:
        log.warning("could not encode a preview", exc_info=True)
        return None


def _short_inputs(inputs: Any) -> dict[str, Any]:
    """ComfyUI sends each input as a list of short formatted strings."""
    if not isinstance(inputs, dict):
        return {}
    out = {}
    for name, value in inputs.items():
        items = value if isinstance(value, list) else [value]
        texts = [redact(item if isinstance(item, str) else repr(item)) for item in items[:8]]
        out[str(name)] = [text[:200] + ("…" if len(text) > 200 else "") for text in texts]
    return out
