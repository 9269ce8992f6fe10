"""Image-text CLIP models for CLIP-loss guidance (socket CLIP_MODEL), loaded from local safetensors.

Three layouts: the project's shapes CLIP (header metadata ``kind: clip``); OpenAI CLIP in the
transformers ``CLIPModel`` layout (``vision_model.*``, ``text_model.*``, ``visual_projection``,
``text_projection``, ``logit_scale``), whose configuration (ViT-B/32, ViT-L/14 or any other size)
is read off the tensor shapes, with OpenAI's QuickGELU; and open_clip's layout (``visual.*``,
``transformer.*``, ``text_projection``), converted to the transformers one on load. The BPE
tokenizer is the offline one of the SD family. Images enter as pixels in [-1, 1] of any size and
are resized and normalised with differentiable torch ops, so gradients reach the pixels
(CLIPImageProcessor's path is not differentiable).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from families.base import CheckpointError, LoadOptions, Source, hub_offline
from nodes.diffusion.types import Clip

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class TransformersClip(nn.Module):
    """``encode_image`` / ``encode_text`` → unit vectors, over a transformers ``CLIPModel``."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model: Any = model
        self.image_size = int(model.config.vision_config.image_size)
        self.logit_scale: torch.Tensor = model.logit_scale
        self.register_buffer("mean", torch.tensor(CLIP_MEAN)[None, :, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD)[None, :, None, None], persistent=False)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → (B, E), differentiable in the pixels."""
        size = (self.image_size, self.image_size)
        x = F.interpolate(pixels.float(), size=size, mode="bicubic", align_corners=False, antialias=True)
        x = ((x + 1) / 2 - self.mean) / self.std
        feats = self.model.get_image_features(pixel_values=x.to(self.model.dtype))
        feats = getattr(feats, "pooler_output", feats)
        return F.normalize(feats.float(), dim=-1)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        from families.sd.tokenizer import token_chunks

        device = self.logit_scale.device
        ids = torch.tensor([token_chunks(p, "<|endoftext|>")[0] for p in prompts], device=device)  # (B, 77)
        feats = self.model.get_text_features(input_ids=ids)
        feats = getattr(feats, "pooler_output", feats)
        return F.normalize(feats.float(), dim=-1)


def _layers(source: Source, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in source.tensors if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def transformers_clip_config(source: Source) -> dict[str, Any]:
    """A ``CLIPConfig`` dict read off a transformers-layout CLIP's tensor shapes."""

    def shape(key: str) -> tuple[int, ...]:
        found = source.shape(key)
        if found is None:
            raise CheckpointError(f"{source.name}: a CLIP in the transformers layout needs {key!r}")
        return found

    v_hidden, _, patch, _ = shape("vision_model.embeddings.patch_embedding.weight")
    positions = shape("vision_model.embeddings.position_embedding.weight")[0]
    vocab, t_hidden = shape("text_model.embeddings.token_embedding.weight")
    projection = shape("visual_projection.weight")[0]
    vision = {
        "hidden_size": v_hidden,
        "intermediate_size": shape("vision_model.encoder.layers.0.mlp.fc1.weight")[0],
        "num_hidden_layers": _layers(source, "vision_model.encoder.layers."),
        "num_attention_heads": v_hidden // 64,
        "patch_size": patch,
        "image_size": patch * round((positions - 1) ** 0.5),
        "hidden_act": "quick_gelu",
    }
    text = {
        "hidden_size": t_hidden,
        "intermediate_size": shape("text_model.encoder.layers.0.mlp.fc1.weight")[0],
        "num_hidden_layers": _layers(source, "text_model.encoder.layers."),
        "num_attention_heads": t_hidden // 64,
        "vocab_size": vocab,
        "max_position_embeddings": shape("text_model.embeddings.position_embedding.weight")[0],
        "hidden_act": "quick_gelu",
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407,
    }
    return {"projection_dim": projection, "vision_config": vision, "text_config": text}


def open_clip_to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An open_clip CLIP state dict (``visual.*``, ``transformer.*``, ``token_embedding`` …) in the
    transformers ``CLIPModel`` layout: q/k/v split out of ``in_proj``, projections transposed."""
    out: dict[str, torch.Tensor] = {}

    def blocks(src: str, dst: str) -> None:
        pattern = re.compile(re.escape(src) + r"(\d+)\.(.*)")
        for key, value in state.items():
            m = pattern.fullmatch(key)
            if not m:
                continue
            i, rest = m[1], m[2]
            base = f"{dst}{i}."
            if rest.startswith("attn.in_proj_"):
                kind = rest.removeprefix("attn.in_proj_")  # weight | bias
                for part, chunk in zip(("q", "k", "v"), value.chunk(3), strict=True):
                    out[f"{base}self_attn.{part}_proj.{kind}"] = chunk
                continue
            renamed = {
                "attn.out_proj.": "self_attn.out_proj.", "ln_1.": "layer_norm1.", "ln_2.": "layer_norm2.",
                "mlp.c_fc.": "mlp.fc1.", "mlp.c_proj.": "mlp.fc2.",
            }  # fmt: skip
            for old, new in renamed.items():
                if rest.startswith(old):
                    out[base + new + rest[len(old) :]] = value

    blocks("visual.transformer.resblocks.", "vision_model.encoder.layers.")
    blocks("transformer.resblocks.", "text_model.encoder.layers.")
    simple = {
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
        "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
        "visual.ln_post.weight": "vision_model.post_layernorm.weight",
        "visual.ln_post.bias": "vision_model.post_layernorm.bias",
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight",
        "ln_final.bias": "text_model.final_layer_norm.bias",
        "logit_scale": "logit_scale",
    }
    for old, new in simple.items():
        if old in state:
            out[new] = state[old]
    out["visual_projection.weight"] = state["visual.proj"].T.contiguous()  # open_clip: x @ proj
    out["text_projection.weight"] = state["text_projection"].T.contiguous()
    return out


def load_clip_model(path: Path, options: LoadOptions, name: str = "") -> Clip:
    """A CLIP_MODEL from a local safetensors file (shapes CLIP or transformers-layout OpenAI CLIP)."""
    source = Source.open(path)
    name = name or path.name
    if source.metadata.get("kind") == "clip":
        from families.shapes.networks.io import load_network

        return Clip(load_network(path, device=options.device).module, name)
    if "visual.conv1.weight" in source.tensors and "text_projection" in source.tensors:
        from safetensors.torch import load_file

        state = open_clip_to_transformers(load_file(str(path)))
        return _transformers_clip(state, Source(path, {k: _info(v) for k, v in state.items()}), options, name)
    if "vision_model.embeddings.patch_embedding.weight" in source.tensors:
        from safetensors.torch import load_file

        return _transformers_clip(load_file(str(path)), source, options, name)
    raise CheckpointError(
        f"{path.name}: not a CLIP model guidegraph knows. Found {source.summary()}. Supported: the shapes "
        "CLIP (metadata kind 'clip'), OpenAI CLIP in the transformers CLIPModel layout, and open_clip's "
        "layout"
    )


def _info(t: torch.Tensor) -> Any:
    from families.base import TensorInfo

    return TensorInfo(str(t.dtype), tuple(t.shape))


def _transformers_clip(
    state: dict[str, torch.Tensor], source: Source, options: LoadOptions, name: str
) -> Clip:
    """A transformers ``CLIPModel`` sized from ``source``'s shapes, loaded with ``state``."""
    hub_offline()
    from transformers import CLIPConfig, CLIPModel

    model: Any = CLIPModel(CLIPConfig(**transformers_clip_config(source)))
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{source.name}: weights do not fit the CLIP read off its shapes: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    model.to(options.device or torch.device("cpu"), torch.float32)
    model.eval().requires_grad_(False)
    return Clip(TransformersClip(model), name)


def _config(
    vision: tuple[int, int, int, int, int], text: tuple[int, int, int], projection: int
) -> dict[str, Any]:
    hidden, layers, mlp, patch, image = vision
    t_hidden, t_layers, t_mlp = text
    return {
        "projection_dim": projection,
        "vision_config": {
            "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": hidden // 64,
            "intermediate_size": mlp, "patch_size": patch, "image_size": image, "hidden_act": "quick_gelu",
        },
        "text_config": {
            "hidden_size": t_hidden, "num_hidden_layers": t_layers, "num_attention_heads": t_hidden // 64,
            "intermediate_size": t_mlp, "vocab_size": 49408, "max_position_embeddings": 77,
            "hidden_act": "quick_gelu", "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407,
        },
    }  # fmt: skip


# OpenAI CLIP's published sizes (open_clip's ViT-B-32-quickgelu / ViT-L-14 model configs), and a tiny
# one for tests: (hidden, layers, mlp, patch, image), (text hidden, layers, mlp), projection.
CLIP_CONFIGS: dict[str, dict[str, Any]] = {
    "vit-b-32": _config((768, 12, 3072, 32, 224), (512, 12, 2048), 512),
    "vit-l-14": _config((1024, 24, 4096, 14, 224), (768, 12, 3072), 768),
    "tiny": _config((64, 2, 128, 8, 32), (64, 2, 128), 32),
}


def write_random_clip(path: Path, size: str = "tiny", seed: int = 0) -> Path:
    """A random-weight OpenAI-layout CLIP (transformers ``CLIPModel`` keys) as safetensors."""
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel

    if size not in CLIP_CONFIGS:
        raise ValueError(f"unknown CLIP size {size!r}; known: {', '.join(CLIP_CONFIGS)}")
    hub_offline()
    torch.manual_seed(seed)
    model: Any = CLIPModel(CLIPConfig(**CLIP_CONFIGS[size]))
    state = {
        k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.endswith("position_ids")
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt", "clip_size": size})
    return path
