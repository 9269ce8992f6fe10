"""LoRA for Stable Diffusion: read kohya and diffusers/PEFT files, patch weights without touching the
shared checkpoint.

A LoRA pair (down A ∈ ℝ^{r×in}, up B ∈ ℝ^{out×r}, optional α) changes a weight to
``W' = W + s·(α/r)·B·A`` (Hu et al. 2021), convolutions reshaped (B·A flattened over the kernel).
Patched weights are kept beside the module and used through ``torch.func.functional_call``, so the
loaded checkpoint (shared by every node that names it) is never modified and only patched tensors
are copied.

Key formats recognised:
- kohya: ``lora_unet_<module>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha`` with ``<module>``
  the diffusers module path (SD 1.x/2.x files) or the original LDM path (SDXL files), dots as
  underscores; text encoders ``lora_te_`` (SD 1.x/2.x), ``lora_te1_`` / ``lora_te2_`` (SDXL).
- diffusers / PEFT: ``unet.<module>.lora_A.weight`` / ``lora_B`` (or ``.lora.down`` / ``.lora.up``),
  ``text_encoder.<module>…``, ``text_encoder_2.<module>…``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from families.base import CheckpointError, read_header

log = logging.getLogger(__name__)


class Patched(nn.Module):
    """``base`` called with some parameters replaced (``torch.func.functional_call``); attributes
    such as ``config`` or ``final_layer_norm`` are the base module's."""

    def __init__(self, base: nn.Module, overrides: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.base = base
        self.overrides = overrides

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return torch.func.functional_call(self.base, self.overrides, args, kwargs, strict=False)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["base"], name)


def _kohya(path: str) -> str:
    return path.replace(".", "_")


def unet_names(unet: nn.Module, ldm_names: Mapping[str, str]) -> dict[str, str]:
    """LoRA module names (every format) → the UNet's parameter path of that module's weight."""
    out: dict[str, str] = {}
    for name, module in unet.named_modules():
        if not isinstance(module, nn.Linear | nn.Conv2d):
            continue
        weight = f"{name}.weight"
        out[f"lora_unet_{_kohya(name)}"] = weight
        out[f"unet.{name}"] = weight
        ldm = ldm_names.get(weight)
        if ldm is not None:
            out["lora_unet_" + _kohya(ldm.removeprefix("model.diffusion_model.").removesuffix(".weight"))] = (
                weight
            )
    return out


def text_names(encoder: nn.Module, kohya_prefix: str, diffusers_prefix: str) -> dict[str, str]:
    """LoRA module names → a text encoder's parameter path (with or without ``text_model.``)."""
    out: dict[str, str] = {}
    for name, module in encoder.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        full = name if name.startswith("text_model.") else f"text_model.{name}"
        for variant in {full, name}:
            out[f"{kohya_prefix}{_kohya(variant)}"] = f"{name}.weight"
            out[f"{diffusers_prefix}.{variant}"] = f"{name}.weight"
    return out


PAIR_SUFFIXES = (
    (".lora_down.weight", ".lora_up.weight"),
    (".lora_A.weight", ".lora_B.weight"),
    (".lora.down.weight", ".lora.up.weight"),
)


def read_pairs(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, float | None]]:
    """module name → (down, up, alpha) of a LoRA safetensors file (pickles refused)."""
    from safetensors.torch import load_file

    read_header(path)  # refuses pickles and non-safetensors files with a clear reason
    state = load_file(str(path))
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor, float | None]] = {}
    for key in state:
        for down_suffix, up_suffix in PAIR_SUFFIXES:
            if key.endswith(down_suffix):
                module = key[: -len(down_suffix)]
                up = state.get(module + up_suffix)
                if up is None:
                    raise CheckpointError(f"{path.name}: {key} has no matching {module + up_suffix}")
                alpha = state.get(module + ".alpha")
                pairs[module] = (state[key].float(), up.float(), None if alpha is None else float(alpha))
    if not pairs:
        raise CheckpointError(
            f"{path.name}: no LoRA weights found (kohya lora_down/lora_up or PEFT lora_A/lora_B)"
        )
    return pairs


def delta(down: torch.Tensor, up: torch.Tensor, alpha: float | None, shape: torch.Size) -> torch.Tensor:
    """(α/r)·B·A shaped like the weight (r = the rank, α = r when absent)."""
    rank = down.shape[0]
    scale = (alpha if alpha is not None else rank) / rank
    return (scale * (up.flatten(1) @ down.flatten(1))).reshape(shape)


def patch(
    module: nn.Module,
    names: Mapping[str, str],
    pairs: Mapping[str, tuple[torch.Tensor, torch.Tensor, float | None]],
    strength: float,
    used: set[str],
) -> nn.Module:
    """``module`` with the LoRA pairs it has applied at ``strength`` (a :class:`Patched` wrapper,
    stacking on an earlier one); records the pair names it used in ``used``."""
    base, overrides = (module.base, dict(module.overrides)) if isinstance(module, Patched) else (module, {})
    params = dict(base.named_parameters())
    for lora_name, (down, up, alpha) in pairs.items():
        target = names.get(lora_name)
        if target is None or target not in params or strength == 0:
            continue
        weight = overrides.get(target, params[target])
        change = delta(down, up, alpha, weight.shape).to(weight.device, weight.dtype)
        overrides[target] = weight + strength * change
        used.add(lora_name)
    return Patched(cast(nn.Module, base), overrides) if overrides else module


def apply_lora(
    model: Any, clip: Any, path: Path, strength_model: float, strength_clip: float
) -> tuple[Any, Any]:
    """(MODEL, CLIP) with the LoRA file at ``path`` applied (either may be None: model-only LoRA).

    Fails when the file patches nothing it was given; logs the pairs it could not place.
    """
    import dataclasses

    from families.sd.ldm import unet_to_ldm
    from families.sd.model import XL_VARIANTS, SDText, SDUNet

    pairs = read_pairs(path)
    used: set[str] = set()
    new_model, new_clip = model, clip
    if model is not None and strength_model != 0:
        network = model.network
        if not isinstance(network, SDUNet):
            raise ValueError(f"model: LoRA applies to Stable Diffusion models; {model.name!r} is not one")
        base = network.unet.base if isinstance(network.unet, Patched) else network.unet
        keys = {k: k for k in base.state_dict()}
        ldm = cast(dict[str, str], unet_to_ldm(cast(Any, keys), cast(Any, base).config))  # LDM key → ours
        names = unet_names(base, {ours: key for key, ours in ldm.items()})
        unet = patch(network.unet, names, pairs, strength_model, used)
        label = f"{model.name} + {path.name}×{strength_model:g}"
        new_network = SDUNet(unet, network.variant, network.downscale, network.latent_scaling)
        new_model = dataclasses.replace(model, network=new_network, name=label, _log_tables={})
    if clip is not None and strength_clip != 0:
        if not isinstance(clip, SDText):
            raise ValueError(
                f"clip: LoRA applies to Stable Diffusion text encoders; {clip.name!r} is not one"
            )
        xl = clip.variant in XL_VARIANTS
        prefixes = (
            [("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2")]
            if xl
            else [("lora_te_", "text_encoder")]
        )
        if clip.variant == "sdxl_refiner":
            prefixes = prefixes[1:]
        encoders = tuple(
            patch(
                enc,
                text_names(enc.base if isinstance(enc, Patched) else enc, k, d),
                pairs,
                strength_clip,
                used,
            )
            for enc, (k, d) in zip(clip.encoders, prefixes, strict=True)
        )
        new_clip = dataclasses.replace(clip, encoders=encoders)
    if not used:
        raise CheckpointError(
            f"{path.name}: none of its {len(pairs)} LoRA pairs matches this model's modules (another "
            "architecture's LoRA?)"
        )
    skipped = [k for k in pairs if k not in used]
    if skipped and (strength_model != 0 and strength_clip != 0):
        log.warning("%s: %d LoRA pairs not applied, e.g. %s", path.name, len(skipped), skipped[:3])
    return new_model, new_clip
