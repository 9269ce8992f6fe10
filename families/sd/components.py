"""The seam between SD files and SD graph values: the diffusers/transformers networks of one checkpoint.

``families.sd.files`` turns a single-file checkpoint or a diffusers folder into :class:`SDComponents`;
``families.sd.model`` wraps them as the denoiser, text encoder and VAE the graph uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Variants: what the networks are and how the UNet was trained.
#   sd1           SD 1.x: CLIP ViT-L/14 (last layer), ε-prediction, 512 px
#   sd2           SD 2.x base: OpenCLIP ViT-H/14 (penultimate layer), ε-prediction, 512 px
#   sd2_v         SD 2.x: as sd2 with v-prediction, 768 px
#   sdxl          SDXL base 1.0: CLIP ViT-L/14 + OpenCLIP ViT-bigG/14 (penultimate, pooled), size/crop
#                 conditioning, ε-prediction, 1024 px
#   sdxl_refiner  SDXL refiner: OpenCLIP ViT-bigG/14 only, aesthetic-score conditioning
#   sd1_ip2p      InstructPix2Pix (Brooks et al. 2023): SD 1.x whose UNet takes 8 input channels, the
#                 noisy latent and the unscaled latent of the image to edit, concatenated
VARIANTS: tuple[str, ...] = ("sd1", "sd2", "sd2_v", "sdxl", "sdxl_refiner", "sd1_ip2p")
IMAGE_CONDITIONED = ("sd1_ip2p",)


@dataclass(eq=False)
class SDComponents:
    """One Stable Diffusion checkpoint's networks (eval mode, no grad) and its noise schedule.

    ``text_encoders`` are ``CLIPTextModel`` / ``CLIPTextModelWithProjection`` in the order the UNet
    concatenates them (SDXL: CLIP-L then OpenCLIP-bigG); ``pad_tokens`` gives each encoder's padding
    token (SD1 pads with ``<|endoftext|>``, OpenCLIP encoders with ``!``, id 0). ``scheduler_config`` is a
    diffusers scheduler config (``num_train_timesteps``, ``beta_start``, ``beta_end``, ``beta_schedule``,
    ``prediction_type``, ...).
    """

    variant: str
    unet: Any  # diffusers UNet2DConditionModel
    vae: Any  # diffusers AutoencoderKL
    text_encoders: list[Any]  # transformers CLIPTextModel / CLIPTextModelWithProjection
    pad_tokens: list[str]
    scheduler_config: Mapping[str, Any]
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
