"""Schedules: ComfyUI's names, n + 1 values ending in 0, decreasing, with the right end points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nodes.diffusion.conventions import Denoiser, vp_sigmas
from nodes.diffusion.schedules import (
    SCHEDULERS,
    beta_ppf,
    calculate_sigmas,
    sigmas_for_denoise,
    sigmas_karras,
    sigmas_simple,
)


@pytest.fixture
def model() -> Denoiser:
    return Denoiser(torch.nn.Identity(), "eps", vp_sigmas("scaled_linear", 1000))


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_schedule_decreases_and_ends_in_zero(scheduler: str, model: Denoiser) -> None:
    sigmas = calculate_sigmas(scheduler, model, 12)
    assert len(sigmas) == 13 or scheduler == "beta"
    assert float(sigmas[-1]) == 0.0
    assert bool((sigmas[1:] < sigmas[:-1]).all())
    assert float(sigmas[0]) <= model.sigma_max * (1 + 1e-5)
    assert float(sigmas[-2]) >= model.sigma_min * (1 - 1e-5)


def test_karras_hits_both_ends_with_rho_spacing() -> None:
    sigmas = sigmas_karras(5, 0.1, 10.0, rho=1.0)
    assert torch.allclose(sigmas, torch.tensor([10.0, 7.525, 5.05, 2.575, 0.1, 0.0]))


def test_normal_and_simple_start_at_sigma_max(model: Denoiser) -> None:
    for name in ("normal", "simple", "karras", "exponential"):
        assert float(calculate_sigmas(name, model, 10)[0]) == pytest.approx(model.sigma_max, rel=1e-5)
    assert float(calculate_sigmas("normal", model, 10)[-2]) == pytest.approx(model.sigma_min, rel=1e-4)
    assert float(sigmas_simple(4, model.sigmas)[1]) == pytest.approx(float(model.sigmas[-251]))


def test_sgm_uniform_drops_the_last_of_n_plus_one_points(model: Denoiser) -> None:
    sgm, normal = calculate_sigmas("sgm_uniform", model, 10), calculate_sigmas("normal", model, 10)
    assert float(sgm[0]) == pytest.approx(float(normal[0]))
    assert float(sgm[-2]) > float(normal[-2])


def test_beta_quantiles_match_closed_forms() -> None:
    q = np.array([0.1, 0.5, 0.9])
    assert np.allclose(beta_ppf(q, 1.0, 1.0), q, atol=1e-6)
    assert np.allclose(beta_ppf(q, 2.0, 1.0), np.sqrt(q), atol=1e-4)  # CDF x²
    assert beta_ppf(np.array([0.5]), 0.6, 0.6)[0] == pytest.approx(0.5, abs=1e-6)


def test_partial_denoise_takes_the_tail_of_a_longer_schedule(model: Denoiser) -> None:
    sigmas = sigmas_for_denoise("karras", model, 10, 0.5)
    full = calculate_sigmas("karras", model, 20)
    assert torch.equal(sigmas, full[-11:])
    with pytest.raises(ValueError, match="denoise"):
        sigmas_for_denoise("karras", model, 10, 0.0)


def test_unknown_scheduler_names_the_choices(model: Denoiser) -> None:
    with pytest.raises(ValueError, match="karras"):
        calculate_sigmas("bogus", model, 10)
