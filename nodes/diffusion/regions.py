"""Conditioning sets: several conditions, each with a strength, an optional area and a σ range, mixed
per pixel (ComfyUI's list-valued CONDITIONING: ConditioningCombine, ConditioningSetArea,
ConditioningSetTimestepRange).

For one model and a set of entries i with predictions D_i (an area entry's D_i comes from the model
run on that crop of x), the mixed prediction is, per pixel p,

    D(p) = Σ_i m_i(p)·D_i(p) / Σ_i m_i(p),    m_i = strength_i · feather_i(p) · [σ_end,i ≤ σ ≤ σ_start,i]

where feather_i ramps linearly over 8 latent pixels at the area's inner edges (ComfyUI's area
blending; edges on the image border are not feathered). Pixels no active entry covers get 0, as in
ComfyUI. Space: x0 (an affine mix, so any space gives the same result).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nodes.diffusion.conventions import Denoiser
from nodes.diffusion.guidance import Guidance, Prediction, Step
from nodes.diffusion.types import Conditioning

FEATHER = 8  # latent pixels


@dataclass(frozen=True)
class CondEntry:
    """One condition of a set: strength, area in pixels (height, width, top, left) or None for the
    whole image, and the fraction of the schedule it is active in (0 = start, 1 = end)."""

    condition: Conditioning
    strength: float = 1.0
    area: tuple[int, int, int, int] | None = None
    start: float = 0.0
    end: float = 1.0


@dataclass(frozen=True)
class ConditioningSet:
    """Several conditions used together (a CONDITIONING value, like a single :class:`Conditioning`)."""

    entries: tuple[CondEntry, ...]


def entries_of(value: Conditioning | ConditioningSet) -> tuple[CondEntry, ...]:
    return value.entries if isinstance(value, ConditioningSet) else (CondEntry(value),)


def percent_to_sigma(model: Denoiser, percent: float) -> float:
    """σ at a fraction of the model's schedule (0 → ∞, 1 → 0), as ComfyUI's ``percent_to_sigma``."""
    if percent <= 0:
        return float("inf")
    if percent >= 1:
        return 0.0
    t = torch.tensor((1 - percent) * (len(model.sigmas) - 1), dtype=torch.float64)
    return float(model.t_to_sigma(t))


@dataclass(frozen=True)
class RegionMix(Guidance):
    """The per-pixel mix above over ``leaves`` (one per entry, in entry order)."""

    leaves: tuple[Prediction, ...]
    strengths: tuple[float, ...]
    sigma_ranges: tuple[tuple[float, float], ...]  # (σ_end, σ_start) per entry

    def children(self) -> tuple[Guidance, ...]:
        return self.leaves

    def apply(self, inputs: list[torch.Tensor], step: Step) -> torch.Tensor:
        x = step.x
        sigma = float(step.sigma.reshape(-1)[0])
        total = torch.zeros_like(x)
        weight = torch.zeros_like(x[:, :1])  # (B, 1, H, W)
        height, width = x.shape[-2:]
        for leaf, pred, strength, (lo, hi) in zip(
            self.leaves, inputs, self.strengths, self.sigma_ranges, strict=True
        ):
            if not lo <= sigma <= hi:
                continue
            top, left = (leaf.area[2], leaf.area[3]) if leaf.area is not None else (0, 0)
            h, w = pred.shape[-2:]  # an area reaching past the image was cropped to it
            mask = _feather(h, w, top, left, height, width).to(x) * strength  # (h, w)
            total[..., top : top + h, left : left + w] += pred * mask
            weight[..., top : top + h, left : left + w] += mask
        return total / weight.clamp(min=1e-37)


def _feather(h: int, w: int, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """1 inside, ramping (t + 1)/8 over the 8 pixels at edges that are not the image border."""
    ramp = (torch.arange(FEATHER) + 1) / FEATHER
    rows, cols = torch.ones(h), torch.ones(w)
    n = min(FEATHER, h)
    if top != 0:
        rows[:n] *= ramp[:n]
    if top + h < height:
        rows[h - n :] *= ramp[:n].flip(0)
    n = min(FEATHER, w)
    if left != 0:
        cols[:n] *= ramp[:n]
    if left + w < width:
        cols[w - n :] *= ramp[:n].flip(0)
    return rows[:, None] * cols[None, :]


def predict(model: Denoiser, value: Conditioning | ConditioningSet) -> Guidance:
    """The GUIDANCE leaf for a CONDITIONING value: a Prediction, or a RegionMix over a set's entries
    (a single full-image entry of strength 1 active throughout is just its Prediction)."""
    entries = entries_of(value)
    if len(entries) == 1 and entries[0].area is None and (entries[0].start, entries[0].end) == (0.0, 1.0):
        return Prediction(model, entries[0].condition)
    f = model.downscale
    leaves = []
    for e in entries:
        area = None
        if e.area is not None:
            h, w, top, left = (max(v // f, 0) for v in e.area)
            area = (max(h, 1), max(w, 1), top, left)
        leaves.append(Prediction(model, e.condition, area=area))
    ranges = tuple((percent_to_sigma(model, e.end), percent_to_sigma(model, e.start)) for e in entries)
    return RegionMix(tuple(leaves), tuple(e.strength for e in entries), ranges)
