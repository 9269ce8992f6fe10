"""DPM-Solver with its own step choice: ``dpm_fast`` (fixed orders 3, 3, …) and ``dpm_adaptive``.

Lu et al. 2022, "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in Around
10 Steps" (arXiv 2206.00927), Algorithms 1–2 and §4, in λ = −log σ for a VE model, where the noise
prediction is ε = (x − D)/σ. Both take only σ_0, the last nonzero σ and (``dpm_fast``) the number of
model evaluations from the σ list they are given, as ComfyUI's do, and stop at that last nonzero σ
(they never evaluate at σ = 0). Deterministic (ComfyUI's KSampler runs them with η = 0).
"""

from __future__ import annotations

import math

import torch

from nodes.diffusion.sampler_steps import Callback, Model, Noise, Sampler, _call, _no_noise


def _eps(model: Model, x: torch.Tensor, lam: float) -> torch.Tensor:
    sigma = math.exp(-lam)
    return (x - _call(model, x, sigma)) / sigma


def dpm_solver_step(
    model: Model, x: torch.Tensor, eps: torch.Tensor, lam: float, lam_next: float, order: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One DPM-Solver-k step from λ to λ' given ε at λ (Lu et al. 2022, Algorithm 1 for k = 1, 2, 3).

    Returns (x', x'_low): for k = 3 (r₁ = ⅓, r₂ = ⅔) x'_low is the second-order solution with r₁ = ⅓
    from the same evaluations, the error estimate of DPM-Solver-23; otherwise None.
    """
    h = lam_next - lam
    sigma_next = math.exp(-lam_next)
    x_1 = x - sigma_next * math.expm1(h) * eps
    if order == 1:
        return x_1, None
    r1 = 0.5 if order == 2 else 1 / 3
    s1 = lam + r1 * h
    u1 = x - math.exp(-s1) * math.expm1(r1 * h) * eps
    eps_1 = _eps(model, u1, s1)
    x_2 = x_1 - sigma_next / (2 * r1) * math.expm1(h) * (eps_1 - eps)
    if order == 2:
        return x_2, None
    r2 = 2 / 3
    s2 = lam + r2 * h
    sigma_s2 = math.exp(-s2)
    u2 = x - sigma_s2 * math.expm1(r2 * h) * eps
    u2 = u2 - sigma_s2 * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (eps_1 - eps)
    eps_2 = _eps(model, u2, s2)
    x_3 = x_1 - sigma_next / r2 * (math.expm1(h) / h - 1) * (eps_2 - eps)
    return x_3, x_2


def _range(sigmas: torch.Tensor) -> tuple[float, float]:
    """(λ_start, λ_end) from σ_0 and the last nonzero σ."""
    sigma_min = float(sigmas[-1]) if float(sigmas[-1]) > 0 else float(sigmas[-2])
    return -math.log(float(sigmas[0])), -math.log(sigma_min)


def sample_dpm_fast(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
) -> torch.Tensor:
    """DPM-Solver-fast: n = len(σ) − 1 evaluations on ⌊n/3⌋ + 1 steps uniform in λ from σ_0 to the
    last nonzero σ, orders 3, 3, …, 3 then n mod 3 (or 2, 1 when 3 divides n) (Lu et al. 2022, §3.4)."""
    nfe = len(sigmas) - 1
    if nfe < 1:
        return x
    lam_start, lam_end = _range(sigmas)
    m = nfe // 3 + 1
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    lams = torch.linspace(lam_start, lam_end, m + 1, dtype=torch.float64).tolist()
    for i, order in enumerate(orders):
        sigma = math.exp(-lams[i])
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        x, _ = dpm_solver_step(model, x, (x - denoised) / sigma, lams[i], lams[i + 1], order)
    return x


def sample_dpm_adaptive(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    accept_safety: float = 0.81,
) -> torch.Tensor:
    """DPM-Solver-23 with adaptive steps in λ from σ_0 to the last nonzero σ (Lu et al. 2022, Alg. 2).

    Error E = ‖(x_low − x_high)/δ‖/√N with δ = max(atol, rtol·max(|x_low|, |x_prev|)); the step is
    scaled by 1 + atan(E^{−1/3} − 1) (k-diffusion's PID controller with its default integral-only
    gains) and accepted when that factor is ≥ ``accept_safety``. As in ComfyUI the error norm spans
    the whole batch, so a sample's steps depend on the other samples in its batch.
    """
    if len(sigmas) < 2:
        return x
    lam, lam_end = _range(sigmas)
    h, x_prev, step = h_init, x, 0
    eps: torch.Tensor | None = None
    while lam < lam_end - 1e-5:
        lam_next = min(lam_end, lam + h)
        if eps is None:
            sigma = math.exp(-lam)
            denoised = _call(model, x, sigma)
            if callback:
                callback(step, x, sigma, denoised)
            eps = (x - denoised) / sigma
        x_high, x_low = dpm_solver_step(model, x, eps, lam, lam_next, order=3)
        assert x_low is not None
        delta = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
        error = float(torch.linalg.norm((x_low - x_high) / delta)) / math.sqrt(x.numel())
        factor = 1 + math.atan((1 / (error + 1e-8)) ** (1 / 3) - 1)
        if factor >= accept_safety:
            x_prev, x, lam, eps, step = x_low, x_high, lam_next, None, step + 1
        h *= factor
    return x


DPM_SOLVER_SAMPLERS: dict[str, Sampler] = {"dpm_fast": sample_dpm_fast, "dpm_adaptive": sample_dpm_adaptive}
