"""CLIP models for CLIP guidance: transformers and open_clip layouts load to the same network."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from families.base import CheckpointError, LoadOptions
from families.clip import CLIP_CONFIGS, load_clip_model, write_random_clip


def to_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The transformers CLIPModel keys as open_clip names them (open_clip's model.py attribute names)."""
    out: dict[str, torch.Tensor] = {}
    layer = re.compile(r"(vision|text)_model\.encoder\.layers\.(\d+)\.(.*)")
    for key, value in state.items():
        if m := layer.fullmatch(key):
            tower = "visual.transformer" if m[1] == "vision" else "transformer"
            rest = m[3]
            names = {
                "self_attn.out_proj.": "attn.out_proj.", "layer_norm1.": "ln_1.", "layer_norm2.": "ln_2.",
                "mlp.fc1.": "mlp.c_fc.", "mlp.fc2.": "mlp.c_proj.",
            }  # fmt: skip
            for old, new in names.items():
                if rest.startswith(old):
                    out[f"{tower}.resblocks.{m[2]}.{new}{rest[len(old) :]}"] = value
    for n in range(max(int(k.split(".")[3]) for k in state if ".encoder.layers." in k) + 1):
        for tower, prefix in (("vision_model", "visual.transformer"), ("text_model", "transformer")):
            base = f"{tower}.encoder.layers.{n}.self_attn."
            if base + "q_proj.weight" not in state:
                continue
            for kind in ("weight", "bias"):
                parts = [state[f"{base}{p}_proj.{kind}"] for p in "qkv"]
                out[f"{prefix}.resblocks.{n}.attn.in_proj_{kind}"] = torch.cat(parts)
    out.update({
        "visual.class_embedding": state["vision_model.embeddings.class_embedding"],
        "visual.conv1.weight": state["vision_model.embeddings.patch_embedding.weight"],
        "visual.positional_embedding": state["vision_model.embeddings.position_embedding.weight"],
        "visual.ln_pre.weight": state["vision_model.pre_layrnorm.weight"],
        "visual.ln_pre.bias": state["vision_model.pre_layrnorm.bias"],
        "visual.ln_post.weight": state["vision_model.post_layernorm.weight"],
        "visual.ln_post.bias": state["vision_model.post_layernorm.bias"],
        "visual.proj": state["visual_projection.weight"].T.contiguous(),
        "token_embedding.weight": state["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": state["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": state["text_model.final_layer_norm.weight"],
        "ln_final.bias": state["text_model.final_layer_norm.bias"],
        "text_projection": state["text_projection.weight"].T.contiguous(),
        "logit_scale": state["logit_scale"],
    })  # fmt: skip
    return out


def test_open_clip_and_transformers_layouts_give_the_same_embeddings(tmp_path: Path) -> None:
    hf = write_random_clip(tmp_path / "hf.safetensors", "tiny", seed=3)
    save_file(to_open_clip(load_file(str(hf))), str(tmp_path / "oc.safetensors"))
    a = load_clip_model(hf, LoadOptions())
    b = load_clip_model(tmp_path / "oc.safetensors", LoadOptions())
    pixels = torch.rand(2, 3, 40, 40) * 2 - 1
    assert torch.allclose(a.encode_image(pixels), b.encode_image(pixels), atol=1e-5)
    assert torch.allclose(a.encode_text(["a red house", ""]), b.encode_text(["a red house", ""]), atol=1e-5)
    assert a.module.image_size == CLIP_CONFIGS["tiny"]["vision_config"]["image_size"]


def test_clip_image_features_are_differentiable_in_the_pixels(tmp_path: Path) -> None:
    clip = load_clip_model(write_random_clip(tmp_path / "c.safetensors", "tiny"), LoadOptions())
    pixels = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_()
    (grad,) = torch.autograd.grad(clip.encode_image(pixels).sum(), pixels)
    assert grad.abs().sum() > 0


def test_an_unknown_file_is_not_a_clip(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(CheckpointError, match="not a CLIP model"):
        load_clip_model(tmp_path / "x.safetensors", LoadOptions())
