"""Building blocks shared by the project's small networks: embeddings, residual blocks, attention."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from families.shapes.data.shapes import prompt_words
from nodes.diffusion.perturbation import splice


def sinusoidal_embedding(values: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Transformer-style sinusoidal features of a (B,) tensor of scalars → (B, dim) (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=values.device) / half)
    args = values.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([args.cos(), args.sin()], dim=-1)


def groups_for(channels: int) -> int:
    return 8 if channels % 8 == 0 else 1


class ResBlock(nn.Module):
    """Pre-norm residual block; an embedding, when given, modulates the second norm (scale and shift)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups_for(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups_for(c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        zero_init(self.conv2)
        self.emb = nn.Linear(emb_dim, 2 * c_out) if emb_dim else None
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.emb is not None and emb is not None:
            scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
            h = h * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, residual.

    Perturbable (``nodes.diffusion.perturbation``): each ``(p, rows)`` in ``perturbations`` replaces
    the attention output of those rows by ``p.attend(q, k, v, (H, W))``, or skips the layer there.
    """

    perturbable = True

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups_for(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        zero_init(self.out)
        self.perturbations: list[tuple[Any, slice]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # (B, heads, HW, C/heads) each
        y = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        skipped: list[slice] = []
        for p, rows in self.perturbations:
            changed = p.attend(q[rows], k[rows], v[rows], (h, w))
            if changed is None:
                skipped.append(rows)
            else:
                y = splice(y, rows, changed)
        out = x + self.out(y.transpose(-1, -2).reshape(b, c, h, w))
        for rows in skipped:
            out = splice(out, rows, x[rows])
        return out


class BagOfWords(nn.Module):
    """Prompt → multi-hot over a small vocabulary → MLP → embedding; no known word → a learned null vector.

    The empty prompt (and any prompt without a vocabulary word) is the null condition.
    """

    def __init__(self, vocab: tuple[str, ...] | list[str], dim: int) -> None:
        super().__init__()
        self.vocab = tuple(vocab)
        self.mlp = nn.Sequential(nn.Linear(len(self.vocab), dim), nn.SiLU(), nn.Linear(dim, dim))
        self.null = nn.Parameter(torch.randn(dim) * 0.02)

    def multi_hot(self, prompts: list[str], device: torch.device | str) -> torch.Tensor:
        out = torch.zeros(len(prompts), len(self.vocab))
        for i, prompt in enumerate(prompts):
            for word in prompt_words(prompt):
                if word in self.vocab:
                    out[i, self.vocab.index(word)] = 1.0
        return out.to(device)

    def forward(self, multi_hot: torch.Tensor) -> torch.Tensor:
        """(B, V) word indicators → (B, dim)."""
        has_words = multi_hot.sum(-1, keepdim=True) > 0  # (B, 1)
        return torch.where(
            has_words, self.mlp(multi_hot), self.null.to(multi_hot.dtype).expand(len(multi_hot), -1)
        )


def zero_init(module: nn.Conv2d | nn.Linear) -> None:
    """Start a layer at zero so a residual branch begins as the identity."""
    nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
