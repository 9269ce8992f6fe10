"""Model conventions: every network becomes a σ-space denoiser D(x, σ, cond) → x̂0 with x = x0 + σ·n.

(Seed of this module; the guidance-engine work owns and extends it.)
"""

from __future__ import annotations

import math

import torch


def betas_for_schedule(name: str, timesteps: int) -> torch.Tensor:
    """DDPM β table: 'linear' (Ho et al. 2020), 'scaled_linear' (Stable Diffusion), 'cosine' (Nichol & Dhariwal 2021)."""
    if name == "linear":
        return torch.linspace(1e-4, 0.02, timesteps, dtype=torch.float64)
    if name == "scaled_linear":
        return torch.linspace(0.00085**0.5, 0.012**0.5, timesteps, dtype=torch.float64) ** 2
    if name == "cosine":
        s = 0.008
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        alphas_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = 1 - alphas_bar[1:] / alphas_bar[:-1]
        return betas.clamp(max=0.999)
    raise ValueError(f"unknown beta schedule {name!r}; expected linear, scaled_linear or cosine")


def vp_sigmas(beta_schedule: str, timesteps: int) -> torch.Tensor:
    """σ_i = sqrt((1 − ᾱ_i)/ᾱ_i) for i = 0…T−1 (float32, increasing)."""
    alphas_bar = torch.cumprod(1 - betas_for_schedule(beta_schedule, timesteps), dim=0)
    return ((1 - alphas_bar) / alphas_bar).sqrt().float()
