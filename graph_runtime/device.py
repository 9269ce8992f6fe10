"""Device and dtype choice: CUDA when present, else Apple's MPS, else the CPU; a name overrides."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def choose_device(name: str | torch.device | None = None) -> torch.device:
    """The device to run on. ``None`` or ``"auto"`` picks CUDA, else MPS, else CPU.

    A named device that this machine lacks is an error (never a silent fallback), so
    ``--device cuda`` on a laptop says so instead of running for hours on the CPU.
    """
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    if name is None or name.strip().lower() in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name.strip().lower())
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s)"
            )
    elif device.type == "mps" and not _mps_available():
        raise ValueError(f"device {name!r} asked for, but MPS is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def choose_dtype(device: torch.device) -> torch.dtype:
    """The working dtype for ``device``: float32 everywhere for now.

    Guidance takes gradients through models (classifier and CLIP guidance), where half precision
    loses too much; the shipped models are small, so float32 costs little. One place to change.
    """
    import torch

    return torch.float32
