"""Random-weight SD checkpoints of a named architecture, tiny or full size, as a single file or a folder.

So that tests, benchmarks and a user checking a setup run without downloading anything. Tiny networks
are built with the libraries' own initialisation under ``torch.manual_seed(seed)``; full-size ones are
built on the meta device, then given storage and filled from a seeded ``normal_(0, 0.02)`` (norm weights
1, biases 0), which takes seconds where the default initialisation takes minutes. Single files are
written in the LDM layout (:mod:`families.sd.ldm`) and record the variant and every config in their
``__metadata__``, which detection and loading prefer: a tiny network's keys cannot tell its variant.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from families.sd.configs import variant_configs, write_config_folder
from families.sd.detect import META_FOLDER_VARIANT, META_VARIANT
from families.sd.files import ENCODERS, META_CONFIGS, quiet_diffusers
from families.sd.ldm import to_single_file
from families.sd.tokenizer import clip_tokenizer

FORMATS = ("single", "diffusers")


def networks(
    variant: str, configs: Mapping[str, Mapping[str, Any]]
) -> tuple[nn.Module, nn.Module, dict[str, nn.Module]]:
    """(unet, vae, text encoders by component) of ``configs``, built on the current default device
    (under ``torch.device("meta")``: full-size shapes without memory)."""
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet = UNet2DConditionModel.from_config(dict(configs["unet"]))
    vae = AutoencoderKL.from_config(dict(configs["vae"]))
    encoders = {
        component: getattr(transformers, name)(
            transformers.CLIPTextConfig(**_clip_fields(configs[component]))
        )
        for component, name, _ in ENCODERS[variant]
    }
    return unet, vae, encoders


def build_networks(
    variant: str, size: str, seed: int
) -> tuple[dict[str, dict[str, Any]], nn.Module, nn.Module, dict[str, nn.Module]]:
    """(configs, unet, vae, text encoders by component) with random weights, float32 on the CPU."""
    configs = variant_configs(variant, size)
    if size == "tiny":
        torch.manual_seed(seed)
        unet, vae, encoders = networks(variant, configs)
    else:
        with torch.device("meta"):
            unet, vae, encoders = networks(variant, configs)
        generator = torch.Generator().manual_seed(seed)
        for net in (unet, vae, *encoders.values()):
            _fill(net, generator)
    for net in (unet, vae, *encoders.values()):
        net.eval().requires_grad_(False)
    return configs, unet, vae, encoders


def _clip_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    skip = {"architectures", "_name_or_path", "transformers_version", "torch_dtype", "model_type", "dtype"}
    return {k: v for k, v in config.items() if k not in skip}


@torch.no_grad()
def _fill(net: nn.Module, generator: torch.Generator) -> None:
    """Storage for a meta-device network, filled deterministically in name order."""
    net.to_empty(device="cpu")
    for name, p in sorted(net.named_parameters()):
        if name.endswith("bias"):
            p.zero_()
        elif "norm" in name.rsplit(".", 2)[-2] or "ln_" in name:
            p.fill_(1.0)
        else:
            p.normal_(0.0, 0.02, generator=generator)
    for module in net.modules():  # non-persistent buffers (CLIP's position ids) are not in any file
        if hasattr(module, "position_ids") and isinstance(module.position_ids, torch.Tensor):
            n = module.position_ids.shape[-1]
            module.position_ids.copy_(torch.arange(n).expand_as(module.position_ids))


def write_single_file(
    path: Path,
    variant: str,
    configs: Mapping[str, Mapping[str, Any]],
    unet: nn.Module,
    vae: nn.Module,
    encoders: Mapping[str, nn.Module],
    dtype: torch.dtype = torch.float32,
) -> Path:
    """One LDM-layout safetensors file, recording ``variant`` and ``configs`` in its metadata."""
    from safetensors.torch import save_file

    state = to_single_file(variant, configs, unet, vae, encoders)
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={META_VARIANT: variant, META_CONFIGS: json.dumps(configs)})
    return path


def write_diffusers_folder(
    path: Path,
    variant: str,
    configs: Mapping[str, Mapping[str, Any]],
    unet: nn.Module,
    vae: nn.Module,
    encoders: Mapping[str, nn.Module],
    dtype: torch.dtype = torch.float32,
) -> Path:
    """A diffusers pipeline folder (configs, safetensors weights, tokenizers) that diffusers loads too."""
    write_config_folder({k: dict(v) for k, v in configs.items()}, path)
    with quiet_diffusers():
        unet.to(dtype).save_pretrained(path / "unet", safe_serialization=True)  # type: ignore[operator]
        vae.to(dtype).save_pretrained(path / "vae", safe_serialization=True)  # type: ignore[operator]
    for component, encoder in encoders.items():
        encoder.to(dtype).save_pretrained(path / component)  # type: ignore[operator]
    for component, _, pad in ENCODERS[variant]:
        clip_tokenizer(pad).save_pretrained(path / component.replace("text_encoder", "tokenizer"))
    index = {**configs["model_index"], META_FOLDER_VARIANT: variant}  # diffusers ignores "_" keys
    (path / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return path


def make_checkpoint(
    variant: str,
    out: Path,
    size: str = "tiny",
    fmt: str = "single",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a random-weight ``variant`` checkpoint to ``out`` (a .safetensors file or a folder)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    configs, unet, vae, encoders = build_networks(variant, size, seed)
    write = write_single_file if fmt == "single" else write_diffusers_folder
    return write(out, variant, configs, unet, vae, encoders, dtype)
