"""Samplers against analytic answers: for Gaussian data the exact denoiser and the ODE flow are known.

Data x0 ~ N(μ, s²) per pixel; D(x, σ) = μ + s²/(s² + σ²)·(x − μ). The probability-flow ODE maps
x(σ_max) to x(0) = μ + (x(σ_max) − μ)·s/√(s² + σ_max²); every sampler must end at N(μ, s²).
"""

from __future__ import annotations

import math

import pytest
import torch

from nodes.diffusion.samplers import SAMPLERS, STOCHASTIC, PerSampleNoise, lms_coefficient
from nodes.diffusion.schedules import sigmas_karras

MU, STD, SIGMA_MAX = 0.7, 0.5, 40.0
DETERMINISTIC = sorted(set(SAMPLERS) - STOCHASTIC)
STEPPED = sorted(set(DETERMINISTIC) - {"dpm_adaptive"})  # dpm_adaptive picks its own steps


def exact(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s = sigma[:, None, None, None]
    return MU + STD**2 / (STD**2 + s**2) * (x - MU)


def start(n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return MU + math.sqrt(STD**2 + SIGMA_MAX**2) * torch.randn(n, 1, 32, 32, generator=g, dtype=torch.float64)


def flow_end(x_start: torch.Tensor) -> torch.Tensor:
    return MU + (x_start - MU) * STD / math.sqrt(STD**2 + SIGMA_MAX**2)


def noise_for(x: torch.Tensor, seed: int = 1) -> PerSampleNoise:
    return PerSampleNoise(range(seed, seed + x.shape[0]), x.shape[1:], x.device, x.dtype)


@pytest.mark.parametrize("name", STEPPED)
def test_deterministic_samplers_converge_to_the_ode_solution(name: str) -> None:
    x = start()
    errors = []
    for steps in (10, 20, 80):
        out = SAMPLERS[name](exact, x, sigmas_karras(steps, 0.01, SIGMA_MAX).double())
        errors.append(float((out - flow_end(x)).abs().mean()) / STD)
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 0.025


def test_second_order_samplers_beat_euler_at_equal_steps() -> None:
    x = start()
    sigmas = sigmas_karras(20, 0.01, SIGMA_MAX).double()
    err = {n: float((SAMPLERS[n](exact, x, sigmas) - flow_end(x)).abs().mean()) for n in STEPPED}
    for name in (
        "heun",
        "dpm_2",
        "lms",
        "dpmpp_2m",
        "ipndm",
        "ipndm_v",
        "deis",
        "uni_pc",
        "uni_pc_bh2",
        "exp_heun_2_x0",
    ):
        assert err[name] < err["euler"] / 3, name


@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - {"lcm"}))  # lcm: see the consistency test below
def test_every_sampler_reaches_the_data_mean_and_variance(name: str) -> None:
    x = start(8)
    out = SAMPLERS[name](exact, x, sigmas_karras(200, 0.01, SIGMA_MAX).double(), noise=noise_for(x))
    assert float(out.mean()) == pytest.approx(MU, abs=0.02)
    assert float(out.std()) == pytest.approx(STD, rel=0.04)


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_stochastic_samplers_depend_on_the_noise(name: str) -> None:
    x = start(2)
    sigmas = sigmas_karras(10, 0.01, SIGMA_MAX).double()
    a = SAMPLERS[name](exact, x, sigmas, noise=noise_for(x, 1))
    b = SAMPLERS[name](exact, x, sigmas, noise=noise_for(x, 2))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="noise"):
        SAMPLERS[name](exact, x, sigmas)


def test_per_sample_noise_does_not_depend_on_batch_position() -> None:
    pair = PerSampleNoise([7, 8], (3, 4, 4), torch.device("cpu"), torch.float32)
    alone = PerSampleNoise([8], (3, 4, 4), torch.device("cpu"), torch.float32)
    for _ in range(3):
        assert torch.equal(pair()[1], alone()[0])


def test_lms_coefficients_integrate_polynomials_exactly() -> None:
    sigmas = [10.0, 6.0, 3.0, 1.0, 0.0]
    i, order = 3, 4
    nodes = [sigmas[i - k] for k in range(order)]
    exact_integral = (sigmas[i + 1] ** 4 - sigmas[i] ** 4) / 4  # ∫ s³ ds
    estimate = sum(lms_coefficient(sigmas, i, j, order) * nodes[j] ** 3 for j in range(order))
    assert estimate == pytest.approx(exact_integral)


def test_callback_sees_every_step() -> None:
    x = start(1)
    seen: list[int] = []
    SAMPLERS["heun"](
        exact, x, sigmas_karras(6, 0.01, SIGMA_MAX).double(), callback=lambda i, *_: seen.append(i)
    )
    assert seen == list(range(6))


def test_lcm_with_an_exact_consistency_function_samples_the_data_at_any_step_count() -> None:
    """LCM assumes D is a consistency function (the ODE flow map to σ = 0), not the MMSE denoiser."""

    def flow_map(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma[:, None, None, None]
        return MU + (x - MU) * STD / (STD**2 + s**2).sqrt()

    x = start(8)
    for steps in (1, 4):
        out = SAMPLERS["lcm"](flow_map, x, sigmas_karras(steps, 0.5, SIGMA_MAX).double(), noise=noise_for(x))
        assert float(out.mean()) == pytest.approx(MU, abs=0.02)
        assert float(out.std()) == pytest.approx(STD, rel=0.04)


def test_dpm_adaptive_meets_its_tolerance_whatever_the_step_count() -> None:
    x = start()
    calls: list[int] = []

    def counted(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return exact(x, sigma)

    errors = []
    for rtol in (0.05, 0.005):
        out = SAMPLERS["dpm_adaptive"](counted, x, sigmas_karras(3, 0.01, SIGMA_MAX).double(), rtol=rtol)
        errors.append(float((out - flow_end(x)).abs().mean()) / STD)
    assert errors[1] < errors[0] / 3 and errors[1] < 0.01
    assert len(calls) > 3 * 3  # it took more evaluations than three steps would
