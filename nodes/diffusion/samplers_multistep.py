"""ComfyUI's Adams-type multistep samplers: iPNDM, variable-step iPNDM, DEIS and UniPC.

Same contract as :mod:`nodes.diffusion.samplers` (σ-space denoiser, VE coordinates, one flat loop
each). The linear-multistep ones integrate ``dx/dσ = d = (x − D)/σ`` with the last few ``d`` values;
their final step to σ = 0 returns the denoised prediction, as ComfyUI's do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from nodes.diffusion.sampler_steps import Callback, Model, Noise, Sampler, _call, _no_noise

Warp = Callable[[np.ndarray], np.ndarray]
_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(32)
_IPNDM_COEFFICIENTS = (  # Adams–Bashforth, equal steps, orders 1–4
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)


def multistep_weights(nodes: Sequence[float], start: float, end: float, warp: Warp) -> list[float]:
    """∫_start^end L_j(τ(σ)) dσ for each Lagrange basis polynomial L_j over the warped nodes τ(σ_j).

    Nodes newest first. With τ = identity these are the exact variable-step Adams–Bashforth (LMS)
    weights; DEIS interpolates in a VP time τ instead. 32-point Gauss–Legendre in σ.
    """
    sig = (end - start) / 2 * _GAUSS_NODES + (end + start) / 2  # quadrature points in σ
    taus, tau_nodes = warp(sig), warp(np.asarray(nodes, dtype=np.float64))
    weights = []
    for j, tj in enumerate(tau_nodes):
        basis = np.ones_like(sig)
        for k, tk in enumerate(tau_nodes):
            if k != j:
                basis = basis * (taus - tk) / (tj - tk)
        weights.append(float((end - start) / 2 * np.sum(_GAUSS_WEIGHTS * basis)))
    return weights


def deis_time(
    sigma: np.ndarray, sigma_min: float = 0.002, sigma_max: float = 80.0, eps: float = 1e-3
) -> np.ndarray:
    """DEIS's VP time of σ for the VP-SDE that EDM's default range (σ ∈ [0.002, 80]) defines.

    β(t) = β₀ + β_d·t with log(1 + σ²) = β₀t + β_d t²/2, solved for t (Zhang & Chen 2023, App. of
    "Fast Sampling of Diffusion Models with Exponential Integrator"); ComfyUI fixes this range for
    every model, so the same does here.
    """
    beta_d = 2 * (math.log(sigma_min**2 + 1) / eps - math.log(sigma_max**2 + 1)) / (eps - 1)
    beta_0 = math.log(sigma_max**2 + 1) - beta_d / 2
    return (np.sqrt(beta_0**2 + 2 * beta_d * np.log1p(sigma**2)) - beta_0) / beta_d


def _identity(sigma: np.ndarray) -> np.ndarray:
    return sigma


def _adams(
    model: Model, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback, max_order: int, variant: str
) -> torch.Tensor:
    sig = [float(s) for s in sigmas]
    history: list[torch.Tensor] = []  # d values, newest first
    for i in range(len(sig) - 1):
        denoised = _call(model, x, sig[i])
        if callback:
            callback(i, x, sig[i], denoised)
        history.insert(0, (x - denoised) / sig[i])
        del history[max_order:]
        order = min(i + 1, max_order)
        if sig[i + 1] == 0:
            x = denoised
            continue
        if variant == "ipndm":
            dt = sig[i + 1] - sig[i]
            weights = [dt * c for c in _IPNDM_COEFFICIENTS[order - 1]]
        else:
            warp = deis_time if variant == "deis" else _identity
            weights = multistep_weights(sig[i - order + 1 : i + 1][::-1], sig[i], sig[i + 1], warp)
        x = x + sum(w * d for w, d in zip(weights, history, strict=False))
    return x


def sample_ipndm(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
) -> torch.Tensor:
    """Improved PNDM: Adams–Bashforth of order ≤ 4 on d with equal-step coefficients
    (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator", iPNDM)."""
    return _adams(model, x, sigmas, callback, max_order=4, variant="ipndm")


def sample_ipndm_v(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
) -> torch.Tensor:
    """iPNDM with variable-step Adams–Bashforth coefficients of order ≤ 4 in σ
    (Zhou et al. 2024, "Fast ODE-based Sampling for Diffusion Models in Around 5 Steps", iPNDM-v)."""
    return _adams(model, x, sigmas, callback, max_order=4, variant="ipndm_v")


def sample_deis(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
) -> torch.Tensor:
    """DEIS-tAB of order ≤ 3: d interpolated by a polynomial in VP time, integrated over σ
    (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator", eq. 15)."""
    return _adams(model, x, sigmas, callback, max_order=3, variant="deis")


UNIPC_FINAL_SIGMA = 0.001
"""UniPC's data-prediction form cannot step to σ = 0 (h = ∞): a final 0 is replaced by this σ."""


def sample_uni_pc(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
    variant: str = "bh1",
    max_order: int = 3,
) -> torch.Tensor:
    """UniPC multistep predictor–corrector on the data prediction (Zhao et al. 2023, Algorithms 2–3).

    In λ = −log σ with h = λ_t − λ_0, r_k = (λ_k − λ_0)/h and D₁,k = (D_k − D_0)/r_k:
    x̃ = (σ_t/σ_0)·x − (e^{−h} − 1)·D_0, predictor x_t = x̃ − B(h)·Σ ρᵖ_k D₁,k, corrector (with the
    model at the predicted point, reused as the next step's history) x_t = x̃ − B(h)·(Σ ρᶜ_k D₁,k +
    ρᶜ_K (D_t − D_0)). ρ solve R·ρ = b with R_ik = r_k^{i−1}, b_i = i!·φ_{i+1}(−h)·(−h)/B(h);
    B(h) = −h ('bh1') or e^{−h} − 1 ('bh2'). Order min(3, steps − 1), lowered over the last steps,
    no corrector on the final step; the σ list ending in 0 ends at ``UNIPC_FINAL_SIGMA`` instead.
    """
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"UniPC variant must be 'bh1' or 'bh2', got {variant!r}")
    sig = [float(s) for s in sigmas]
    if sig[-1] == 0:
        sig[-1] = UNIPC_FINAL_SIGMA
    steps = len(sig) - 1
    if steps < 1:
        return x
    order = max(1, min(max_order, steps - 1))
    denoised = _call(model, x, sig[0])
    if callback:
        callback(0, x, sig[0], denoised)
    history: list[tuple[float, torch.Tensor]] = [(sig[0], denoised)]  # (σ, D), oldest first
    for k in range(1, steps + 1):
        step_order = min(order, k, steps + 1 - k)
        sigma_0, d_0 = history[-1]
        sigma_t = sig[k]
        h = math.log(sigma_0 / sigma_t)
        hh = -h
        rks, d1s = [], []
        for j in range(1, step_order):
            sigma_j, d_j = history[-(j + 1)]
            rk = math.log(sigma_0 / sigma_j) / h  # (λ_j − λ_0)/h
            rks.append(rk)
            d1s.append((d_j - d_0) / rk)
        rks.append(1.0)
        h_phi_1 = math.expm1(hh)
        b_h = hh if variant == "bh1" else math.expm1(hh)
        h_phi_k, factorial, b = h_phi_1 / hh - 1, 1, []
        for i in range(1, step_order + 1):
            b.append(h_phi_k * factorial / b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        r_matrix = np.array([[r ** (i - 1) for r in rks] for i in range(1, step_order + 1)])
        x_base = (sigma_t / sigma_0) * x - h_phi_1 * d_0
        x_t = x_base
        if d1s:
            rhos_p = [0.5] if step_order == 2 else np.linalg.solve(r_matrix[:-1, :-1], b[:-1]).tolist()
            x_t = x_base - b_h * sum(rho * d1 for rho, d1 in zip(rhos_p, d1s, strict=True))
        if k == steps:
            x = x_t
            break
        rhos_c = [0.5] if step_order == 1 else np.linalg.solve(r_matrix, b).tolist()
        d_t = _call(model, x_t, sigma_t)
        if callback:
            callback(k, x_t, sigma_t, d_t)
        correction = rhos_c[-1] * (d_t - d_0)
        correction = correction + sum(rho * d1 for rho, d1 in zip(rhos_c[:-1], d1s, strict=True))
        x = x_base - b_h * correction
        history = [*history, (sigma_t, d_t)][-order:]
    return x


def sample_uni_pc_bh2(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
) -> torch.Tensor:
    """:func:`sample_uni_pc` with B(h) = e^{−h} − 1 (UniPC-bh2, Zhao et al. 2023 §3.3)."""
    return sample_uni_pc(model, x, sigmas, callback=callback, variant="bh2")


MULTISTEP_SAMPLERS: dict[str, Sampler] = {
    "ipndm": sample_ipndm,
    "ipndm_v": sample_ipndm_v,
    "deis": sample_deis,
    "uni_pc": sample_uni_pc,
    "uni_pc_bh2": sample_uni_pc_bh2,
}
