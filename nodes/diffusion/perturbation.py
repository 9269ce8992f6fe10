"""Perturbed forwards for "perturbed prediction" leaves: PAG, SEG and skip-layer guidance.

A :class:`Perturbation` changes a network's self-attention in chosen layers for its own rows of a
batch only, so the plain and the perturbed predictions of one model still share ONE batched forward
(as diffusers' PAG pipelines batch ``[uncond, cond, cond_perturbed]`` with an attention processor
that perturbs the last chunk).

Families opt in per self-attention layer: a module (or a diffusers attention processor) with
``perturbable = True`` and a ``perturbations`` list applies, in its forward, for each ``(p, rows)``
in the list
``y[rows] = p.attend(q[rows], k[rows], v[rows], (H, W))`` to its attention output, and when
``attend`` returns None it returns its input unchanged on those rows (the layer is skipped).
:func:`perturbed` fills those lists for one forward and empties them afterwards. Anything with
``layers`` and ``attend`` (an :class:`AttentionHook`) can sit in those lists: SAG's attention
recorder (``self_attention.py``) reads the map of its rows and returns the plain attention.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from nodes.diffusion.names import INFINITE_BLUR

KINDS: tuple[str, ...] = ("identity_attention", "blurred_queries", "skip_layer")


class AttentionHook(Protocol):
    """What a perturbable layer calls for its rows: ``attend(q, k, v, (H, W))`` → output or None (skip)."""

    @property
    def layers(self) -> tuple[str, ...]: ...

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor | None: ...


@dataclass(frozen=True)
class Perturbation:
    """How a perturbed leaf's forward differs, and in which layers.

    - ``identity_attention``: the self-attention map is the identity, so the output is V
      (PAG, Ahn et al. 2024, "Self-Rectifying Diffusion Sampling with Perturbed-Attention Guidance").
    - ``blurred_queries``: queries Gaussian-blurred over the feature map with std ``blur_sigma``
      (SEG, Hong 2024, "Smoothed Energy Guidance"); σ ≥ 9999 replaces every query by its mean.
    - ``skip_layer``: the attention layer is bypassed (skip-layer guidance, Stability AI SD3.5;
      STG, Hyung et al. 2024).

    ``layers`` are module-name prefixes of the network's perturbable attention layers ("mid").
    """

    kind: str
    layers: tuple[str, ...]
    blur_sigma: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown perturbation {self.kind!r}; expected one of {KINDS}")
        if not self.layers:
            raise ValueError("a perturbation needs at least one layer")

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor | None:
        """q, k, v (B, heads, H·W, d) → the perturbed attention output (B, heads, H·W, d); None: skip."""
        if self.kind == "identity_attention":
            return v
        if self.kind == "blurred_queries":
            return F.scaled_dot_product_attention(blur_queries(q, size, self.blur_sigma), k, v)
        return None


def blur_queries(q: torch.Tensor, size: tuple[int, int], sigma: float) -> torch.Tensor:
    """Gaussian blur of queries (B, heads, H·W, d) over the (H, W) grid, reflect-padded.

    Kernel side: the odd number ⌈6σ⌉ or ⌈6σ⌉ + 1 (diffusers' SEG sizing), capped by the grid;
    σ ≥ :data:`INFINITE_BLUR` gives the mean query (the paper's σ → ∞). diffusers 0.42's
    ``_gaussian_blur_2d`` has the two branches swapped: it takes the mean below its "infinite"
    threshold and blurs above it; its blur itself equals this one (tested).
    """
    b, heads, n, d = q.shape
    h, w = size
    if sigma >= INFINITE_BLUR:
        return q.mean(dim=2, keepdim=True).expand_as(q)
    reach = math.ceil(6 * sigma)
    grid = q.permute(0, 1, 3, 2).reshape(b, heads * d, h, w)  # (B, heads·d, H, W)
    blurred = gaussian_blur(grid, sigma, reach + 1 - reach % 2)
    return blurred.reshape(b, heads, d, n).permute(0, 1, 3, 2)  # (B, heads, H·W, d)


def gaussian_blur(x: torch.Tensor, sigma: float, kernel: int) -> torch.Tensor:
    """Per-channel Gaussian blur of x (B, C, H, W) with std ``sigma`` and an odd ``kernel`` side,
    reflect-padded; the side is capped by the grid (reflect padding needs pad < side). σ ≤ 0 or a
    side below 2 returns x."""
    side = min(x.shape[-2:])
    kernel = min(kernel, side - (side % 2 - 1))  # odd
    if kernel < 2 or sigma <= 0:
        return x
    half = (kernel - 1) / 2
    taps = torch.linspace(-half, half, kernel, dtype=x.dtype, device=x.device)
    k1 = torch.exp(-0.5 * (taps / sigma) ** 2)
    k1 = k1 / k1.sum()
    c = x.shape[1]
    k2 = (k1[:, None] * k1[None, :]).expand(c, 1, kernel, kernel)  # (C, 1, k, k)
    pad = kernel // 2
    return F.conv2d(F.pad(x, [pad] * 4, mode="reflect"), k2, groups=c)


def perturbable_layers(network: torch.nn.Module) -> dict[str, Any]:
    """The network's perturbable self-attention layers by module name: modules that are perturbable
    themselves, or whose attention ``processor`` is (diffusers' Attention modules)."""
    found: dict[str, Any] = {}
    for name, module in network.named_modules():
        for layer in (module, getattr(module, "processor", None)):
            if getattr(layer, "perturbable", False):
                found[name] = layer
    return found


def matching_layers(names: list[str], patterns: tuple[str, ...]) -> list[str]:
    """Layer names with a pattern at a module boundary: "mid" matches "mid.attn" (shapes UNet) and
    "unet.mid_block.attentions.0.transformer_blocks.0.attn1" (diffusers UNet); "up.1" matches
    "up.1.attn" but not "up.10.attn"."""

    def matches(name: str, pattern: str) -> bool:
        tails = [name[i + 1 :] for i, ch in enumerate(name) if ch == "."]
        return any(t == pattern or t.startswith((pattern + ".", pattern + "_")) for t in (name, *tails))

    return [n for n in names if any(matches(n, p) for p in patterns)]


def check_layers(network: torch.nn.Module, patterns: tuple[str, ...], model_name: str = "") -> None:
    """Fail, listing the choices, when a pattern names no perturbable attention layer of the network."""
    names = list(perturbable_layers(network))
    if not names:
        raise ValueError(f"model {model_name!r} has no perturbable self-attention layers")
    missing = [p for p in patterns if not matching_layers(names, (p,))]
    if missing:
        raise ValueError(
            f"layers {missing} name no self-attention layer of {model_name!r}; choose from {names}"
        )


def row_plan(
    hooks: Sequence[Sequence[AttentionHook]], b: int, start: int, end: int
) -> list[tuple[AttentionHook, slice]]:
    """The hooked rows of chunk [start, end) of a batch made of one block of b rows per leaf
    (``hooks[j]``: what leaf j's rows get; most leaves get nothing)."""
    plan: list[tuple[AttentionHook, slice]] = []
    for j, leaf_hooks in enumerate(hooks):
        lo, hi = max(j * b, start), min((j + 1) * b, end)
        if lo < hi:
            plan.extend((hook, slice(lo - start, hi - start)) for hook in leaf_hooks)
    return plan


@contextmanager
def perturbed(network: torch.nn.Module, plan: list[tuple[AttentionHook, slice]]) -> Iterator[None]:
    """Install ``plan`` (hooks and their rows) on the network's attention layers for one forward."""
    if not plan:
        yield
        return
    layers = perturbable_layers(network)
    touched: list[Any] = []
    try:
        for p, rows in plan:
            names = matching_layers(list(layers), p.layers)
            if not names:
                check_layers(network, p.layers)
            for name in names:
                _slots(layers[name]).append((p, rows))
                touched.append(layers[name])
        yield
    finally:
        for module in touched:
            _slots(module).clear()


def _slots(layer: Any) -> list[tuple[AttentionHook, slice]]:
    slots: list[tuple[AttentionHook, slice]] = layer.perturbations
    return slots


def splice(base: torch.Tensor, rows: slice, replacement: torch.Tensor) -> torch.Tensor:
    """``base`` with rows ``rows`` replaced, out of place (autograd-safe)."""
    return torch.cat([base[: rows.start], replacement, base[rows.stop :]])
