"""ComfyUI-named samplers against ComfyUI's own numbers on the exact Gaussian denoiser.

REFERENCE holds what ComfyUI 0.3.64's ``comfy/k_diffusion/sampling.py`` (and ``extra_samplers/
uni_pc.py`` for uni_pc) returned, run in a scratch venv with torch 2.13.0 on: data N(0.7, 0.5²) with
its exact denoiser, x = 0.7 + √(0.5² + σ₀²)·randn((2, 1, 2, 2), Generator seed 0, float64),
σ = sigmas_karras(8, 0.03, 14.6) as float64, and a noise_sampler returning successive
randn((2, 1, 2, 2), Generator seed 123, float64) draws. uni_pc ran in float32 (ComfyUI's UniPC
fails in float64), hence its looser tolerance; ComfyUI integrates DEIS's coefficients with a
10,000-point Riemann sum where ours use Gauss–Legendre, hence deis's; dpm_fast agrees to 1e-6.
exp_heun_2_x0(_sde) came after 0.3.64 (SEEDS-2 with r = 1 and φ₂ weights): no reference here, the
Gaussian convergence and moment tests in test_samplers.py cover them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nodes.diffusion.comfy_parity import comfy_sampler
from nodes.diffusion.samplers import SAMPLERS
from nodes.diffusion.samplers_multistep import deis_time, multistep_weights
from nodes.diffusion.schedules import sigmas_karras

MU, STD = 0.7, 0.5
SIGMAS = sigmas_karras(8, 0.03, 14.6).double()
REFERENCE: dict[str, list[float]] = {
    "er_sde": [
        1.0544778909,
        0.3852261426,
        0.2129052747,
        0.6519035819,
        0.1912566279,
        0.8513507501,
        0.4857978395,
        0.6750377731,
    ],
    "seeds_2": [
        0.8877346526,
        0.5734147730,
        1.1178066627,
        0.7247769054,
        0.8593370756,
        0.1233567984,
        1.0828979964,
        0.2280946762,
    ],
    "seeds_3": [
        0.0349428356,
        0.8712754705,
        1.2084739014,
        1.0709196050,
        1.2250008772,
        0.6472269111,
        0.6911094442,
        0.2853576442,
    ],
    "dpm_fast": [
        1.5407977183,
        0.5398994306,
        -0.4887902450,
        1.0101472602,
        0.1082633265,
        -0.0631010948,
        0.9200739556,
        1.1572436133,
    ],
    "dpm_adaptive": [
        1.4935202533,
        0.5489017731,
        -0.4219454047,
        0.9927078976,
        0.1415362639,
        -0.0201924563,
        0.9076993517,
        1.1315331262,
    ],
    "euler": [
        1.3061304663,
        0.5845836154,
        -0.1569980268,
        0.9235849353,
        0.2734174606,
        0.1498809733,
        0.8586511553,
        1.0296265898,
    ],
    "euler_ancestral": [
        0.6031786142,
        0.4127889782,
        1.0951871926,
        0.5936719286,
        0.7591500925,
        1.3413211349,
        0.3869940799,
        0.3699502350,
    ],
    "heun": [
        1.5611983992,
        0.5360148331,
        -0.5176344366,
        1.0176725129,
        0.0939057339,
        -0.0816165850,
        0.9254137163,
        1.1683379359,
    ],
    "heunpp2": [
        1.3188100777,
        0.5821692261,
        -0.1749255235,
        0.9282620968,
        0.2644938028,
        0.1383730623,
        0.8619699704,
        1.0365220311,
    ],
    "dpm_2": [
        1.5208561772,
        0.5436966008,
        -0.4605952238,
        1.0027913716,
        0.1222977856,
        -0.0450023161,
        0.9148543722,
        1.1463989808,
    ],
    "dpm_2_ancestral": [
        0.4610909037,
        0.0976656123,
        1.1952205072,
        0.3929646039,
        0.5261830674,
        1.7654786354,
        0.1212617198,
        0.0854192538,
    ],
    "lms": [
        1.3886434131,
        0.5688719056,
        -0.2736617429,
        0.9540217025,
        0.2153464934,
        0.0749929013,
        0.8802484434,
        1.0744988785,
    ],
    "dpmpp_2s_ancestral": [
        0.5528969725,
        0.3143778140,
        1.1336779925,
        0.5309346331,
        0.6851140634,
        1.4712406225,
        0.3019758891,
        0.2777165235,
    ],
    "dpmpp_2m": [
        1.5175044608,
        0.5443348182,
        -0.4558562864,
        1.0015550152,
        0.1246566568,
        -0.0419603258,
        0.9139770798,
        1.1445762464,
    ],
    "dpmpp_2m_sde": [
        0.4984363673,
        0.3049345907,
        1.3881928221,
        0.5837788223,
        0.8267611723,
        1.6795543848,
        0.1491728014,
        0.1414216423,
    ],
    "dpmpp_2m_sde_heun": [
        0.4283913563,
        0.2548898750,
        1.5464988211,
        0.5840721234,
        0.8512717844,
        1.8397831740,
        0.0212462834,
        0.0099636948,
    ],
    "dpmpp_3m_sde": [
        0.4233990703,
        0.2944423625,
        1.8032071960,
        0.6864053654,
        1.0207568913,
        2.0607268195,
        -0.1542098817,
        -0.1045118900,
    ],
    "ddpm": [
        0.6031786142,
        0.4127889782,
        1.0951871926,
        0.5936719286,
        0.7591500925,
        1.3413211349,
        0.3869940799,
        0.3699502350,
    ],
    "lcm": [
        0.6201497374,
        0.5102505172,
        1.1265504993,
        0.6658385805,
        0.8468047939,
        1.2312629768,
        0.4401084350,
        0.4249390592,
    ],
    "ipndm": [
        1.5024708631,
        0.5471974420,
        -0.4346005266,
        0.9960095326,
        0.1352370032,
        -0.0283159561,
        0.9100421222,
        1.1364006574,
    ],
    "deis": [
        1.4176477361,
        0.5633490449,
        -0.3146704843,
        0.9647206032,
        0.1949338291,
        0.0486688163,
        0.8878401578,
        1.0902720438,
    ],
    "res_multistep": [
        1.5691260076,
        0.5345052969,
        -0.5288431534,
        1.0205967906,
        0.0883264412,
        -0.0888116172,
        0.9274887221,
        1.1726491372,
    ],
    "res_multistep_ancestral": [
        0.4283913563,
        0.2548898750,
        1.5464988211,
        0.5840721234,
        0.8512717844,
        1.8397831740,
        0.0212462834,
        0.0099636948,
    ],
    "gradient_estimation": [
        1.5389221070,
        0.5402565752,
        -0.4861383486,
        1.0094553985,
        0.1095833444,
        -0.0613988054,
        0.9195830252,
        1.1562236162,
    ],
    "uni_pc": [
        1.6746230125,
        0.5144171715,
        -0.6780038476,
        1.0595116615,
        0.0140795121,
        -0.1845596731,
        0.9551022649,
        1.2300212383,
    ],
    "uni_pc_bh2": [
        1.6140054464,
        0.5259595513,
        -0.5922984481,
        1.0371516943,
        0.0567407124,
        -0.1295444369,
        0.9392360449,
        1.1970560551,
    ],
}
REFERENCE["ddim"] = REFERENCE["euler"]  # ComfyUI runs its "ddim" as euler (plus inpainting noise)
TOLERANCE = {"deis": 1e-4, "uni_pc": 3e-4, "uni_pc_bh2": 3e-4, "dpm_fast": 1e-5, "er_sde": 1e-7}


def exact(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s = sigma[:, None, None, None]
    return MU + STD**2 / (STD**2 + s**2) * (x - MU)


def start() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    scale = math.sqrt(STD**2 + float(SIGMAS[0]) ** 2)
    return MU + scale * torch.randn(2, 1, 2, 2, generator=g, dtype=torch.float64)


class Draws:
    """Successive standard normal draws from one seeded generator, as the reference's noise_sampler."""

    def __init__(self) -> None:
        self.generator = torch.Generator().manual_seed(123)

    def __call__(self) -> torch.Tensor:
        return torch.randn(2, 1, 2, 2, generator=self.generator, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_comfy_named_samplers_reproduce_comfyui_on_the_gaussian_denoiser(name: str) -> None:
    out = comfy_sampler(name)(exact, start(), SIGMAS, noise=Draws())
    expected = torch.tensor(REFERENCE[name], dtype=torch.float64)
    assert torch.allclose(out.flatten(), expected, rtol=0, atol=TOLERANCE.get(name, 1e-8))


def test_comfy_lms_returns_the_denoised_prediction_where_ours_integrates_to_zero() -> None:
    ours = SAMPLERS["lms"](exact, start(), SIGMAS)
    comfy = comfy_sampler("lms")(exact, start(), SIGMAS)
    assert not torch.allclose(ours, comfy, atol=1e-4)
    seen: list[int] = []
    comfy_sampler("lms")(exact, start(), SIGMAS, callback=lambda i, *_: seen.append(i))
    assert seen == list(range(len(SIGMAS) - 1))


def test_gpu_named_variants_run_the_same_math() -> None:
    for name in ("dpmpp_sde_gpu", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde_gpu"):
        assert comfy_sampler(name) is SAMPLERS[name.removesuffix("_gpu")]


def test_unsupported_comfy_samplers_raise_naming_the_reason_and_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'euler_cfg_pp' is not supported \(CFG\+\+.*supported: euler, "):
        comfy_sampler("euler_cfg_pp")
    with pytest.raises(ValueError, match=r"'sa_solver' is not supported \(not implemented"):
        comfy_sampler("sa_solver")
    with pytest.raises(ValueError, match="unknown sampler 'bogus'"):
        comfy_sampler("bogus")


def test_ipndm_v_weights_are_exact_variable_step_adams_bashforth() -> None:
    """Ours integrate cubics exactly; ComfyUI's ipndm_v weights do not (kept as ours, documented)."""
    nodes = [2.0, 3.5, 6.0, 10.0]  # newest first
    weights = multistep_weights(nodes, 2.0, 1.1, lambda s: s)
    for power in range(4):
        integral = (1.1 ** (power + 1) - 2.0 ** (power + 1)) / (power + 1)
        assert sum(w * n**power for w, n in zip(weights, nodes, strict=True)) == pytest.approx(integral)
    equal = multistep_weights([3.0, 4.0, 5.0, 6.0], 3.0, 2.0, lambda s: s)
    assert np.allclose(equal, [-55 / 24, 59 / 24, -37 / 24, 9 / 24])  # AB4 times h = −1


def test_deis_weights_interpolate_in_vp_time_and_sum_to_the_step() -> None:
    nodes = [2.0, 3.5, 6.0]
    weights = multistep_weights(nodes, 2.0, 1.1, deis_time)
    assert sum(weights) == pytest.approx(1.1 - 2.0)
    taus = deis_time(np.array(nodes))
    grid = np.linspace(1.1, 2.0, 20001)
    integral = -np.trapezoid(deis_time(grid) ** 2, grid)  # ∫_2^1.1 τ(σ)² dσ
    assert sum(w * t**2 for w, t in zip(weights, taus, strict=True)) == pytest.approx(integral, rel=1e-6)


def test_uni_pc_takes_a_step_even_with_one_step() -> None:
    """ComfyUI's uni_pc returns its input at one step (order 0); ours takes a first-order step."""
    x = start()
    one = comfy_sampler("uni_pc")(exact, x, SIGMAS[[0, -1]])
    expected = exact(x, SIGMAS[:1].expand(2))  # one DPM-Solver++(1) step to σ = 0.001 ≈ D
    assert torch.allclose(one, expected, atol=0.01)
