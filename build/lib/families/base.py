"""What every family shares: the checkpoint source as read from disk, load options, the loaded bundle.

A :class:`Source` is read from a file's safetensors header (tensor names, dtypes and shapes, and the
``__metadata__`` strings) or from a diffusers folder's ``model_index.json``, without loading a single
weight, so detection is cheap even for a 7 GB file. Pickled files are refused here, before any family
sees them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from nodes.diffusion.conventions import Denoiser
    from nodes.diffusion.types import VAE, TextEncoder

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A model file or folder that cannot be loaded: says what was found and what is supported."""


class UnsafeModelFileError(CheckpointError):
    """A model file that is not safetensors (a pickle, or bytes without a valid safetensors header)."""


def pickle_refusal(path: Path) -> str:
    return (
        f"{path.name}: '{path.suffix}' files are pickled checkpoints, which can run arbitrary code when "
        "loaded; guidegraph loads only .safetensors files. Convert it once with "
        f"`guidegraph convert-checkpoint {path.name}` (it reads with torch.load(weights_only=True), "
        "which refuses code, and writes .safetensors)"
    )


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file; refuses pickles and anything else by name and by content."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeModelFileError(pickle_refusal(path))
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        (n,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
        body = f.read(n) if 0 < n <= min(_MAX_HEADER, size - 8) else b""
    try:
        header = json.loads(body.decode("utf-8")) if body[:1] == b"{" else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if isinstance(header, dict):
        _check_extent(path, header, size - 8 - n)
        return header
    if (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or head[
        :4
    ] == b"PK\x03\x04":
        raise UnsafeModelFileError(
            f"{path.name}: this is a pickle (or a zipped torch.save archive), not safetensors; "
            "pickles can run arbitrary code when loaded and are refused"
        )
    raise UnsafeModelFileError(
        f"{path.name}: not a safetensors file (its first bytes are not a length-prefixed JSON header)"
    )


def _check_extent(path: Path, header: Mapping[str, Any], data_bytes: int) -> None:
    """A truncated file: its header promises more bytes than the file holds."""
    end = max(
        (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)),
        default=0,
    )
    if end > data_bytes:
        raise CheckpointError(
            f"{path.name}: truncated or corrupt: its header describes {end:,} bytes of tensors but the "
            f"file holds {data_bytes:,} (an interrupted download or copy?)"
        )


def decode_metadata(raw: Mapping[str, str]) -> dict[str, Any]:
    """``__metadata__`` strings, JSON-decoded where they are JSON."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            out[k] = v
    return out


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Source:
    """A checkpoint as found on disk: a safetensors file (header only) or a diffusers folder."""

    path: Path
    tensors: Mapping[str, TensorInfo] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    model_index: Mapping[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @staticmethod
    def open(path: str | Path) -> Source:
        path = Path(path)
        if path.is_dir():
            index = path / "model_index.json"
            if not index.is_file():
                raise CheckpointError(
                    f"{path.name}: a folder without model_index.json; expected a diffusers pipeline folder "
                    "(model_index.json with unet/, vae/, text_encoder/ subfolders) or a .safetensors file"
                )
            try:
                model_index = json.loads(index.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise CheckpointError(f"{path.name}/model_index.json is not valid JSON: {exc}") from exc
            return Source(path, model_index=model_index)
        header = read_header(path)
        tensors = {
            k: TensorInfo(str(v.get("dtype")), tuple(int(d) for d in v.get("shape", ())))
            for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict)
        }
        raw = header.get("__metadata__") or {}
        return Source(path, tensors, decode_metadata(raw if isinstance(raw, dict) else {}))

    def shape(self, key: str) -> tuple[int, ...] | None:
        info = self.tensors.get(key)
        return info.shape if info is not None else None

    def summary(self) -> str:
        """What was found, for error messages: the leading key prefixes and the tensor count."""
        if self.model_index is not None:
            return f"a diffusers folder of class {self.model_index.get('_class_name')!r}"
        prefixes = sorted({".".join(k.split(".")[:2]) for k in self.tensors})
        shown = ", ".join(prefixes[:8]) + (", …" if len(prefixes) > 8 else "")
        kind = self.metadata.get("kind") or self.metadata.get("modelspec.architecture")
        return f"{len(self.tensors)} tensors under {shown or 'no keys'}" + (
            f", metadata kind {kind!r}" if kind else ""
        )


@dataclass(frozen=True)
class LoadOptions:
    """How to load: device, weight dtype (None: float16 on CUDA, float32 elsewhere), prediction override."""

    device: torch.device | None = None
    dtype: torch.dtype | None = None
    prediction: str = "auto"  # auto | eps | v


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A loaded checkpoint as the graph sees it: MODEL, CLIP (text encoder) and VAE."""

    model: Denoiser
    clip: TextEncoder
    vae: VAE
    family: str
    variant: str


class Family(Protocol):
    """One family of networks (see the package docstring)."""

    name: str
    variants: tuple[str, ...]

    def detect(self, source: Source) -> str | None:
        """The variant ``source`` holds, or None when it is not this family's."""
        ...

    def load(self, source: Source, variant: str, options: LoadOptions) -> Checkpoint:
        """Build the networks of ``variant`` and load ``source``'s weights into them."""
        ...


def hub_offline() -> None:
    """Switch huggingface_hub, transformers and diffusers to offline mode: nothing may reach a hub.

    Set before those libraries are imported (they read the variables at import time); loaders also
    pass ``local_files_only=True`` everywhere.
    """
    import os

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "DIFFUSERS_OFFLINE"):
        os.environ[var] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
