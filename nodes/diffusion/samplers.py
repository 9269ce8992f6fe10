"""Samplers over a σ-space denoiser ``model(x, σ) → x̂0`` with ``x = x0 + σ·n``; one flat loop each.

Every sampler takes the model, the starting sample ``x`` (already scaled to σ_0), the σ list (ending
in 0), an optional ``noise()`` that returns fresh standard normal noise shaped like ``x`` (per-sample
seeded: see :class:`PerSampleNoise`) and an optional ``callback(i, x, σ, x̂0)`` called once per step.
``d = (x − D)/σ`` is the probability-flow ODE derivative dx/dσ (Karras et al. 2022, eq. 3 in VE form).
Names are ComfyUI's, so workflows read the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from nodes.diffusion.sampler_steps import Callback, Model, Noise, Sampler, _call, _no_noise, ancestral_step
from nodes.diffusion.samplers_dpm_solver import DPM_SOLVER_SAMPLERS
from nodes.diffusion.samplers_more import MORE_SAMPLERS, MORE_STOCHASTIC
from nodes.diffusion.samplers_multistep import MULTISTEP_SAMPLERS
from nodes.diffusion.samplers_sde import SDE_SAMPLERS, SDE_STOCHASTIC


class PerSampleNoise:
    """Standard normal noise drawn per sample from its own generator seeded ``seed + index``.

    A sample's noise sequence depends only on its seed, never on its position or on the batch size.
    Generators live on the CPU so that a seed gives the same noise on every device.
    """

    def __init__(self, seeds: Sequence[int], shape: Sequence[int], device: torch.device, dtype: torch.dtype):
        self.generators = [torch.Generator().manual_seed(int(s) % 2**64) for s in seeds]
        self.shape, self.device, self.dtype = tuple(shape), device, dtype

    def __call__(self) -> torch.Tensor:
        draws = [torch.randn(self.shape, generator=g) for g in self.generators]  # each (C, H, W)
        return torch.stack(draws).to(self.device, self.dtype)  # (B, C, H, W)


Renoiser = Callable[[], torch.Tensor | None] | None


def _renoised(renoise: Renoiser, denoised: torch.Tensor) -> torch.Tensor:
    """The prediction a step re-noises with: CFG++'s D_u for the last model call, else ``denoised``."""
    value = renoise() if renoise is not None else None
    return denoised if value is None else value


def sample_euler(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    renoise: Renoiser = None,
) -> torch.Tensor:
    """Euler on the probability-flow ODE, with optional churn (Karras et al. 2022, Algorithm 2).

    With ``renoise`` (CFG++), the step leaves x̂0 along the re-noising prediction's direction."""
    n = len(sigmas) - 1
    for i in range(n):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        gamma = min(s_churn / n, 2**0.5 - 1) if s_churn > 0 and s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = x + noise() * s_noise * math.sqrt(sigma_hat**2 - sigma**2)
        denoised = _call(model, x, sigma_hat)
        if callback:
            callback(i, x, sigma_hat, denoised)
        direction = _renoised(renoise, denoised)
        if direction is denoised:
            x = x + (x - denoised) / sigma_hat * (sigma_next - sigma_hat)
        else:  # CFG++: x' = x̂0 + σ'·(x − D_u)/σ
            x = denoised + (x - direction) / sigma_hat * sigma_next
    return x


def sample_euler_ancestral(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    renoise: Renoiser = None,
) -> torch.Tensor:
    """Euler to σ_down, then fresh noise of std σ_up (ancestral sampling, Song et al. 2021 / k-diffusion).

    With ``renoise`` (CFG++), the step to σ_down follows the re-noising prediction's direction."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        down, up = ancestral_step(sigma, sigma_next, eta)
        direction = _renoised(renoise, denoised)
        if direction is denoised:
            x = x + (x - denoised) / sigma * (down - sigma)
        else:  # CFG++: x' = x̂0 + σ_down·(x − D_u)/σ
            x = denoised + (x - direction) / sigma * down
        if up > 0:
            x = x + noise() * s_noise * up
    return x


def sample_heun(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
) -> torch.Tensor:
    """Heun's 2nd-order method (Karras et al. 2022, Algorithm 1); Euler on the last step to σ = 0."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        d = (x - denoised) / sigma
        x_euler = x + d * (sigma_next - sigma)
        if sigma_next == 0:
            x = x_euler
            continue
        d_next = (x_euler - _call(model, x_euler, sigma_next)) / sigma_next
        x = x + (d + d_next) / 2 * (sigma_next - sigma)
    return x


def sample_dpm_2(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
) -> torch.Tensor:
    """DPM-Solver-2-style midpoint step in log σ (Lu et al. 2022; Karras et al. 2022 §3)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        d = (x - denoised) / sigma
        if sigma_next == 0:
            x = x + d * (sigma_next - sigma)
            continue
        sigma_mid = math.exp((math.log(sigma) + math.log(sigma_next)) / 2)
        x_mid = x + d * (sigma_mid - sigma)
        d_mid = (x_mid - _call(model, x_mid, sigma_mid)) / sigma_mid
        x = x + d_mid * (sigma_next - sigma)
    return x


def lms_coefficient(sigmas: Sequence[float], i: int, j: int, order: int) -> float:
    """∫_{σ_i}^{σ_{i+1}} of the Lagrange basis polynomial of node σ_{i−j} over nodes σ_i … σ_{i−order+1}."""
    nodes = [sigmas[i - k] for k in range(order)]
    others = [s for k, s in enumerate(nodes) if k != j]
    basis = np.polynomial.Polynomial([1.0])
    for s in others:  # ∏_{k≠j} (τ − σ_k)/(σ_j − σ_k)
        basis = basis * np.polynomial.Polynomial([-s, 1.0]) / (nodes[j] - s)
    antiderivative = basis.integ()
    return float(antiderivative(sigmas[i + 1]) - antiderivative(sigmas[i]))


def sample_lms(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    order: int = 4,
) -> torch.Tensor:
    """Linear multistep in σ over the last ≤ ``order`` derivatives, coefficients integrated exactly."""
    sig = [float(s) for s in sigmas]
    history: list[torch.Tensor] = []  # newest first
    for i in range(len(sig) - 1):
        denoised = _call(model, x, sig[i])
        if callback:
            callback(i, x, sig[i], denoised)
        history.insert(0, (x - denoised) / sig[i])
        del history[order:]
        cur = min(i + 1, order)
        x = x + sum(lms_coefficient(sig, i, j, cur) * history[j] for j in range(cur))
    return x


def sample_dpmpp_2m(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
) -> torch.Tensor:
    """DPM-Solver++(2M), multistep in λ = −log σ (Lu et al. 2022, "DPM-Solver++", Algorithm 2)."""
    old_denoised: torch.Tensor | None = None
    h_last = 0.0
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma / sigma_next)
        target = denoised
        if old_denoised is not None:
            r = h_last / h
            target = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigma_next / sigma) * x - math.expm1(-h) * target
        old_denoised, h_last = denoised, h
    return x


def sample_dpmpp_2m_sde(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """SDE-DPM-Solver++(2M), midpoint correction (Lu et al. 2022, "DPM-Solver++", §4 and App. B)."""
    old_denoised: torch.Tensor | None = None
    h_last = 0.0
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma / sigma_next)
        eta_h = eta * h
        gain = -math.expm1(-h - eta_h)  # 1 − e^{−(1+η)h}
        x = (sigma_next / sigma) * math.exp(-eta_h) * x + gain * denoised
        if old_denoised is not None:
            x = x + 0.5 * gain * (h / h_last) * (denoised - old_denoised)
        if eta > 0:
            x = x + noise() * sigma_next * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise
        old_denoised, h_last = denoised, h
    return x


def sample_dpmpp_sde(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r: float = 0.5,
) -> torch.Tensor:
    """DPM-Solver++ stochastic singlestep, 2 stages with r = ½ (Lu et al. 2022; k-diffusion's dpmpp_sde).

    The two stages share one Brownian path in σ (as k-diffusion's Brownian tree does): the full step's
    noise contains the half step's, ``W(σ→σ') = W(σ→σ_s) + W(σ_s→σ')``.
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        sigma_mid = sigma * (sigma_next / sigma) ** r  # λ_s = λ + r·h with λ = −log σ
        w_mid = noise() * math.sqrt(sigma - sigma_mid)  # Brownian increment over [σ_s, σ]
        w_full = w_mid + noise() * math.sqrt(sigma_mid - sigma_next)  # … over [σ', σ]
        down, up = ancestral_step(sigma, sigma_mid, eta)
        x_mid = (down / sigma) * x + (1 - down / sigma) * denoised  # 1st-order DPM-Solver++ to σ_down
        x_mid = x_mid + w_mid / math.sqrt(sigma - sigma_mid) * s_noise * up
        denoised_mid = _call(model, x_mid, sigma_mid)
        fac = 1 / (2 * r)
        target = (1 - fac) * denoised + fac * denoised_mid
        down, up = ancestral_step(sigma, sigma_next, eta)
        x = (down / sigma) * x + (1 - down / sigma) * target
        x = x + w_full / math.sqrt(sigma - sigma_next) * s_noise * up
    return x


def sample_ddim(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    renoise: Renoiser = None,
) -> torch.Tensor:
    """DDIM with η = 0 (Song et al. 2021, eq. 12) in VE coordinates: x' = D + σ'·(x − D)/σ.

    The same update as Euler on the probability-flow ODE, as ComfyUI's alias says. With ``renoise``
    (CFG++), x' = D + σ'·(x − D_u)/σ.
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        x = denoised + (sigma_next / sigma) * (x - _renoised(renoise, denoised))
    return x


def sample_ddpm(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
) -> torch.Tensor:
    """Ancestral DDPM posterior step (Ho et al. 2020, eq. 6–7), written in VE coordinates.

    Scaling a VP chain by 1/√ᾱ gives x_t = x_{t−1} + √(σ_t² − σ_{t−1}²)·ξ, whose posterior given x0 is
    N(x0 + (σ'²/σ²)(x − x0), σ'²(σ² − σ'²)/σ²); x0 is replaced by D.
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        ratio = (sigma_next / sigma) ** 2
        x = denoised + ratio * (x - denoised)
        if sigma_next > 0:
            x = x + noise() * sigma_next * math.sqrt(1 - ratio)
    return x


SAMPLERS: dict[str, Sampler] = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpm_2": sample_dpm_2,
    "lms": sample_lms,
    "dpmpp_sde": sample_dpmpp_sde,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    **MORE_SAMPLERS,
    **MULTISTEP_SAMPLERS,
    **DPM_SOLVER_SAMPLERS,
    **SDE_SAMPLERS,
}
STOCHASTIC: frozenset[str] = (
    frozenset({"euler_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "ddpm"}) | MORE_STOCHASTIC | SDE_STOCHASTIC
)
RENOISING: frozenset[str] = frozenset({"euler", "euler_ancestral", "ddim"})  # samplers that run CFG++
MULTISTEP: frozenset[str] = frozenset(
    {"lms", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "res_multistep", "res_multistep_ancestral"}
    | {"gradient_estimation", "dpmpp_2m_sde_heun", "er_sde"}
    | set(MULTISTEP_SAMPLERS)
)  # reuse past x̂0 or d
