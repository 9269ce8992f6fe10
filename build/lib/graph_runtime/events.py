"""The typed event stream of a run, in ComfyUI's vocabulary.

Each event is a frozen dataclass whose ``type`` is the ComfyUI WebSocket message type and whose
``data()`` is that message's payload (without ``timestamp``, which consumers add). The CLI draws
progress bars from them; the server forwards them over the WebSocket.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from graph_runtime.context import PreviewImage


@dataclass(frozen=True)
class Event:
    type: ClassVar[str] = ""
    prompt_id: str

    def data(self) -> dict[str, Any]:
        """The ComfyUI message payload."""
        return {"prompt_id": self.prompt_id}


@dataclass(frozen=True)
class ExecutionStart(Event):
    type: ClassVar[str] = "execution_start"


@dataclass(frozen=True)
class ExecutionCached(Event):
    type: ClassVar[str] = "execution_cached"
    nodes: tuple[str, ...] = ()

    def data(self) -> dict[str, Any]:
        return {"nodes": list(self.nodes), "prompt_id": self.prompt_id}


@dataclass(frozen=True)
class Executing(Event):
    """A node starts (``node`` set), or the prompt finished (``node`` None)."""

    type: ClassVar[str] = "executing"
    node: str | None = None

    def data(self) -> dict[str, Any]:
        return {"node": self.node, "display_node": self.node, "prompt_id": self.prompt_id}


@dataclass(frozen=True)
class Progress(Event):
    type: ClassVar[str] = "progress"
    node: str = ""
    value: int = 0
    max: int = 0
    preview: PreviewImage | None = field(default=None, compare=False)

    def data(self) -> dict[str, Any]:
        return {"value": self.value, "max": self.max, "prompt_id": self.prompt_id, "node": self.node}


@dataclass(frozen=True)
class Executed(Event):
    """A node with UI output finished (also sent for a cached node that has UI output)."""

    type: ClassVar[str] = "executed"
    node: str = ""
    output: dict[str, Any] = field(default_factory=dict)

    def data(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "display_node": self.node,
            "output": self.output,
            "prompt_id": self.prompt_id,
        }


@dataclass(frozen=True)
class ExecutionError(Event):
    type: ClassVar[str] = "execution_error"
    node_id: str = ""
    node_type: str = ""
    executed: tuple[str, ...] = ()
    exception_message: str = ""
    exception_type: str = ""
    traceback: tuple[str, ...] = ()
    current_inputs: dict[str, Any] = field(default_factory=dict)

    def data(self) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "node_id": self.node_id,
            "node_type": self.node_type,
            "executed": list(self.executed),
            "exception_message": self.exception_message,
            "exception_type": self.exception_type,
            "traceback": list(self.traceback),
            "current_inputs": self.current_inputs,
            "current_outputs": list(self.executed),
        }


@dataclass(frozen=True)
class ExecutionInterrupted(Event):
    type: ClassVar[str] = "execution_interrupted"
    node_id: str | None = None
    node_type: str | None = None
    executed: tuple[str, ...] = ()

    def data(self) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "node_id": self.node_id,
            "node_type": self.node_type,
            "executed": list(self.executed),
        }


@dataclass(frozen=True)
class ExecutionSuccess(Event):
    type: ClassVar[str] = "execution_success"


EventSink = Callable[[Event], None]
