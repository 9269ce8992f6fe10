"""One prompt's runtime events as ComfyUI WebSocket messages, in O(1) per event.

:class:`PromptMessages` turns the executor's typed events into the messages the editor and API
clients read, keeps the ones ComfyUI stores in the history (``status.messages``), and tracks every
touched node's state for ``progress_state``. That message carries all of them, so it is throttled:
at most one per :func:`progress_state_interval` (an interval that grows with the number of nodes, so
its bytes per second stay bounded and a prompt of N nodes costs O(N) bytes, not O(N²)), and always
one before the prompt's outcome. Node states change in place; nothing walks all nodes per event.

Previews are made only when someone will see them (:func:`wants_previews`), and encoded to JPEG on
the calling (worker) thread, off the event loop.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from graph_runtime.context import PreviewImage
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
from server.store import PromptRow, now_ms

log = logging.getLogger(__name__)

STORED_MESSAGES = (
    "execution_start",
    "execution_cached",
    "execution_success",
    "execution_error",
    "execution_interrupted",
)
PREVIEW_METHODS = ("default", "none", "auto", "latent2rgb", "taesd")  # the editor's choices

Post = Callable[..., None]  # post(fn, *args): call fn(*args) on the event loop, in order


def progress_state_interval(nodes: int) -> float:
    """Seconds between two ``progress_state`` messages of one prompt: 50 ms, or 50 µs per node when
    that is longer (a message carries ~200 bytes per node, so at most ~4 MB/s per prompt)."""
    return max(0.05, 50e-6 * nodes)


def wants_previews(extra_data: dict[str, Any], editor_connected: bool) -> tuple[bool, bool]:
    """(make previews, send them also to clients that did not declare ``supports_preview_metadata``).

    ``preview_method: "none"``: never. A method named (``auto``, ``latent2rgb``, ``taesd``): yes, to
    the submitting client whatever it declared. None named (the editor's "default"): only while the
    submitting client is one that declared ``supports_preview_metadata`` (the editor does), so an API
    client that never asked gets no binary frames.
    """
    method = extra_data.get("preview_method", "default")
    if method == "none":
        return False, False
    if method == "default":
        return editor_connected, False
    return True, True


class PromptMessages:
    """The messages of one run: sent through ``post`` to ``hub``, the stored ones kept in ``messages``."""

    _UNSET: Any = object()

    def __init__(self, row: PromptRow, post: Post, hub: Hub, preview_max_side: int, previews_to_all: bool):
        self.row = row
        self.messages: list[list[Any]] = []
        self.error: dict[str, Any] | None = None
        self._post = post
        self._hub = hub
        self._preview_max_side = preview_max_side
        self._previews_to_all = previews_to_all
        self._nodes: dict[str, dict[str, Any]] = {}
        self._running: set[str] = set()
        self._changed = False
        self._sent_at = -math.inf

    def on_event(self, event: Event) -> None:
        try:
            self._translate(event)
        except Exception:  # a broken event must not break the run
            log.exception("could not forward event %s", type(event).__name__)

    def _translate(self, event: Event) -> None:
        data = event.data()
        if isinstance(event, Executing):
            self._finish_running(announce=True)
            if event.node is not None:
                self._set_node(event.node, state="running", value=0, max=1)
                self._running.add(event.node)
            self.emit(event.type, data)
            if event.node is not None:
                self._send_states()
            return
        if isinstance(event, ExecutionCached):
            for node in event.nodes:
                self._set_node(node, state="finished", value=1, max=1)
        if isinstance(event, Progress):
            self._set_node(event.node, state="running", value=event.value, max=event.max)
            self.emit(event.type, data)
            self._send_states()
            if event.preview is not None:
                self._emit_preview(event.node, event.preview)
            return
        if isinstance(event, Executed):
            self._set_node(event.node, state="finished")
            self._running.discard(event.node)
        if isinstance(event, ExecutionError):
            data = {
                **data,
                "exception_message": redact(data.get("exception_message", "")),
                "traceback": [redact(line) for line in data.get("traceback", [])],
                "current_inputs": _short_inputs(data.get("current_inputs", {})),
            }
            if event.node_id:
                self._set_node(event.node_id, state="error")
                self._running.discard(event.node_id)
        if isinstance(event, ExecutionSuccess):
            self._finish_running(announce=True)
        if isinstance(event, (ExecutionSuccess, ExecutionInterrupted)):
            self._send_states(now=True)  # the final states, before the outcome
        if isinstance(event, ExecutionInterrupted):
            for node in self._running:
                self._set_node(node, state="pending")  # stopped, not finished: no executed for it
            self._running.clear()
            self.emit(event.type, data, sid=None)  # ComfyUI broadcasts interruptions
            return
        self.emit(event.type, data)
        if isinstance(event, ExecutionError):
            self._send_states(now=True)
        elif isinstance(event, Executed):
            self._send_states()

    def fail_outside_nodes(self, node_id: str | None, node_type: str | None, message: str, kind: str) -> None:
        """An ``execution_error`` for a failure no node event described."""
        self.emit(
            "execution_error",
            {
                "prompt_id": self.row.id,
                "node_id": node_id,
                "node_type": node_type,
                "executed": [],
                "exception_message": redact(message),
                "exception_type": kind,
                "traceback": [],
                "current_inputs": {},
                "current_outputs": [],
            },
        )

    def emit(self, type: str, data: dict[str, Any], sid: Any = _UNSET) -> None:
        if type in STORED_MESSAGES:
            data = {**data, "timestamp": now_ms()}
            self.messages.append([type, data])
        if type == "execution_error":
            self.error = data  # the whole message: the editor's job schema needs every field
        target = self.row.client_id if sid is self._UNSET else sid
        self._post(self._hub.send, type, data, target)

    def _finish_running(self, announce: bool = False) -> None:
        """Mark the running nodes finished; ``announce`` sends ``executed`` (output None) for each, as
        ComfyUI does for nodes without UI output (the editor's overall progress counts them)."""
        for node in sorted(self._running):
            self._set_node(node, state="finished")
            if announce:
                done = {"node": node, "display_node": node, "output": None, "prompt_id": self.row.id}
                self.emit("executed", done)
        self._running.clear()

    def _set_node(self, node: str, **changes: Any) -> None:
        info = self._nodes.get(node)
        if info is None:
            info = self._nodes[node] = {
                "value": 0,
                "max": 1,
                "state": "pending",
                "node_id": node,
                "prompt_id": self.row.id,
                "display_node_id": node,
                "parent_node_id": None,
                "real_node_id": node,
            }
        info.update(changes)
        self._changed = True

    def _send_states(self, now: bool = False) -> None:
        """``progress_state`` with every touched node, throttled (see ``progress_state_interval``)."""
        if not self._changed:
            return
        clock = time.monotonic()
        if not now and clock - self._sent_at < progress_state_interval(len(self._nodes)):
            return
        self._changed = False
        self._sent_at = clock
        nodes = {node: dict(info) for node, info in self._nodes.items()}
        self.emit("progress_state", {"prompt_id": self.row.id, "nodes": nodes})

    def _emit_preview(self, node: str, preview: PreviewImage) -> None:
        image = encode_jpeg(preview, self._preview_max_side)
        if image is None:
            return
        meta = {
            "node_id": node,
            "display_node_id": node,
            "parent_node_id": None,
            "real_node_id": node,
            "prompt_id": self.row.id,
            "image_type": "image/jpeg",
        }
        self._post(self._hub.send_preview, image, meta, self.row.client_id, self._previews_to_all)


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
