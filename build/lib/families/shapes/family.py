"""The shapes family as a :class:`families.base.Family`: the project's own 32×32 pixel-space models.

Its files are safetensors whose ``__metadata__`` says ``kind`` (denoiser, noisy_classifier, clip,
evaluator) and ``architecture``; a checkpoint is a denoiser file. The UNet carries its own text and
label encoder, and the data live in pixel space, so the VAE is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from families.base import Checkpoint, CheckpointError, LoadOptions, Source
from families.shapes.networks.io import ARCHITECTURES, load_network
from nodes.diffusion.conventions import denoiser_from_metadata
from nodes.diffusion.types import Conditioning


@dataclass(frozen=True, eq=False)
class ShapesText:
    """The text and label encoder built into a shapes UNet (``encode_prompts``, ``encode_labels``)."""

    network: Any  # ShapesUNet
    name: str

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(str(n) for n in (getattr(self.network, "labels", None) or ()))

    @property
    def null_label(self) -> int | None:
        value = getattr(self.network, "null_label", None)
        return None if value is None else int(value)

    def encode_text(self, text: str, clip_skip: int = 0) -> Conditioning:
        if clip_skip:
            raise ValueError(f"{self.name}: a bag-of-words encoder has no layers to skip (clip_skip 0)")
        with torch.no_grad():
            embedding = self.network.encode_prompts([text])[0]
        return Conditioning.of(embedding, f"prompt {text!r}", encoder=self.name)

    def encode_label(self, index: int) -> Conditioning:
        device = next(self.network.parameters()).device
        with torch.no_grad():
            embedding = self.network.encode_labels(torch.tensor([index], device=device))[0]
        name = self.labels[index] if index < len(self.labels) else "null"
        return Conditioning.of(embedding, f"class {index} {name!r}", encoder=self.name)


@dataclass(frozen=True, eq=False)
class PixelSpace:
    """The identity VAE of pixel-space models: latents are the pixels in [-1, 1]."""

    name: str = "pixels"
    latent_channels: int = 3
    downscale: int = 1

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents


class ShapesFamily:
    name = "shapes"
    variants: tuple[str, ...] = tuple(sorted(a for a in ARCHITECTURES if a in ("shapes_unet",)))

    def detect(self, source: Source) -> str | None:
        architecture = source.metadata.get("architecture")
        if source.metadata.get("kind") == "denoiser" and architecture in ARCHITECTURES:
            return str(architecture)
        if source.metadata.get("kind") in ("noisy_classifier", "clip", "evaluator"):
            raise CheckpointError(
                f"{source.name}: a shapes {source.metadata['kind']} file, not a checkpoint; load it with "
                "the loader for its kind (ClassifierLoader, ClipLoader)"
            )
        return None

    def load(self, source: Source, variant: str, options: LoadOptions) -> Checkpoint:
        loaded = load_network(source.path, device=options.device)
        text = ShapesText(loaded.module, source.name)
        model = denoiser_from_metadata(loaded.module, loaded.metadata, name=source.name, encoder=source.name)
        return Checkpoint(model=model, clip=text, vae=PixelSpace(), family=self.name, variant=variant)


FAMILY = ShapesFamily()
