"""Self-attention for diffusers' ``UNet2DConditionModel`` that honours guidegraph's perturbations.

:class:`PerturbableSelfAttention` is an attention processor computing what diffusers' default
``AttnProcessor2_0`` computes (projections, scaled-dot-product attention, output projection) and,
for each ``(p, rows)`` in its ``perturbations`` list, replaces the attention of those batch rows by
``p.attend`` (``nodes.diffusion.perturbation``): identity attention for PAG, blurred queries for SEG,
a skipped layer for SLG. It is installed on every self-attention (``attn1``) layer when the UNet is
wrapped, so PAG, SEG and SLG predictions share the one batched forward with the plain ones, as
diffusers' PAG pipelines do with ``[uncond, cond, cond_perturbed]``. SEG's blur and SAG's map need
the feature map's grid: the wrapper tells the processors the latent's size before each forward, and
a layer's grid is that size halved (rounding up, as the UNet's strided convolutions do) until it
holds the layer's tokens, so non-square latents work (diffusers' SEG assumes a square).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from nodes.diffusion.perturbation import AttentionHook, splice


class PerturbableSelfAttention:
    """A diffusers attention processor for self-attention layers with per-row perturbations."""

    perturbable = True

    def __init__(self) -> None:
        self.perturbations: list[tuple[AttentionHook, slice]] = []
        self.latent: tuple[int, int] | None = None  # (H, W) of the current forward's input

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **unused: Any,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        grid = hidden_states.shape[-2:] if hidden_states.ndim == 4 else None
        channels = hidden_states.shape[1]
        if grid is not None:
            hidden_states = hidden_states.flatten(2).transpose(1, 2)  # (B, H·W, C)
        b, n = hidden_states.shape[:2]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, n, b)
            attention_mask = attention_mask.view(b, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)  # (B, N, inner)
        head = k.shape[-1] // attn.heads
        q, k, v = (t.view(b, -1, attn.heads, head).transpose(1, 2) for t in (q, k, v))  # (B, heads, N, d)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
        skipped: list[slice] = []
        for p, rows in self.perturbations:
            changed = p.attend(q[rows], k[rows], v[rows], _grid_of(n, grid, self.latent))
            if changed is None:
                skipped.append(rows)
            else:
                y = splice(y, rows, changed.to(y.dtype))
        y = y.transpose(1, 2).reshape(b, -1, attn.heads * head).to(q.dtype)  # (B, N, inner)
        y = attn.to_out[1](attn.to_out[0](y))  # projection, dropout
        if grid is not None:
            y = y.transpose(-1, -2).reshape(b, channels, *grid)
        for rows in skipped:  # the layer adds nothing on these rows
            y = splice(y, rows, torch.zeros_like(y[rows]))
        if attn.residual_connection:
            y = y + residual
        return y / attn.rescale_output_factor


def _grid_of(tokens: int, grid: torch.Size | None, latent: tuple[int, int] | None) -> tuple[int, int]:
    if grid is not None:
        return int(grid[0]), int(grid[1])
    h, w = latent or (0, 0)
    while h * w > tokens:
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    if h * w != tokens:
        raise ValueError(f"a self-attention layer's {tokens} tokens fit no grid of the latent {latent}")
    return h, w


def install(unet: Any) -> list[PerturbableSelfAttention]:
    """Give every self-attention (``attn1``) layer of a diffusers UNet a :class:`PerturbableSelfAttention`;
    returns them (the caller sets their ``latent`` before each forward)."""
    processors = {
        name: PerturbableSelfAttention() if name.endswith("attn1.processor") else processor
        for name, processor in unet.attn_processors.items()
    }
    installed = [p for p in processors.values() if isinstance(p, PerturbableSelfAttention)]
    unet.set_attn_processor(processors)  # empties the dict
    return installed
