"""The single-file (original LDM / CompVis) key layout, written from diffusers/transformers state dicts.

Reading this layout goes through diffusers' own single-file loaders (``families.sd.files``); diffusers
ships no writer, so this module holds one. The layout, by component and prefix:

- UNet ``model.diffusion_model.``: ``input_blocks`` / ``middle_block`` / ``output_blocks`` in the order
  the original code builds them, ``L + 1`` input blocks per level (L = layers_per_block) and ``L + 1``
  output blocks per level, each block a list ``[resnet, attention?, up/downsampler?]``;
- VAE ``first_stage_model.``: ``encoder.down.i`` / ``decoder.up.j`` with the decoder's levels numbered
  from the bottom (diffusers numbers them from the top), attention as 1×1 convolutions;
- CLIP ViT-L (SD1 ``cond_stage_model.transformer.``, SDXL ``conditioner.embedders.0.transformer.``): the
  Hugging Face layout under ``text_model.``;
- OpenCLIP (SD2 ``cond_stage_model.model.``, SDXL ``conditioner.embedders.1.model.``, the refiner
  ``conditioner.embedders.0.model.``): ``transformer.resblocks.k`` with q/k/v concatenated into
  ``attn.in_proj_*`` and ``text_projection`` stored as a [hidden, projection] matrix.

Each function maps one network's ``state_dict()`` and returns new keys over the same tensors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_L_PREFIX = {
    "sd1": "cond_stage_model.transformer.",
    "sd1_ip2p": "cond_stage_model.transformer.",
    "sdxl": "conditioner.embedders.0.transformer.",
}
OPEN_CLIP_PREFIX = {
    "sd2": "cond_stage_model.model.",
    "sd2_v": "cond_stage_model.model.",
    "sdxl": "conditioner.embedders.1.model.",
    "sdxl_refiner": "conditioner.embedders.0.model.",
}

_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "class_embedding.linear_1": "label_emb.0.0",
    "class_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet(rest: str, names: Mapping[str, str]) -> str:
    head, _, tail = rest.partition(".")
    return f"{names.get(head, head)}.{tail}"


def unet_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A diffusers ``UNet2DConditionModel`` state dict in the LDM layout (with ``model.diffusion_model.``)."""
    per = int(config["layers_per_block"]) + 1
    up_attention = ["CrossAttn" in t for t in config["up_block_types"]]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        out[UNET_PREFIX + _unet_key(key, per, up_attention)] = value
    return out


def _unet_key(key: str, per: int, up_attention: list[bool]) -> str:
    for old, new in _UNET_TOP.items():
        if key.startswith(old + "."):
            return new + key[len(old) :]
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        block = 1 + i * per + j
        return f"input_blocks.{block}." + (
            f"0.{_resnet(rest, _UNET_RESNET)}" if kind == "resnets" else f"1.{rest}"
        )
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2], _UNET_RESNET)}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        block = i * per + j
        return f"output_blocks.{block}." + (
            f"0.{_resnet(rest, _UNET_RESNET)}" if kind == "resnets" else f"1.{rest}"
        )
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        i = int(m[1])
        return f"output_blocks.{i * per + per - 1}.{2 if up_attention[i] else 1}.conv.{m[2]}"
    raise ValueError(f"UNet key {key!r} has no place in the LDM layout")


def vae_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderKL`` state dict in the LDM layout (with ``first_stage_model.``)."""
    levels = len(config["block_out_channels"])
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new, is_attention_linear = _vae_key(key, levels)
        if is_attention_linear and value.ndim == 2:
            value = value[:, :, None, None]  # (C, C) -> (C, C, 1, 1): the original uses 1×1 convolutions
        out[VAE_PREFIX + new] = value
    return out


def _vae_key(key: str, levels: int) -> tuple[str, bool]:
    part, _, rest = key.partition(".")
    if part in ("quant_conv", "post_quant_conv"):
        return key, False
    if rest.startswith("conv_norm_out."):
        rest = "norm_out." + rest.removeprefix("conv_norm_out.")
    if m := re.match(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", rest):
        level = int(m[2]) if m[1] == "down" else levels - 1 - int(m[2])
        inner = m[4].replace("conv_shortcut.", "nin_shortcut.")
        return f"{part}.{m[1]}.{level}.block.{m[3]}.{inner}", False
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.(.*)", rest):
        return f"{part}.down.{m[1]}.downsample.{m[2]}", False
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.*)", rest):
        return f"{part}.up.{levels - 1 - int(m[1])}.upsample.{m[2]}", False
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", rest):
        return f"{part}.mid.block_{int(m[1]) + 1}.{m[2].replace('conv_shortcut.', 'nin_shortcut.')}", False
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", rest):
        inner = m[1]
        for old, new in _VAE_ATTENTION.items():
            if inner.startswith(old + "."):
                return f"{part}.mid.attn_1.{new}{inner[len(old) :]}", old != "group_norm"
        raise ValueError(f"VAE key {key!r} has no place in the LDM layout")
    if rest.split(".")[0] in ("conv_in", "conv_out", "norm_out"):
        return f"{part}.{rest}", False
    raise ValueError(f"VAE key {key!r} has no place in the LDM layout")


def clip_l_to_ldm(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A transformers ``CLIPTextModel`` (ViT-L) state dict under ``prefix``, in the ``text_model.`` layout
    the originals use (transformers 5 drops that level; diffusers' detector needs it)."""
    return {
        prefix + (key if key.startswith("text_model.") else "text_model." + key): value
        for key, value in state.items()
    }


_OPEN_CLIP_TOP = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}
_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def open_clip_to_ldm(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A transformers ``CLIPTextModel[WithProjection]`` state dict as OpenCLIP's text tower at ``prefix``."""
    state = {key.removeprefix("text_model."): value for key, value in state.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key in _OPEN_CLIP_TOP:
            out[prefix + _OPEN_CLIP_TOP[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()  # (proj, hidden) -> (hidden, proj)
        elif m := re.match(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key):
            qkv.setdefault((int(m[1]), m[3]), {})[m[2]] = value
        elif m := re.match(r"encoder\.layers\.(\d+)\.(.*?)\.(weight|bias)$", key):
            out[prefix + f"transformer.resblocks.{m[1]}.{_OPEN_CLIP_LAYER[m[2]]}.{m[3]}"] = value
        elif key != "embeddings.position_ids":
            raise ValueError(f"text encoder key {key!r} has no place in the OpenCLIP layout")
    for (layer, kind), parts in qkv.items():
        out[prefix + f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]]
        )
    return out


def to_single_file(
    variant: str,
    configs: Mapping[str, Mapping[str, Any]],
    unet: torch.nn.Module,
    vae: torch.nn.Module,
    text_encoders: Mapping[str, torch.nn.Module],
) -> dict[str, torch.Tensor]:
    """Every network of one checkpoint as one LDM-layout state dict (``text_encoders`` by component name:
    ``text_encoder`` and/or ``text_encoder_2``)."""
    out = unet_to_ldm(unet.state_dict(), configs["unet"])
    out.update(vae_to_ldm(vae.state_dict(), configs["vae"]))
    for component, encoder in text_encoders.items():
        state = encoder.state_dict()
        if component == "text_encoder" and variant in CLIP_L_PREFIX:
            out.update(clip_l_to_ldm(state, CLIP_L_PREFIX[variant]))
        else:
            out.update(open_clip_to_ldm(state, OPEN_CLIP_PREFIX[variant]))
    return out
