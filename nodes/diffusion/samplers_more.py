"""More of ComfyUI's samplers: ancestral and SDE variants, LCM, Heun++, RES and gradient estimation.

Same contract as :mod:`nodes.diffusion.samplers`: ``sampler(model, x, sigmas, *, noise, callback)``
over a σ-space denoiser ``model(x, σ) → x̂0`` (VE coordinates, ``x = x0 + σ·n``), one flat loop each.
Exponential-integrator samplers work in λ = −log σ, the half log-SNR of a VE model, so their
"α_t" factor is 1. Names and defaults are ComfyUI's (η = 1 for the ancestral and SDE ones).
"""

from __future__ import annotations

import math

import torch

from nodes.diffusion.sampler_steps import Callback, Model, Noise, Sampler, _call, _no_noise, ancestral_step


def sample_dpm_2_ancestral(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver-2 midpoint step to σ_down, then noise of std σ_up (Lu et al. 2022; k-diffusion)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        down, up = ancestral_step(sigma, sigma_next, eta)
        d = (x - denoised) / sigma
        if down == 0:
            x = x + d * (down - sigma)
            continue
        sigma_mid = math.exp((math.log(sigma) + math.log(down)) / 2)
        x_mid = x + d * (sigma_mid - sigma)
        d_mid = (x_mid - _call(model, x_mid, sigma_mid)) / sigma_mid
        x = x + d_mid * (down - sigma)
        if up > 0:
            x = x + noise() * s_noise * up
    return x


def sample_dpmpp_2s_ancestral(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver++(2S) singlestep to σ_down with r = ½, then noise σ_up (Lu et al. 2022, Alg. 1)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        down, up = ancestral_step(sigma, sigma_next, eta)
        if down == 0:
            x = denoised
        else:
            h = math.log(sigma / down)  # λ_down − λ
            sigma_mid = sigma * math.exp(-h / 2)  # λ_s = λ + h/2
            x_mid = (sigma_mid / sigma) * x - math.expm1(-h / 2) * denoised
            x = (down / sigma) * x - math.expm1(-h) * _call(model, x_mid, sigma_mid)
        if up > 0:
            x = x + noise() * s_noise * up
    return x


def sample_dpmpp_2m_sde_heun(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """SDE-DPM-Solver++(2M) with the Heun-type correction (Lu et al. 2022, "DPM-Solver++", App. B).

    As ``dpmpp_2m_sde`` (midpoint) except the multistep term: with ĥ = (1+η)h it adds
    ((e^{−ĥ} − 1)/ĥ + 1)·(D − D_prev)/r instead of ½(1 − e^{−ĥ})·(D − D_prev)/r.
    """
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
        h_eta = (1 + eta) * h
        x = (sigma_next / sigma) * math.exp(-eta * h) * x - math.expm1(-h_eta) * denoised
        if old_denoised is not None:
            phi_2 = math.expm1(-h_eta) / h_eta + 1  # ĥ·φ₂(ĥ), φ₂(z) = (e^{−z} − 1 + z)/z²
            x = x + phi_2 * (h / h_last) * (denoised - old_denoised)
        if eta > 0:
            x = x + noise() * sigma_next * math.sqrt(-math.expm1(-2 * eta * h)) * s_noise
        old_denoised, h_last = denoised, h
    return x


def sample_dpmpp_3m_sde(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """SDE-DPM-Solver++(3M): third-order multistep in λ = −log σ with noise (Lu et al. 2022, §4–5).

    With ĥ = (1+η)h, φ₂ = (e^{−ĥ} − 1)/ĥ + 1 and φ₃ = φ₂/ĥ − ½, the first and second divided
    differences of D over the last three λ nodes enter as ``φ₂·D₁ − φ₃·D₂`` (2M on the second step).
    """
    denoised_1: torch.Tensor | None = None
    denoised_2: torch.Tensor | None = None
    h_1 = h_2 = 0.0
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        h = h_1
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma / sigma_next)
            h_eta = (1 + eta) * h
            x = (sigma_next / sigma) * math.exp(-eta * h) * x - math.expm1(-h_eta) * denoised
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if denoised_2 is not None and denoised_1 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
            elif denoised_1 is not None:
                x = x + phi_2 * (denoised - denoised_1) * (h / h_1)
            if eta > 0:
                x = x + noise() * sigma_next * math.sqrt(-math.expm1(-2 * eta * h)) * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def sample_lcm(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
) -> torch.Tensor:
    """Multistep consistency sampling: jump to x̂0, re-noise to σ' (Song et al. 2023, Algorithm 1)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        x = denoised
        if sigma_next > 0:
            x = x + noise() * sigma_next
    return x


def sample_heunpp2(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
) -> torch.Tensor:
    """Heun++: Euler predictions to the next two σ, slopes averaged with weights σ_k/(3σ_0).

    From sd-webui-samplers-scheduler (Carzit, MIT) as ComfyUI ships it: the slope is
    d' = (1 − w₂ − w₃)·d + w₂·d₂ + w₃·d₃ with w_k = σ_{i+k−1}/(3σ_0); two σ from the end it uses
    two points with weight σ_{i+1}/(2σ_0); the last step is Euler. Up to 3 evaluations per step.
    """
    sig = [float(s) for s in sigmas]
    n, end = len(sig) - 1, sig[-1]
    for i in range(n):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        d = (x - denoised) / sigma
        dt = sigma_next - sigma
        if sigma_next == end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = (x_2 - _call(model, x_2, sigma_next)) / sigma_next
        if sig[i + 2] == end:
            w2 = sigma_next / (2 * sig[0])
            x = x + ((1 - w2) * d + w2 * d_2) * dt
            continue
        x_3 = x_2 + d_2 * (sig[i + 2] - sigma_next)
        d_3 = (x_3 - _call(model, x_3, sig[i + 2])) / sig[i + 2]
        w2, w3 = sigma_next / (3 * sig[0]), sig[i + 2] / (3 * sig[0])
        x = x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt
    return x


def sample_res_multistep(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    eta: float = 0.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """RES second-order exponential multistep (Zhang et al. 2023, arXiv 2308.02157, eq. for "RES-2M").

    In λ = −log σ toward σ_down: x' = e^{−h}·x + h·(b₁·D + b₂·D_prev) with b₁ = φ₁(−h) − φ₂(−h)/c₂,
    b₂ = φ₂(−h)/c₂, c₂ = (λ_prev − λ_prevdown)/h, φ₁(z) = (e^z − 1)/z, φ₂(z) = (φ₁(z) − 1)/z. The
    first step and the last (to σ = 0) are Euler. ``eta > 0`` adds ancestral noise (the ComfyUI
    ``res_multistep_ancestral`` uses η = 1).
    """
    old_denoised: torch.Tensor | None = None
    old_down = 0.0
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        down, up = ancestral_step(sigma, sigma_next, eta)
        if down == 0 or old_denoised is None:
            x = x + (x - denoised) / sigma * (down - sigma)
        else:
            h = math.log(sigma / down)
            c2 = (math.log(old_down) - math.log(float(sigmas[i - 1]))) / h
            phi_1 = math.expm1(-h) / -h
            phi_2 = (phi_1 - 1) / -h
            b1, b2 = phi_1 - phi_2 / c2, phi_2 / c2
            x = math.exp(-h) * x + h * (b1 * denoised + b2 * old_denoised)
        if up > 0:
            x = x + noise() * s_noise * up
        old_denoised, old_down = denoised, down
    return x


def sample_res_multistep_ancestral(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """:func:`sample_res_multistep` with ancestral noise, η = 1 by default."""
    return sample_res_multistep(model, x, sigmas, noise=noise, callback=callback, eta=eta, s_noise=s_noise)


def sample_gradient_estimation(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    ge_gamma: float = 2.0,
) -> torch.Tensor:
    """Euler plus a momentum-like correction (γ − 1)(d − d_prev)·dt (Permenter & Yuan 2024, Alg. 2)."""
    old_d: torch.Tensor | None = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _call(model, x, sigma)
        if callback:
            callback(i, x, sigma, denoised)
        d = (x - denoised) / sigma
        if sigma_next == 0:
            x = denoised
        else:
            x = x + d * (sigma_next - sigma)
            if old_d is not None:
                x = x + (ge_gamma - 1) * (d - old_d) * (sigma_next - sigma)
        old_d = d
    return x


MORE_SAMPLERS: dict[str, Sampler] = {
    "heunpp2": sample_heunpp2,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
    "dpmpp_2m_sde_heun": sample_dpmpp_2m_sde_heun,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    "lcm": sample_lcm,
    "res_multistep": sample_res_multistep,
    "res_multistep_ancestral": sample_res_multistep_ancestral,
    "gradient_estimation": sample_gradient_estimation,
}
MORE_STOCHASTIC: frozenset[str] = frozenset(
    {
        "dpm_2_ancestral",
        "dpmpp_2s_ancestral",
        "dpmpp_2m_sde_heun",
        "dpmpp_3m_sde",
        "lcm",
        "res_multistep_ancestral",
    }
)
