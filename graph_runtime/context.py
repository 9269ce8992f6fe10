"""What a running node may touch besides its inputs: device, progress, cancellation, file locations."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is loaded when something runs, not when a workflow is read or validated
    import torch


class Interrupted(Exception):
    """Raised inside a node when its run was cancelled; the runtime reports execution_interrupted."""


class CancelToken:
    """A thread-safe flag that the runtime checks between nodes and long nodes check per step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def reset(self) -> None:
        self._event.clear()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Interrupted("cancelled")


@dataclass(frozen=True)
class PreviewImage:
    """A small preview for the editor: uint8 pixels, shape (H, W, 3)."""

    pixels: torch.Tensor


@dataclass(frozen=True)
class Paths:
    """Where nodes write and read files."""

    output: Path = Path("output")
    temp: Path = Path("temp")
    input: Path = Path("input")


ProgressHook = Callable[[str, int, int, PreviewImage | None], None]


def _no_progress(node_id: str, value: int, total: int, preview: PreviewImage | None) -> None:
    return None


@dataclass
class Context:
    """Handed to ``run`` as ``ctx``. Nothing in it enters the cache key."""

    node_id: str = ""
    class_type: str = ""
    device: torch.device = field(default_factory=lambda: _torch().device("cpu"))
    dtype: torch.dtype = field(default_factory=lambda: _torch().float32)
    paths: Paths = field(default_factory=Paths)
    prompt: dict[str, Any] = field(default_factory=dict)
    extra_pnginfo: dict[str, Any] = field(default_factory=dict)
    cancel: CancelToken = field(default_factory=CancelToken)
    on_progress: ProgressHook = _no_progress
    wants_preview: bool = False  # whether a consumer shows previews; skip making them otherwise

    def progress(self, value: int, total: int, preview: PreviewImage | None = None) -> None:
        """Report progress (and an optional preview), then stop here if the run was cancelled."""
        self.on_progress(self.node_id, value, total, preview)
        self.cancel.raise_if_cancelled()

    def check_cancelled(self) -> None:
        self.cancel.raise_if_cancelled()


def _torch() -> Any:
    import torch

    return torch
