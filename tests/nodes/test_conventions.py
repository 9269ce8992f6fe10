"""The σ-space conventions: adapters recover x0 from exact network outputs; spaces round-trip."""

from __future__ import annotations

import pytest
import torch

from nodes.diffusion.conventions import (
    Denoiser,
    add_score,
    denoiser_from_metadata,
    from_space,
    scalings,
    sigma_to_t,
    t_to_sigma,
    to_space,
    vp_sigmas,
)


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "cosine"])
def test_vp_sigmas_increase_and_timesteps_round_trip(beta_schedule: str) -> None:
    table = vp_sigmas(beta_schedule, 1000)
    assert bool((table[1:] > table[:-1]).all())
    t = torch.tensor([0.0, 1.0, 10.5, 500.25, 999.0], dtype=torch.float64)
    assert torch.allclose(sigma_to_t(t_to_sigma(t, table), table), t, atol=1e-6)
    assert torch.allclose(t_to_sigma(torch.tensor([3.0]), table), table[3:4], rtol=1e-6)


def test_sigma_between_table_entries_interpolates_in_log_sigma() -> None:
    table = vp_sigmas("linear", 1000)
    mid = (table[10].log() + table[11].log()).div(2).exp()
    assert float(sigma_to_t(mid.reshape(1), table)) == pytest.approx(10.5, abs=1e-4)


class Oracle(torch.nn.Module):
    """Returns the exact training target of a parametrization for a known (x0, n)."""

    def __init__(
        self, parametrization: str, x0: torch.Tensor, n: torch.Tensor, sigma: torch.Tensor, sd: float
    ):
        super().__init__()
        self.p, self.x0, self.n, self.sigma, self.sd = parametrization, x0, n, sigma, sd

    def forward(self, x_in: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        s = self.sigma[:, None, None, None]
        if self.p == "eps":
            return self.n
        if self.p == "x0":
            return self.x0
        alpha = (s**2 + 1).rsqrt()
        if self.p == "v":
            return alpha * self.n - s * alpha * self.x0
        c_skip, c_out, _ = scalings("edm", self.sigma, self.sd)
        x = self.x0 + s * self.n
        return (self.x0 - c_skip[:, None, None, None] * x) / c_out[:, None, None, None]


@pytest.mark.parametrize("parametrization", ["eps", "v", "x0", "edm"])
def test_each_adapter_turns_the_exact_target_into_x0(parametrization: str) -> None:
    torch.manual_seed(0)
    x0, n = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    sigma = torch.tensor([0.5, 7.0])
    net = Oracle(parametrization, x0, n, sigma, 0.5)
    schedule = {"type": "edm", "sigma_data": 0.5} if parametrization == "edm" else {"type": "discrete_vp"}
    model = denoiser_from_metadata(net, {"parametrization": parametrization, "schedule": schedule})
    out = model(x0 + sigma[:, None, None, None] * n, sigma, torch.zeros(2, 4))
    assert torch.allclose(out, x0, atol=1e-5)


def test_discrete_models_refuse_edm_parametrization_and_unknown_schedules() -> None:
    net = torch.nn.Identity()
    with pytest.raises(ValueError, match="discrete VP"):
        denoiser_from_metadata(net, {"parametrization": "edm", "schedule": {"type": "discrete_vp"}})
    with pytest.raises(ValueError, match="unknown schedule type"):
        denoiser_from_metadata(net, {"schedule": {"type": "flow"}})


@pytest.mark.parametrize("space", ["x0", "eps", "v"])
def test_prediction_spaces_round_trip_and_eps_is_the_noise(space: str) -> None:
    torch.manual_seed(1)
    x0, n = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    sigma = torch.tensor([0.1, 1.0, 20.0])
    x = x0 + sigma[:, None, None, None] * n
    pred = to_space(x0, x, sigma, space)
    assert torch.allclose(from_space(pred, x, sigma, space), x0, atol=1e-5)
    if space == "eps":
        assert torch.allclose(pred, n, atol=1e-4)


def test_score_term_is_sigma_squared_times_gradient() -> None:
    d, g = torch.zeros(2, 1, 1, 1), torch.ones(2, 1, 1, 1)
    out = add_score(d, torch.tensor([2.0, 3.0]), g, 0.5)
    assert out.flatten().tolist() == [2.0, 4.5]


def test_denoiser_compares_by_identity() -> None:
    net = torch.nn.Identity()
    a = Denoiser(net, "eps", vp_sigmas("linear", 10))
    b = Denoiser(net, "eps", vp_sigmas("linear", 10))
    assert a != b and a == a and len({a, b}) == 2
