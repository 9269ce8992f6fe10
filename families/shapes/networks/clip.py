"""A small CLIP-style image/text model (Radford et al. 2021) for the shapes captions.

Image tower: a residual CNN on x0 in [-1, 1] (trained on blurred, faded and noisy copies too, so it
reads the blurry x̂0 of early sampling steps). Text tower: a bag of words over the caption vocabulary.
Both return L2-normalised embeddings; similarity logits are ``logit_scale.exp() · ⟨img, txt⟩``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from families.shapes.data.shapes import VOCAB
from families.shapes.networks.classifiers import ConvEncoder
from families.shapes.networks.layers import BagOfWords


class ShapesCLIP(nn.Module):
    """encode_image(x0) and encode_text(prompts) → unit vectors (B, embed_dim)."""

    def __init__(
        self,
        channels: tuple[int, ...] | list[int] = (32, 64, 128, 128),
        blocks_per_level: int = 1,
        embed_dim: int = 128,
        vocab: tuple[str, ...] | list[str] = VOCAB,
    ) -> None:
        super().__init__()
        self.vocab = tuple(vocab)
        self.image_encoder = ConvEncoder(list(channels), blocks_per_level, None)
        self.image_proj = nn.Linear(self.image_encoder.out_channels, embed_dim)
        self.text = BagOfWords(self.vocab, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def encode_image(self, x0: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → (B, E), unit norm."""
        return F.normalize(self.image_proj(self.image_encoder(x0)), dim=-1)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Prompts → (B, E), unit norm."""
        return self.encode_words(self.text.multi_hot(list(prompts), self.text.null.device))

    def encode_words(self, multi_hot: torch.Tensor) -> torch.Tensor:
        """(B, V) word indicators → (B, E), unit norm (the trainer's fast path)."""
        return F.normalize(self.text(multi_hot), dim=-1)
