"""diffusers config folders of the published SD models, shipped so that nothing is fetched from a hub.

One folder per variant, each as the model's own repository has it (``model_index.json``,
``unet/config.json``, ``vae/config.json``, ``text_encoder[_2]/config.json``,
``scheduler/scheduler_config.json``), no weights and no tokenizer files (the tokenizer is built from
``families/sd/vocab``):

    sd1           runwayml/stable-diffusion-v1-5 (safety checker and feature extractor set to null)
    sd2           stabilityai/stable-diffusion-2-1-base (512 px, ε)
    sd2_v         stabilityai/stable-diffusion-2-1 (768 px, v-prediction; feature extractor null)
    sdxl          stabilityai/stable-diffusion-xl-base-1.0
    sdxl_refiner  stabilityai/stable-diffusion-xl-refiner-1.0 (its only encoder is ``text_encoder_2``)
    sd1_ip2p      timbrooks/instruct-pix2pix (SD 1.5 with an 8-channel ``conv_in``; safety checker null)

``variant_configs(variant, "tiny")`` gives the same structure at test size: random-weight models of a
few hundred thousand parameters that run in milliseconds on a CPU. Their text encoders keep the real
vocabulary (49,408) and end-of-text id (49407), so real token ids fit and the pooled output picks the EOS
position; SDXL's two encoders have different widths (32 and 48), which is how diffusers' single-file
loader tells them apart.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from families.sd.components import VARIANTS

HERE = Path(__file__).parent
# component -> file inside a diffusers folder
FILES: dict[str, str] = {
    "model_index": "model_index.json",
    "unet": "unet/config.json",
    "vae": "vae/config.json",
    "text_encoder": "text_encoder/config.json",
    "text_encoder_2": "text_encoder_2/config.json",
    "scheduler": "scheduler/scheduler_config.json",
}
SIZES = ("full", "tiny")

_TINY_UNET: dict[str, Any] = {
    "sample_size": 32,
    "block_out_channels": [32, 64],
    "layers_per_block": 2,
    "norm_num_groups": 32,
}
_TINY_VAE: dict[str, Any] = {
    "sample_size": 64,
    "block_out_channels": [32, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "layers_per_block": 2,
    "norm_num_groups": 32,
}


def _tiny_text_encoder(width: int, projection: int) -> dict[str, Any]:
    return {
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "projection_dim": projection,
        "vocab_size": 49408,
        "max_position_embeddings": 77,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407,
    }


_TIME = 8  # tiny addition_time_embed_dim (256 in the real SDXL)
_TINY: dict[str, dict[str, dict[str, Any]]] = {
    "sd1": {
        "unet": {
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "attention_head_dim": 8,
            "cross_attention_dim": 32,
        },
        "text_encoder": _tiny_text_encoder(32, 32),
    },
    "sd2": {
        "unet": {
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "attention_head_dim": [2, 4],
            "cross_attention_dim": 32,
        },
        "text_encoder": _tiny_text_encoder(32, 32),
    },
    "sdxl": {
        "unet": {
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
            "attention_head_dim": [2, 4],
            "transformer_layers_per_block": [1, 2],
            "cross_attention_dim": 32 + 48,
            "addition_time_embed_dim": _TIME,
            "projection_class_embeddings_input_dim": 6 * _TIME + 32,  # sizes, crop, target + pooled
        },
        "text_encoder": _tiny_text_encoder(32, 32),
        "text_encoder_2": _tiny_text_encoder(48, 32),
    },
    "sdxl_refiner": {
        "unet": {
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
            "attention_head_dim": [2, 4],
            "transformer_layers_per_block": 2,
            "cross_attention_dim": 48,
            "addition_time_embed_dim": _TIME,
            "projection_class_embeddings_input_dim": 5 * _TIME + 32,  # sizes, crop, aesthetic + pooled
        },
        "text_encoder_2": _tiny_text_encoder(48, 32),
    },
}
_TINY["sd2_v"] = _TINY["sd2"]
_TINY["sd1_ip2p"] = _TINY["sd1"]  # in_channels 8 comes from the published config


def variant_configs(variant: str, size: str = "full") -> dict[str, dict[str, Any]]:
    """Every component's diffusers config for ``variant`` (``"full"``: the published model's)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown SD variant {variant!r}; known: {', '.join(VARIANTS)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; known: {', '.join(SIZES)}")
    folder = HERE / variant
    configs = {
        component: json.loads((folder / rel).read_text())
        for component, rel in FILES.items()
        if (folder / rel).is_file()
    }
    if size == "tiny":
        configs["vae"].update(copy.deepcopy(_TINY_VAE))
        for component, override in _TINY[variant].items():
            configs[component].update(copy.deepcopy(_TINY_UNET) if component == "unet" else {})
            configs[component].update(copy.deepcopy(override))
    return configs


def write_config_folder(configs: dict[str, dict[str, Any]], folder: Path) -> Path:
    """Write ``configs`` as a diffusers folder (no weights), the ``config=`` of diffusers' loaders."""
    for component, config in configs.items():
        path = folder / FILES[component]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2) + "\n")
    return folder
