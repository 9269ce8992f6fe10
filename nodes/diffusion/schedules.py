"""Noise schedules: n decreasing σ values followed by a final 0, named as ComfyUI names them.

Schedules that depend only on (σ_min, σ_max) take those; the timestep-based ones ('normal', 'simple',
'sgm_uniform', 'beta', 'ddim_uniform') take the model's σ table and its σ ↔ t maps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from nodes.diffusion.conventions import Denoiser
from nodes.diffusion.names import SCHEDULER_NAMES

SCHEDULERS: tuple[str, ...] = SCHEDULER_NAMES


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022 eq. 5: σ_i = (σmax^{1/ρ} + i/(n−1)·(σmin^{1/ρ} − σmax^{1/ρ}))^ρ."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho).float()


def sigmas_exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Uniform in log σ from σmax down to σmin."""
    return _append_zero(
        torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp()
    ).float()


def sigmas_kl_optimal(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """σ = tan(lerp(atan σmax, atan σmin)) (Sabour et al. 2024, "Align Your Steps", KL-optimal)."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    a_hi, a_lo = math.atan(sigma_max), math.atan(sigma_min)
    return _append_zero(torch.tan(a_hi + ramp * (a_lo - a_hi))).float()


def sigmas_normal(n: int, model: Denoiser, sgm: bool = False) -> torch.Tensor:
    """Uniform in model timestep between t(σmax) and t(σmin), mapped back through σ(t).

    ``sgm=True`` takes n+1 points and drops the last ('sgm_uniform', trailing-like spacing).
    """
    t_max = model.sigma_to_t(torch.tensor(model.sigma_max, dtype=torch.float64))
    t_min = model.sigma_to_t(torch.tensor(model.sigma_min, dtype=torch.float64))
    ts = torch.linspace(float(t_max), float(t_min), n + 1 if sgm else n, dtype=torch.float64)
    if sgm:
        ts = ts[:-1]
    return _append_zero(model.t_to_sigma(ts)).float()


def sigmas_simple(n: int, table: torch.Tensor) -> torch.Tensor:
    """Every (T/n)-th training σ counted from the top of the table."""
    stride = len(table) / n
    picks = [float(table[-(1 + int(i * stride))]) for i in range(n)]
    return _append_zero(torch.tensor(picks, dtype=torch.float64)).float()


def sigmas_ddim_uniform(n: int, table: torch.Tensor) -> torch.Tensor:
    """DDIM "leading" spacing: training indices 1, 1+k, 1+2k, …, reversed (Song et al. 2021)."""
    k = max(len(table) // n, 1)
    idx = list(range(1, len(table), k))[:n]
    return _append_zero(table[torch.tensor(idx[::-1])].to(torch.float64)).float()


def _beta_cdf(x: np.ndarray, a: float, b: float, grid: int = 4096) -> np.ndarray:
    """Regularised incomplete beta I_x(a, b) for x ≤ 0.5 by quadrature after t = u^{1/a}."""
    # ∫_0^x t^{a−1}(1−t)^{b−1} dt = (1/a)·∫_0^{x^a} (1 − u^{1/a})^{b−1} du, smooth for x ≤ 0.5.
    out = np.empty_like(x)
    for i, xi in enumerate(x):
        u = np.linspace(0.0, xi**a, grid)
        out[i] = np.trapezoid((1 - u ** (1 / a)) ** (b - 1), u) / a
    return out


def beta_ppf(q: np.ndarray, a: float, b: float) -> np.ndarray:
    """Quantiles of Beta(a, b) by bisection on the CDF (a symmetric split keeps quadrature smooth)."""
    total = _beta_cdf(np.array([0.5]), a, b)[0] + _beta_cdf(np.array([0.5]), b, a)[0]

    def cdf(x: np.ndarray) -> np.ndarray:
        lower = x <= 0.5
        res = np.empty_like(x)
        res[lower] = _beta_cdf(x[lower], a, b) / total
        res[~lower] = 1 - _beta_cdf(1 - x[~lower], b, a) / total
        return res

    lo, hi = np.zeros_like(q), np.ones_like(q)
    for _ in range(40):
        mid = (lo + hi) / 2
        below = cdf(mid) < q
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    ppf = (lo + hi) / 2
    # A symmetric Beta has its median at exactly ½; bisection lands an ulp off, which flips the
    # rounding of the exact tie 0.5·999 = 499.5 in `sigmas_beta` (σ[500], as scipy's ppf gives).
    return np.where(q == 0.5, 0.5, ppf) if a == b else ppf


def sigmas_beta(n: int, table: torch.Tensor, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """Timesteps at Beta(α, β) quantiles of 1 − linspace(0, 1, n) (Lee et al. 2024, arXiv 2407.12173)."""
    last = len(table) - 1
    q = 1 - np.linspace(0, 1, n, endpoint=False)
    ts = np.rint(beta_ppf(q, alpha, beta) * last).astype(int)
    picks: list[float] = []
    for t in ts:
        if not picks or float(table[t]) != picks[-1]:
            picks.append(float(table[t]))
    return _append_zero(torch.tensor(picks, dtype=torch.float64)).float()


def sigmas_linear_quadratic(
    n: int, sigma_max: float, threshold_noise: float = 0.025, linear_steps: int | None = None
) -> torch.Tensor:
    """Mochi's schedule (Genmo 2024): noise level t rises linearly to τ over the first half of the
    steps, then quadratically to 1 (value and slope continuous); σ = σmax·(1 − t)."""
    if n == 1:
        levels = [0.0]
    else:
        lin = n // 2 if linear_steps is None else linear_steps
        quad = n - lin
        excess = lin - threshold_noise * n
        a = excess / (lin * quad**2)  # t(i) = a·i² + b·i + c for i ≥ lin
        b = threshold_noise / lin - 2 * excess / quad**2
        c = a * lin**2
        levels = [i * threshold_noise / lin for i in range(lin)]
        levels += [a * i**2 + b * i + c for i in range(lin, n)]
    return _append_zero(sigma_max * (1 - torch.tensor(levels, dtype=torch.float64))).float()


def calculate_sigmas(scheduler: str, model: Denoiser, steps: int) -> torch.Tensor:
    """The σ list (steps + 1 values, ending in 0) of ``scheduler`` for ``model``."""
    lo, hi, table = model.sigma_min, model.sigma_max, model.sigmas
    table_schedules: dict[str, Callable[[], torch.Tensor]] = {
        "karras": lambda: sigmas_karras(steps, lo, hi),
        "exponential": lambda: sigmas_exponential(steps, lo, hi),
        "kl_optimal": lambda: sigmas_kl_optimal(steps, lo, hi),
        "normal": lambda: sigmas_normal(steps, model),
        "sgm_uniform": lambda: sigmas_normal(steps, model, sgm=True),
        "simple": lambda: sigmas_simple(steps, table),
        "ddim_uniform": lambda: sigmas_ddim_uniform(steps, table),
        "beta": lambda: sigmas_beta(steps, table),
        "linear_quadratic": lambda: sigmas_linear_quadratic(steps, hi),
    }
    if scheduler not in table_schedules:
        raise ValueError(f"unknown scheduler {scheduler!r}; expected one of {SCHEDULERS}")
    return table_schedules[scheduler]()


def sigmas_for_denoise(scheduler: str, model: Denoiser, steps: int, denoise: float) -> torch.Tensor:
    """ComfyUI's partial denoise: the last steps+1 σ of a schedule of ⌊steps/denoise⌋ steps."""
    if not 0 < denoise <= 1:
        raise ValueError(f"denoise must be in (0, 1], got {denoise}")
    if denoise >= 1:
        return calculate_sigmas(scheduler, model, steps)
    total = int(steps / denoise)
    return calculate_sigmas(scheduler, model, total)[-(steps + 1) :]
