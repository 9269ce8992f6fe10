"""What every sampler shares: the model, noise and callback types, one model call, the ancestral split.

Conventions as in :mod:`nodes.diffusion.samplers`: a σ-space denoiser ``model(x, σ) → x̂0`` with
``x = x0 + σ·n``; σ lists are plain floats, decreasing, ending in 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Noise = Callable[[], torch.Tensor]
Callback = Callable[[int, torch.Tensor, float, torch.Tensor], None] | None
Sampler = Callable[..., torch.Tensor]


def _no_noise() -> torch.Tensor:
    raise ValueError("this sampler is stochastic and needs a noise source")


def _sigma_vec(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return x.new_full((x.shape[0],), sigma)  # (B,)


def _call(model: Model, x: torch.Tensor, sigma: float) -> torch.Tensor:
    return model(x, _sigma_vec(x, sigma))


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """(σ_down, σ_up): σ_up = min(σ', η·√(σ'²(σ² − σ'²)/σ²)), σ_down = √(σ'² − σ_up²)."""
    if sigma_next == 0 or eta == 0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - up**2), up
