"""KSampler's σ lists, seeds and names as ComfyUI has them.

Literals marked "ComfyUI" were read off ComfyUI 0.3.64 run in a scratch venv (torch 2.13.0, CPU):
``comfy.samplers.KSampler.set_steps`` on ``ModelSamplingDiscrete`` + ``EPS`` (SD 1.x β table, whose
σ table equals ours), and ``comfy.sample.prepare_noise``. Values rounded to 6 decimals.
"""

from __future__ import annotations

import pytest
import torch

from nodes.diffusion.comfy_parity import (
    ComfyKSamplerNoise,
    ComfyNoise,
    comfy_initial_noise,
    comfy_noise_scaling,
    comfy_sampler,
    comfy_sigmas,
    comfy_step_range,
)
from nodes.diffusion.conventions import Denoiser, vp_sigmas
from nodes.diffusion.names import (
    COMFY_SAMPLER_ALIASES,
    COMFY_SAMPLER_NAMES,
    COMFY_SCHEDULER_NAMES,
    COMFY_UNSUPPORTED_SAMPLERS,
    SAMPLER_NAMES,
    SCHEDULER_NAMES,
    unsupported_sampler_message,
)
from nodes.diffusion.samplers import SAMPLERS
from nodes.diffusion.schedules import calculate_sigmas


@pytest.fixture(scope="module")
def model() -> Denoiser:
    return Denoiser(torch.nn.Identity(), "eps", vp_sigmas("scaled_linear", 1000))


def rounded(values: torch.Tensor) -> list[float]:
    return [round(float(v), 6) for v in values]


def close_to(values: torch.Tensor, expected: list[float]) -> bool:
    """Equal to 6-decimal literals up to float32 rounding (ComfyUI computes Karras in float32)."""
    return [float(v) for v in values] == pytest.approx(expected, rel=2e-6, abs=1e-6)


def test_name_lists_cover_comfyui_and_ours() -> None:
    assert set(SAMPLER_NAMES) == set(SAMPLERS)
    for name in COMFY_SAMPLER_NAMES:
        supported = name in SAMPLER_NAMES or name in COMFY_SAMPLER_ALIASES
        assert supported != (name in COMFY_UNSUPPORTED_SAMPLERS), name
        assert (unsupported_sampler_message(name) is None) == supported, name
    assert set(SAMPLER_NAMES) <= set(COMFY_SAMPLER_NAMES)
    assert COMFY_SAMPLER_NAMES[:3] == ("euler", "euler_cfg_pp", "euler_ancestral")
    assert COMFY_SAMPLER_NAMES[-3:] == ("ddim", "uni_pc", "uni_pc_bh2")
    assert set(COMFY_SCHEDULER_NAMES) == set(SCHEDULER_NAMES)


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
def test_every_scheduler_name_computes(scheduler: str, model: Denoiser) -> None:
    sigmas = comfy_sigmas(scheduler, model, 6)
    assert float(sigmas[-1]) == 0 and bool((sigmas[:-1] > 0).all())
    assert len(calculate_sigmas(scheduler, model, 6)) == 7


def test_beta_picks_sigma_500_at_the_median_tie_as_comfyui(model: Denoiser) -> None:
    # Beta(0.6, 0.6) has its median at exactly ½: ½·999 = 499.5 rounds (half to even) to 500.
    assert float(comfy_sigmas("beta", model, 2)[1]) == float(model.sigmas[500])
    expected = [14.614641, 5.686592, 1.618279, 0.515391, 0.0]  # ComfyUI
    assert close_to(comfy_sigmas("beta", model, 4), expected)


def test_ddim_uniform_takes_every_kth_sigma_from_index_1_to_the_end(model: Denoiser) -> None:
    expected = [14.265109, 6.57065, 3.485455, 2.047312, 1.272063, 0.790061, 0.440309, 0.041314, 0.0]
    assert rounded(comfy_sigmas("ddim_uniform", model, 7)) == expected  # ComfyUI: 8 steps for 7
    for steps in range(1, 151):
        picks = list(range(1, 1000, max(1000 // steps, 1)))[::-1]  # independent re-derivation
        want = torch.cat([model.sigmas[picks], torch.zeros(1)])
        assert torch.equal(comfy_sigmas("ddim_uniform", model, steps), want), steps


def test_kl_optimal_at_one_step_keeps_sigma_max(model: Denoiser) -> None:
    # ComfyUI divides 0 by 0 here and returns [nan, 0]; ours is kept on purpose.
    assert close_to(comfy_sigmas("kl_optimal", model, 1), [14.614641, 0.0])


def test_linear_quadratic_as_comfyui(model: Denoiser) -> None:
    expected = [14.614641, 14.431958, 14.249275, 12.544234, 7.794476, 0.0]  # ComfyUI
    assert close_to(comfy_sigmas("linear_quadratic", model, 5), expected)


def test_ksampler_drops_the_penultimate_sigma_for_dpm_2_and_uni_pc(model: Denoiser) -> None:
    dpm_2 = comfy_sigmas("karras", model, 5, sampler_name="dpm_2")
    assert close_to(dpm_2, [14.614643, 6.082151, 2.232154, 0.692571, 0.169757, 0.0])  # ComfyUI
    six = comfy_sigmas("karras", model, 6)
    assert torch.equal(dpm_2, torch.cat([six[:-2], six[-1:]]))
    assert torch.equal(comfy_sigmas("karras", model, 5, sampler_name="dpm_2_ancestral"), dpm_2)
    assert len(comfy_sigmas("karras", model, 5, sampler_name="euler")) == 6


def test_partial_denoise_takes_the_tail_as_comfyui(model: Denoiser) -> None:
    unipc = comfy_sigmas("normal", model, 4, denoise=0.5, sampler_name="uni_pc")
    assert close_to(unipc, [1.61558, 1.071159, 0.69515, 0.399701, 0.0])  # ComfyUI
    assert close_to(comfy_sigmas("simple", model, 3, denoise=0.6), [2.276463, 1.160578, 0.569285, 0.0])
    assert torch.equal(comfy_sigmas("karras", model, 8, denoise=0.99995), comfy_sigmas("karras", model, 8))
    assert comfy_sigmas("karras", model, 8, denoise=0.0).numel() == 0


def test_advanced_step_range_slices_and_forces_the_last_sigma_to_zero(model: Denoiser) -> None:
    sigmas = comfy_sigmas("karras", model, 10)
    part = comfy_step_range(sigmas, 2, 6, force_full_denoise=True)
    assert part is not None and len(part) == 5 and float(part[-1]) == 0
    assert torch.equal(part[:-1], sigmas[2:6])
    assert float(sigmas[6]) > 0  # the input is not modified
    kept = comfy_step_range(sigmas, 2, 6, force_full_denoise=False)
    assert kept is not None and torch.equal(kept, sigmas[2:7])
    assert comfy_step_range(sigmas, 10, 10000, force_full_denoise=False) is None


def test_initial_noise_is_one_seeded_cpu_draw_for_the_whole_batch() -> None:
    noise = comfy_initial_noise(42, (3, 4, 2, 2))
    assert close_to(noise.flatten()[:4], [1.926915, 1.487284, 0.900717, -2.105521])  # ComfyUI
    assert close_to(noise.flatten()[-2:], [-1.234653, -0.487914])  # ComfyUI
    assert torch.equal(noise, torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(42)))
    assert not torch.equal(comfy_initial_noise(42, (1, 4, 2, 2))[0], noise[1])  # depends on position


def test_initial_noise_with_batch_index_gives_each_sample_its_indexed_draw() -> None:
    noise = comfy_initial_noise(42, (3, 4, 2, 2), batch_index=[2, 0, 2])
    assert close_to(noise[:, 0, 0, 0], [-1.384674, 1.926915, -1.384674])  # ComfyUI
    g = torch.Generator().manual_seed(42)
    draws = [torch.randn(1, 4, 2, 2, generator=g) for _ in range(3)]
    assert torch.equal(noise, torch.cat([draws[2], draws[0], draws[2]]))


def test_sampler_noise_restarts_the_seed_so_its_first_draw_is_the_initial_noise() -> None:
    shape = (2, 4, 3, 3)
    noise = ComfyNoise(7, shape, torch.device("cpu"), torch.float32)
    first, second = noise(), noise()
    assert torch.equal(first, comfy_initial_noise(7, shape))
    g = torch.Generator().manual_seed(7)
    torch.randn(shape, generator=g)
    assert torch.equal(second, torch.randn(shape, generator=g))


def test_noise_scaling_uses_sqrt_one_plus_sigma_squared_only_from_sigma_max() -> None:
    latent, noise = torch.full((1, 1, 1, 1), 0.5), torch.ones(1, 1, 1, 1)
    assert float(comfy_noise_scaling(latent, noise, 14.6146, 14.6146)) == pytest.approx(
        0.5 + (1 + 14.6146**2) ** 0.5
    )
    assert float(comfy_noise_scaling(latent, noise, 3.0, 14.6146)) == pytest.approx(3.5)


def test_ksampler_noise_source_starts_as_comfyui_then_continues_with_the_sampler_stream() -> None:
    shape, cpu = (2, 4, 3, 3), torch.device("cpu")
    initial = comfy_initial_noise(5, shape)
    source = ComfyKSamplerNoise(5, shape, cpu, torch.float32, sigma_0=14.6146, sigma_max=14.6146)
    sigma_0 = 14.6146
    assert torch.allclose(
        source() * sigma_0, comfy_noise_scaling(torch.zeros(shape), initial, sigma_0, sigma_0)
    )
    stream = ComfyNoise(5, shape, cpu, torch.float32)
    assert torch.equal(source(), stream()) and torch.equal(source(), stream())
    partial = ComfyKSamplerNoise(5, shape, cpu, torch.float32, sigma_0=3.0, sigma_max=14.6146)
    assert torch.equal(partial(), initial)
    silent = ComfyKSamplerNoise(5, shape, cpu, torch.float32, sigma_0=3.0, sigma_max=14.6, add_noise=False)
    assert not silent().any() and torch.equal(silent(), initial)


KSAMPLER_RUNS = {  # ComfyUI: prepare_noise(latent, 7) → ksampler(name).sample(...), first 6 values
    ("euler_ancestral", "karras", 6, 1.0): [0.797713, 0.404990, 0.767227, 0.352249, 0.614843, 1.171676],
    ("dpm_2_ancestral", "normal", 5, 1.0): [0.802204, 0.436492, 0.969912, 0.151891, 0.499708, 1.084619],
    ("lms", "karras", 6, 1.0): [0.358403, 0.846503, 1.048556, 0.130257, 0.620622, 0.802148],
    ("dpmpp_2s_ancestral", "simple", 4, 0.6): [0.585236, 0.491661, 0.892826, 0.276241, 0.768047, 1.189085],
}


@pytest.mark.parametrize("run", sorted(KSAMPLER_RUNS))
def test_seeded_ksampler_run_reproduces_comfyui(run: tuple[str, str, int, float], model: Denoiser) -> None:
    """ComfyUI's whole KSampler path on CPU (latent 0.25, seed 7, exact N(0.7, 0.5²) denoiser)."""
    name, scheduler, steps, denoise = run

    def gaussian(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.to(x.dtype)[:, None, None, None]
        return 0.7 + 0.25 / (0.25 + s**2) * (x - 0.7)

    latent, cpu = torch.full((2, 4, 4, 4), 0.25), torch.device("cpu")
    sigmas = comfy_sigmas(scheduler, model, steps, denoise, sampler_name=name)
    source = ComfyKSamplerNoise(
        7, latent.shape, cpu, torch.float32, sigma_0=float(sigmas[0]), sigma_max=model.sigma_max
    )
    x = latent + source() * float(sigmas[0])  # as guided_sample starts
    out = comfy_sampler(name)(gaussian, x, sigmas, noise=source)
    assert close_to(out.flatten()[:6], KSAMPLER_RUNS[run])
