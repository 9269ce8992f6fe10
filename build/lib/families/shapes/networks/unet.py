"""A small conditional ε-prediction UNet for 32×32 pictures (Ho et al. 2020; Dhariwal & Nichol 2021 blocks).

Call convention (k-diffusion's discrete ε-model, guidance-methods.md §3.2): with x = x0 + σ·n the caller
passes ``x_in = x / sqrt(σ² + 1)`` and ``c_noise = t`` (the discrete timestep as a float) and gets ε̂ ≈ n.
The condition is an embedding (B, cond_dim) from :meth:`encode_prompts` or :meth:`encode_labels`; the
empty prompt is the null condition (a learned vector, seen by ~10% of training examples).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from families.shapes.data.shapes import CLASS_NAMES, VOCAB, prompt_words
from families.shapes.networks.layers import (
    Attention,
    BagOfWords,
    ResBlock,
    groups_for,
    sinusoidal_embedding,
    zero_init,
)


def labels_multi_hot_table(labels: list[str], vocab: tuple[str, ...]) -> torch.Tensor:
    """(K, V) word indicators of each class name."""
    table = torch.zeros(len(labels), len(vocab))
    for k, name in enumerate(labels):
        for word in prompt_words(name):
            if word in vocab:
                table[k, vocab.index(word)] = 1.0
    return table


class Stage(nn.Module):
    """A residual block, optionally followed by self-attention."""

    def __init__(
        self, c_in: int, c_out: int, attention: bool, emb_dim: int, heads: int, dropout: float
    ) -> None:
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_dim, dropout)
        self.attn = Attention(c_out, heads) if attention else None

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.res(h, emb)
        return self.attn(h) if self.attn is not None else h


class Resample(nn.Module):
    """Halve (stride-2 conv) or double (nearest + conv) the resolution."""

    def __init__(self, channels: int, up: bool) -> None:
        super().__init__()
        self.up = up
        self.conv = nn.Conv2d(channels, channels, 3, stride=1 if up else 2, padding=1)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.up:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")  # (B, C, 2H, 2W)
        return self.conv(h)


class ShapesUNet(nn.Module):
    """ε̂ = F(x_in, c_noise, cond): residual blocks at each resolution, attention at the coarse ones."""

    def __init__(
        self,
        channels: tuple[int, ...] | list[int] = (32, 64, 128, 128),
        blocks_per_level: int = 2,
        attention_levels: tuple[int, ...] | list[int] = (2, 3),
        emb_dim: int = 256,
        heads: int = 4,
        dropout: float = 0.0,
        vocab: tuple[str, ...] | list[str] = VOCAB,
        labels: tuple[str, ...] | list[str] = CLASS_NAMES,
    ) -> None:
        super().__init__()
        self.labels = list(labels)
        self.vocab = tuple(vocab)
        self.emb_dim = emb_dim
        chans = list(channels)
        self.time_features = chans[0] * 4
        self.time_mlp = nn.Sequential(
            nn.Linear(self.time_features, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.prompt = BagOfWords(self.vocab, emb_dim)
        self.register_buffer("label_words", labels_multi_hot_table(self.labels, self.vocab), persistent=False)
        self.conv_in = nn.Conv2d(3, chans[0], 3, padding=1)

        down: list[nn.Module] = []
        skips = [chans[0]]
        c = chans[0]
        for level, ch in enumerate(chans):
            for _ in range(blocks_per_level):
                down.append(Stage(c, ch, level in attention_levels, emb_dim, heads, dropout))
                c = ch
                skips.append(c)
            if level < len(chans) - 1:
                down.append(Resample(c, up=False))
                skips.append(c)
        self.down = nn.ModuleList(down)
        self.mid = Stage(c, c, True, emb_dim, heads, dropout)
        self.mid2 = ResBlock(c, c, emb_dim, dropout)
        up: list[nn.Module] = []
        for level in reversed(range(len(chans))):
            ch = chans[level]
            for _ in range(blocks_per_level + 1):
                up.append(Stage(c + skips.pop(), ch, level in attention_levels, emb_dim, heads, dropout))
                c = ch
            if level > 0:
                up.append(Resample(c, up=True))
        self.up = nn.ModuleList(up)
        self.norm_out = nn.GroupNorm(groups_for(c), c)
        self.conv_out = nn.Conv2d(c, 3, 3, padding=1)
        zero_init(self.conv_out)

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Prompts → condition embeddings (B, emb_dim); '' is the null condition."""
        device = self.prompt.null.device
        return self.prompt(self.prompt.multi_hot(list(prompts), device))

    def encode_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Class indices (B,) → condition embeddings (B, emb_dim), equal to the full caption's."""
        table = self.label_words
        assert isinstance(table, torch.Tensor)
        return self.prompt(table[labels.to(table.device).long()])

    def encode_words(self, multi_hot: torch.Tensor) -> torch.Tensor:
        """(B, V) word indicators → condition embeddings (the trainer's fast path)."""
        return self.prompt(multi_hot)

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W), (B,), (B, emb_dim) → ε̂ (B, 3, H, W)."""
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(x_in.shape[0])
        emb = self.time_mlp(sinusoidal_embedding(c_noise, self.time_features)) + cond  # (B, E)
        h = self.conv_in(x_in)
        hs = [h]
        for block in self.down:
            h = block(h, emb)
            hs.append(h)
        h = self.mid2(self.mid(h, emb), emb)
        for block in self.up:
            h = block(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(block, Stage) else block(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))
