"""Image classifiers: the noise-aware classifier used for guidance and the clean-image evaluator.

``NoisyClassifier(x, σ)`` reads x in the sampler's σ-space (x = x0 + σ·n), scales it by 1/sqrt(σ²+1)
itself and embeds log σ (Dhariwal & Nichol 2021 train such a classifier on noised images for guidance).
``Evaluator(x0)`` reads clean images in [-1, 1]; it judges samples (and guides only in universal guidance).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from families.shapes.data.shapes import CLASS_NAMES
from families.shapes.networks.layers import ResBlock, groups_for, sinusoidal_embedding


class ConvEncoder(nn.Module):
    """Residual CNN: 32×32 → 4×4 by stride-2 convolutions, then a global mean pool → (B, C_last)."""

    def __init__(
        self, channels: list[int], blocks_per_level: int, emb_dim: int | None, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        c = channels[0]
        for level, ch in enumerate(channels):
            for _ in range(blocks_per_level):
                self.blocks.append(ResBlock(c, ch, emb_dim))
                c = ch
            if level < len(channels) - 1:
                self.blocks.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.norm = nn.GroupNorm(groups_for(c), c)
        self.out_channels = c

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, emb) if isinstance(block, ResBlock) else block(h)
        return F.silu(self.norm(h)).mean(dim=(2, 3))  # (B, C)


class NoisyClassifier(nn.Module):
    """log p(y | x, σ) for x = x0 + σ·n: logits (B, K).

    ``in_channels`` is the space it reads: 3 for pixels, 4 for Stable Diffusion latents (any model
    whose samples it was trained on).
    """

    def __init__(
        self,
        channels: tuple[int, ...] | list[int] = (32, 64, 128, 256),
        blocks_per_level: int = 2,
        emb_dim: int = 128,
        labels: tuple[str, ...] | list[str] = CLASS_NAMES,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.labels = list(labels)
        self.in_channels = in_channels
        self.sigma_mlp = nn.Sequential(nn.Linear(64, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.encoder = ConvEncoder(list(channels), blocks_per_level, emb_dim, in_channels)
        self.head = nn.Linear(self.encoder.out_channels, len(self.labels))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in σ-space, (B,) σ → logits (B, K)."""
        sigma = sigma.to(x.dtype).reshape(-1).expand(x.shape[0]) if sigma.numel() == 1 else sigma.to(x.dtype)
        x_in = x / (sigma**2 + 1).sqrt()[:, None, None, None]
        emb = self.sigma_mlp(
            sinusoidal_embedding(sigma.log() * 8.0, 64)
        )  # log σ ∈ ~[-5, 5] spans the periods
        return self.head(self.encoder(x_in, emb))


class Evaluator(nn.Module):
    """Clean-image classifier, logits (B, K); :meth:`features` gives the pooled features."""

    def __init__(
        self,
        channels: tuple[int, ...] | list[int] = (24, 48, 96, 128),
        blocks_per_level: int = 1,
        labels: tuple[str, ...] | list[str] = CLASS_NAMES,
    ) -> None:
        super().__init__()
        self.labels = list(labels)
        self.encoder = ConvEncoder(list(channels), blocks_per_level, None)
        self.head = nn.Linear(self.encoder.out_channels, len(self.labels))

    def features(self, x0: torch.Tensor) -> torch.Tensor:
        return self.encoder(x0)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x0))
