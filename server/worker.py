"""The one worker thread: takes prompts from the store, runs them, streams their events to the loop.

The executor (and its warm node cache) lives for the whole server, so a prompt that repeats earlier
work runs only what changed. ``interrupt`` sets the running prompt's CancelToken, which the runtime
checks between nodes and at every sampler step.

The event path costs O(1) per event, so a prompt of N nodes costs O(N) in time and WebSocket bytes:
messages cross to the event loop in batches (one ``call_soon_threadsafe`` per batch, not per message);
node states are updated in place; ``progress_state`` (the state of every node the prompt has touched)
is sent at most once per ``progress_state_interval`` -- an interval that grows with the number of
nodes, so its bytes per second stay bounded -- and always once before the prompt's outcome.

Previews are made only when someone will see them: never with ``extra_data.preview_method: "none"``;
with a method named (``auto``, ``latent2rgb``, ``taesd``) for the submitting client; with none named
(the editor's "default") only while the submitting client is one that declared
``supports_preview_metadata`` (the editor). They are encoded to JPEG here, off the loop.
"""

from __future__ import annotations

import asyncio
import collections
import io
import logging
import math
import threading
import time
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
    ExecutionSuccess,
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
PREVIEW_METHODS = ("default", "none", "auto", "latent2rgb", "taesd")  # the editor's choices
DELIVER_BATCH = 256  # messages handed to the hub per event-loop callback, so the loop stays responsive


def progress_state_interval(nodes: int) -> float:
    """Seconds between two ``progress_state`` messages of one prompt: 50 ms, or 50 µs per node when
    that is longer (a message carries ~200 bytes per node, so at most ~4 MB/s per prompt)."""
    return max(0.05, 50e-6 * nodes)


def wants_previews(extra_data: dict[str, Any], editor_connected: bool) -> tuple[bool, bool]:
    """(make previews, send them to a client that did not declare ``supports_preview_metadata``)."""
    method = extra_data.get("preview_method", "default")
    if method == "none":
        return False, False
    if method == "default":
        return editor_connected, False
    return True, True


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
    running: set[str] = field(default_factory=set)
    error: dict[str, Any] | None = None
    states_changed: bool = False
    states_sent_at: float = -math.inf
    previews_to_all: bool = False  # also to clients that did not declare supports_preview_metadata


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
        self._outbox: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = collections.deque()
        self._outbox_lock = threading.Lock()
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
        previews, state.previews_to_all = wants_previews(
            row.extra_data, self._hub.shows_previews(row.client_id)
        )
        status, outputs = ERROR, {}
        try:
            result = self._executor.run(
                row.prompt,
                prompt_id=row.id,
                outputs=row.outputs_to_execute or None,
                on_event=lambda event: self._on_event(state, event),
                cancel=token,
                extra_pnginfo=extra_pnginfo if isinstance(extra_pnginfo, dict) else None,
                previews=previews,
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
            self._finish_running(state)
            if event.node is not None:
                self._set_node(state, event.node, state="running", value=0, max=1)
                state.running.add(event.node)
            self._emit(state, event.type, data)
            if event.node is not None:
                self._send_states(state)
            return
        if isinstance(event, ExecutionCached):
            for node in event.nodes:
                self._set_node(state, node, state="finished", value=1, max=1)
        if isinstance(event, Progress):
            self._set_node(state, event.node, state="running", value=event.value, max=event.max)
            self._emit(state, event.type, data)
            self._send_states(state)
            if event.preview is not None:
                self._emit_preview(state, event.node, event.preview)
            return
        if isinstance(event, Executed):
            self._set_node(state, event.node, state="finished")
            state.running.discard(event.node)
        if isinstance(event, ExecutionError):
            data = {
                **data,
                "exception_message": redact(data.get("exception_message", "")),
                "traceback": [redact(line) for line in data.get("traceback", [])],
                "current_inputs": _short_inputs(data.get("current_inputs", {})),
            }
            if event.node_id:
                self._set_node(state, event.node_id, state="error")
                state.running.discard(event.node_id)
            state.error = {
                k: data[k] for k in ("node_id", "node_type", "exception_message", "exception_type")
            }
        if isinstance(event, ExecutionSuccess):
            self._finish_running(state)
        if isinstance(event, (ExecutionSuccess, ExecutionInterrupted)):
            self._send_states(state, now=True)  # the final states, before the outcome
        if isinstance(event, ExecutionInterrupted):
            self._emit(state, event.type, data, sid=None)  # ComfyUI broadcasts interruptions
            return
        self._emit(state, event.type, data)
        if isinstance(event, ExecutionError):
            self._send_states(state, now=True)
        elif isinstance(event, Executed):
            self._send_states(state)

    def _finish_running(self, state: _RunState) -> None:
        for node in state.running:
            self._set_node(state, node, state="finished")
        state.running.clear()

    def _set_node(self, run: _RunState, node: str, **changes: Any) -> None:
        info = run.nodes.get(node)
        if info is None:
            info = run.nodes[node] = {
                "value": 0,
                "max": 1,
                "state": "pending",
                "node_id": node,
                "prompt_id": run.row.id,
                "display_node_id": node,
                "parent_node_id": None,
                "real_node_id": node,
            }
        info.update(changes)
        run.states_changed = True

    def _send_states(self, state: _RunState, now: bool = False) -> None:
        """``progress_state`` with every touched node, throttled (see ``progress_state_interval``)."""
        if not state.states_changed:
            return
        clock = time.monotonic()
        if not now and clock - state.states_sent_at < progress_state_interval(len(state.nodes)):
            return
        state.states_changed = False
        state.states_sent_at = clock
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
        self._post(self._hub.send, type, data, target)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        """Hand a call to the event loop, in order; one wake-up per batch, not per message."""
        with self._outbox_lock:
            self._outbox.append((fn, args))
            first = len(self._outbox) == 1
        if first:
            self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        """(event loop) Run up to DELIVER_BATCH handed-over calls; come back for the rest."""
        with self._outbox_lock:
            batch = [self._outbox.popleft() for _ in range(min(DELIVER_BATCH, len(self._outbox)))]
        for fn, args in batch:
            try:
                fn(*args)
            except Exception:
                log.exception("could not deliver %s", getattr(fn, "__name__", fn))
        with self._outbox_lock:
            more = bool(self._outbox)
        if more:
            self._loop.call_soon(self._deliver)

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
        self._post(self._hub.send_preview, image, meta, state.row.client_id, state.previews_to_all)

    def _broadcast_status(self) -> None:
        try:
            remaining = self._store.queue_remaining()
        except Exception:
            return
        # Through the loop, after the events already handed over: status 0 follows execution_success.
        self._post(self._hub.send_status, remaining)

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
