"""Safetensors I/O for the project's networks: weights plus header metadata, never pickles.

A file's ``__metadata__`` says what it is: ``kind`` (denoiser | noisy_classifier | clip | evaluator),
``architecture`` (a key of :data:`ARCHITECTURES`), ``config`` (the constructor's keyword arguments),
and per kind ``parametrization`` and ``schedule`` (denoisers) or ``labels`` (classifiers), plus
``training`` and ``metrics``. Every value is stored JSON-encoded and decoded on load.

Pickled checkpoints (.ckpt/.pt/.pth/.bin/.pkl, or any file whose bytes are not a safetensors header)
are refused with :class:`UnsafeModelFileError`; ``torch.load`` is never called.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from families.base import read_header
from families.shapes.networks.classifiers import Evaluator, NoisyClassifier
from families.shapes.networks.clip import ShapesCLIP
from families.shapes.networks.unet import ShapesUNet

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "shapes_unet": ShapesUNet,
    "noisy_classifier": NoisyClassifier,
    "shapes_clip": ShapesCLIP,
    "evaluator": Evaluator,
}
KINDS = ("denoiser", "noisy_classifier", "clip", "evaluator")


class ModelMetadataError(ValueError):
    """A safetensors file whose metadata does not say what network it holds."""


@dataclass
class LoadedNetwork:
    """A network in eval mode (float32) and its decoded header metadata."""

    module: nn.Module
    metadata: dict[str, Any]
    path: Path | None = None
    kind: str = field(init=False)

    def __post_init__(self) -> None:
        self.kind = str(self.metadata.get("kind", ""))


def architecture_name(module: nn.Module) -> str:
    for name, cls in ARCHITECTURES.items():
        if type(module) is cls:
            return name
    raise ModelMetadataError(
        f"{type(module).__name__} is not a registered architecture {sorted(ARCHITECTURES)}"
    )


def check_safetensors_file(path: Path) -> None:
    """Refuse anything that is not a safetensors file, by name and by content, with a clear reason."""
    read_header(path)


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded header metadata of a safetensors file (refuses non-safetensors files)."""
    path = Path(path)
    check_safetensors_file(path)
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    return {k: _decode(v) for k, v in raw.items()}


def build_network(metadata: Mapping[str, Any]) -> nn.Module:
    """Instantiate ``ARCHITECTURES[metadata['architecture']](**metadata['config'])``."""
    name = metadata.get("architecture")
    if name not in ARCHITECTURES:
        raise ModelMetadataError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    config = metadata.get("config")
    if not isinstance(config, dict):
        raise ModelMetadataError(
            f"metadata 'config' must be a JSON object of constructor arguments, got {config!r}"
        )
    return ARCHITECTURES[name](**config)


def validate_metadata(metadata: Mapping[str, Any], where: str = "model") -> None:
    """Check the keys every shipped network carries; collect every problem before raising."""
    problems = [f"missing '{k}'" for k in ("kind", "architecture", "config") if k not in metadata]
    kind = metadata.get("kind")
    if kind is not None and kind not in KINDS:
        problems.append(f"kind {kind!r} is not one of {KINDS}")
    if kind == "denoiser":
        if metadata.get("parametrization") not in ("eps", "v", "x0"):
            problems.append(f"parametrization {metadata.get('parametrization')!r} is not eps, v or x0")
        schedule = metadata.get("schedule")
        if not isinstance(schedule, dict) or not {"type", "beta_schedule", "timesteps"} <= set(schedule):
            problems.append(f"schedule {schedule!r} lacks type, beta_schedule and timesteps")
    if kind in ("noisy_classifier", "evaluator") and not isinstance(metadata.get("labels"), list):
        problems.append("classifiers need 'labels' (a list of class names)")
    if problems:
        raise ModelMetadataError(f"{where}: " + "; ".join(problems))


def load_network(path: str | Path, device: torch.device | str | None = None) -> LoadedNetwork:
    """Load a safetensors network: architecture from the metadata, float32 weights, eval mode."""
    path = Path(path)
    metadata = read_metadata(path)
    validate_metadata(metadata, path.name)
    module = build_network(metadata)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelMetadataError(
            f"{path.name}: weights do not fit {metadata['architecture']}: {exc}"
        ) from exc
    module = module.float().eval().requires_grad_(False)
    if device is not None:
        module = module.to(device)
    return LoadedNetwork(module=module, metadata=metadata, path=path)


def save_network(module: nn.Module, path: str | Path, metadata: Mapping[str, Any], half: bool = True) -> Path:
    """Write weights (float16 when ``half``) and JSON-encoded metadata; ``architecture`` is filled in."""
    path = Path(path)
    meta = dict(metadata)
    meta.setdefault("architecture", architecture_name(module))
    validate_metadata(meta, path.name)
    dtype = torch.float16 if half else torch.float32
    state = {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in module.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={k: json.dumps(v) for k, v in meta.items()})
    tmp.replace(path)
    return path
