"""Stochastic exponential-integrator samplers: SEEDS-2 (and exponential Heun), SEEDS-3, ER-SDE.

Same contract as :mod:`nodes.diffusion.samplers` (σ-space denoiser, VE coordinates, one flat loop
each). In λ = −log σ (the half log-SNR of a VE model, so α = 1) with h = λ' − λ, ĥ = (1+η)h,
hφ₁(z) = e^z − 1 and hφ₂(z) = (e^z − 1 − z)/z. Their last step to σ = 0 returns the denoised
prediction. Defaults are ComfyUI's (η = 1).
"""

from __future__ import annotations

import math

import torch

from nodes.diffusion.sampler_steps import Callback, Model, Noise, Sampler, _call, _no_noise


def _h_phi_2(z: float) -> float:
    return (math.expm1(z) - z) / z


def sample_seeds_2(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r: float = 0.5,
    solver_type: str = "phi_1",
) -> torch.Tensor:
    """SEEDS-2, data prediction (Gonzalez et al. 2023, "SEEDS: Exponential SDE Solvers for Fast
    High-Quality Sampling from Diffusion Models", Alg. 2): a stage at λ + r·h, then the full step
    with D_d = D + (D₂ − D)/(2r) ('phi_1'), or with weights b₂ = hφ₂(−ĥ)/r, b₁ = hφ₁(−ĥ) − b₂ on
    D and D₂ ('phi_2'); the two stages share one Brownian path."""
    if solver_type not in ("phi_1", "phi_2"):
        raise ValueError(f"solver_type must be 'phi_1' or 'phi_2', got {solver_type!r}")
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma / sigma_next)
        h_eta = (1 + eta) * h
        sigma_1 = sigma * math.exp(-r * h)
        x_2 = (sigma_1 / sigma) * math.exp(-r * h * eta) * x - math.expm1(-r * h_eta) * denoised
        path = torch.zeros_like(x)
        if eta > 0:
            path = math.sqrt(-math.expm1(-2 * r * h * eta)) * noise()
            x_2 = x_2 + path * sigma_1 * s_noise
        denoised_2 = _call(model, x_2, sigma_1)
        x = (sigma_next / sigma) * math.exp(-h * eta) * x
        if solver_type == "phi_1":
            x = x - math.expm1(-h_eta) * (denoised + (denoised_2 - denoised) / (2 * r))
        else:
            b_2 = _h_phi_2(-h_eta) / r
            x = x - ((math.expm1(-h_eta) - b_2) * denoised + b_2 * denoised_2)
        if eta > 0:
            decay = (r - 1) * h * eta
            path = path * math.exp(decay) + math.sqrt(-math.expm1(2 * decay)) * noise()
            x = x + path * sigma_next * s_noise
    return x


def sample_seeds_3(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r_1: float = 1 / 3,
    r_2: float = 2 / 3,
) -> torch.Tensor:
    """SEEDS-3, data prediction (Gonzalez et al. 2023, Alg. 3): stages at λ + r₁h and λ + r₂h with
    weights a₂ = (r₂/r₁)·hφ₂(−r₂ĥ), a₁ = hφ₁(−r₂ĥ) − a₂, then b₃ = hφ₂(−ĥ)/r₂, b₁ = hφ₁(−ĥ) − b₃."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma / sigma_next)
        h_eta = (1 + eta) * h
        sigma_1, sigma_2 = sigma * math.exp(-r_1 * h), sigma * math.exp(-r_2 * h)
        x_2 = (sigma_1 / sigma) * math.exp(-r_1 * h * eta) * x - math.expm1(-r_1 * h_eta) * denoised
        path = torch.zeros_like(x)
        if eta > 0:
            path = math.sqrt(-math.expm1(-2 * r_1 * h * eta)) * noise()
            x_2 = x_2 + path * sigma_1 * s_noise
        denoised_2 = _call(model, x_2, sigma_1)
        a_2 = r_2 / r_1 * _h_phi_2(-r_2 * h_eta)
        a_1 = math.expm1(-r_2 * h_eta) - a_2
        x_3 = (sigma_2 / sigma) * math.exp(-r_2 * h * eta) * x - (a_1 * denoised + a_2 * denoised_2)
        if eta > 0:
            decay = (r_1 - r_2) * h * eta
            path = path * math.exp(decay) + math.sqrt(-math.expm1(2 * decay)) * noise()
            x_3 = x_3 + path * sigma_2 * s_noise
        denoised_3 = _call(model, x_3, sigma_2)
        b_3 = _h_phi_2(-h_eta) / r_2
        b_1 = math.expm1(-h_eta) - b_3
        x = (sigma_next / sigma) * math.exp(-h * eta) * x - (b_1 * denoised + b_3 * denoised_3)
        if eta > 0:
            decay = (r_2 - 1) * h * eta
            path = path * math.exp(decay) + math.sqrt(-math.expm1(2 * decay)) * noise()
            x = x + path * sigma_next * s_noise
    return x


def sample_exp_heun_2_x0(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
) -> torch.Tensor:
    """Exponential Heun in data prediction: SEEDS-2 with r = 1, η = 0 and the φ₂ weights (a
    DPM-Solver++(1) predictor to σ', D there, then b₁·D + b₂·D'); two evaluations per step."""
    return sample_seeds_2(model, x, sigmas, callback=callback, eta=0.0, r=1.0, solver_type="phi_2")


def sample_exp_heun_2_x0_sde(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """:func:`sample_exp_heun_2_x0` with SDE noise (SEEDS-2, r = 1, η = 1, φ₂ weights)."""
    return sample_seeds_2(
        model, x, sigmas, noise=noise, callback=callback, eta=eta, s_noise=s_noise, r=1.0, solver_type="phi_2"
    )


def er_sde_noise_scaler(lam: torch.Tensor) -> torch.Tensor:
    """ER-SDE's default noise scale function f(λ) = λ·(e^{λ^0.3} + 10) (Cui et al. 2023, §5)."""
    return lam * ((lam**0.3).exp() + 10.0)


def sample_er_sde(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    s_noise: float = 1.0,
    max_stage: int = 3,
) -> torch.Tensor:
    """ER-SDE-Solver-3 (Cui et al. 2023, "Elucidating the Solution Space of Extended Reverse-Time
    SDEs for Diffusion Models", eq. 16–18), in VE form where the paper's λ is σ.

    With r = f(σ')/f(σ): x' = r·x + (1 − r)·D + (Δσ + f(σ')·∫ dλ/f)·D′ + (Δσ²/2 + f(σ')·∫ (λ − σ)/f dλ)·D″
    + √(σ'² − σ²r²)·ξ, the integrals by a 200-point Riemann sum and D′, D″ divided differences of
    past predictions (stage ≤ ``max_stage`` and ≤ the step number).
    """
    old_denoised: torch.Tensor | None = None
    old_slope: torch.Tensor | None = None
    ticks = torch.arange(200, dtype=torch.float64)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        stage = min(max_stage, i + 1)
        if sigma_next == 0:
            x = denoised
            old_denoised = denoised
            continue
        f = er_sde_noise_scaler(torch.tensor([sigma, sigma_next], dtype=torch.float64))
        ratio, f_next = float(f[1] / f[0]), float(f[1])
        x = ratio * x + (1 - ratio) * denoised
        if stage >= 2 and old_denoised is not None:
            dt = sigma_next - sigma
            step = -dt / 200
            points = sigma_next + ticks * step  # from σ' up towards σ
            scaled = er_sde_noise_scaler(points)
            slope = (denoised - old_denoised) / (sigma - float(sigmas[i - 1]))
            x = x + (dt + float((1 / scaled).sum()) * step * f_next) * slope
            if stage >= 3 and old_slope is not None:
                moment = float(((points - sigma) / scaled).sum()) * step
                curvature = (slope - old_slope) / ((sigma - float(sigmas[i - 2])) / 2)
                x = x + (dt**2 / 2 + moment * f_next) * curvature
            old_slope = slope
        if s_noise > 0:  # drawn even when the spread rounds to ≤ 0, as ComfyUI does
            x = x + noise() * s_noise * math.sqrt(max(sigma_next**2 - sigma**2 * ratio**2, 0.0))
        old_denoised = denoised
    return x


SDE_SAMPLERS: dict[str, Sampler] = {
    "exp_heun_2_x0": sample_exp_heun_2_x0,
    "exp_heun_2_x0_sde": sample_exp_heun_2_x0_sde,
    "er_sde": sample_er_sde,
    "seeds_2": sample_seeds_2,
    "seeds_3": sample_seeds_3,
}
SDE_STOCHASTIC: frozenset[str] = frozenset(SDE_SAMPLERS) - {"exp_heun_2_x0"}
