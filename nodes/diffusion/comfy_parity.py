"""ComfyUI's KSampler behaviour under ComfyUI's names: its σ lists, end-of-run rules, seeds and noise.

Our own Sampler node keeps guidegraph's behaviour; the ComfyUI-named nodes are meant to call these,
so a user's ComfyUI workflow and seed give the same picture (up to numerical differences in the
model). Other schedules equal ComfyUI's up to float32 rounding (ComfyUI computes Karras and KL-optimal
in float32); the samplers are checked against ComfyUI's outputs in tests/nodes/test_comfy_samplers.py.
Where the two differ (ComfyUI 0.3.x ``comfy/samplers.py`` and ``comfy/k_diffusion/sampling.py``):

* ``ddim_uniform``: ComfyUI takes every ⌊T/n⌋-th training σ from index 1 up to the end of the
  table, so it can give more than n steps (7 asked → 8); ours is diffusers' "leading", exactly n.
* ``lms``: ComfyUI's last step returns the denoised prediction; ours integrates to σ = 0.
* ``dpm_2``, ``dpm_2_ancestral``, ``uni_pc``, ``uni_pc_bh2``: KSampler computes n + 1 steps and
  drops the second-to-last σ (``DISCARD_PENULTIMATE_SIGMA_SAMPLERS``).
* ``denoise`` < 1: the tail of a ⌊steps/denoise⌋-step list; ``denoise`` > 0.9999 counts as 1 and
  ``denoise`` ≤ 0 gives an empty list (ComfyUI then returns the latent unchanged).
* Initial noise: one CPU ``torch.randn`` of the whole batch from a generator seeded once with the
  seed (:func:`comfy_initial_noise`), scaled by √(1 + σ₀²) when σ₀ is σ_max (:func:`comfy_noise_scaling`);
  the samplers' later noise restarts a generator from the same seed (:class:`ComfyNoise`;
  :class:`ComfyKSamplerNoise` combines both for ``guided_sample``). Not reproduced: the torchsde
  Brownian tree of ComfyUI's SDE samplers, CUDA generators, and inpainting's re-noised kept region.

Kept as ours on purpose (ComfyUI is wrong there): ``kl_optimal`` at 1 step is [σ_max, 0] where
ComfyUI divides 0 by 0 and returns NaN; ``ipndm_v`` uses exact variable-step Adams–Bashforth weights
where ComfyUI's (from diff-solvers) are not Adams–Bashforth even on equal steps at order 4 (57, −65,
43, −11)/24 instead of (55, −59, 37, −9)/24; ``uni_pc`` at 1 step takes one step where ComfyUI
returns its input. ``beta`` agrees with ComfyUI since :func:`~nodes.diffusion.schedules.beta_ppf`
is exact at the symmetric median.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from nodes.diffusion.conventions import Denoiser
from nodes.diffusion.names import COMFY_SAMPLER_ALIASES, unsupported_sampler_message
from nodes.diffusion.sampler_steps import Callback, Model, Noise, Sampler, _call, _no_noise
from nodes.diffusion.samplers import SAMPLERS
from nodes.diffusion.schedules import _append_zero, calculate_sigmas

DISCARD_PENULTIMATE_SIGMA_SAMPLERS: frozenset[str] = frozenset(
    {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}
)
DENOISED_LAST_STEP_SAMPLERS: frozenset[str] = frozenset({"lms"})
"""Samplers whose last step ComfyUI replaces by the denoised prediction where ours integrate to 0."""


def sigmas_ddim_uniform_comfy(n: int, table: torch.Tensor) -> torch.Tensor:
    """ComfyUI's 'ddim_uniform': training σ at indices 1, 1+k, 1+2k, … < T with k = max(⌊T/n⌋, 1),
    reversed, then 0 (no 0 appended when σ[1] is already ≈ 0: then n + 1 is used for k)."""
    steps, append_zero = n, True
    if math.isclose(float(table[1]), 0, abs_tol=1e-5):
        steps, append_zero = n + 1, False
    stride = max(len(table) // steps, 1)
    picks = table[1::stride].to(torch.float64).flip(0)
    return _append_zero(picks).float() if append_zero else picks.float()


def comfy_calculate_sigmas(scheduler: str, model: Denoiser, steps: int) -> torch.Tensor:
    """ComfyUI's ``calculate_sigmas``: ours, except 'ddim_uniform' (see the module docstring)."""
    if scheduler == "ddim_uniform":
        return sigmas_ddim_uniform_comfy(steps, model.sigmas)
    return calculate_sigmas(scheduler, model, steps)


def comfy_sigmas(
    scheduler: str, model: Denoiser, steps: int, denoise: float = 1.0, sampler_name: str = "euler"
) -> torch.Tensor:
    """The σ list ComfyUI's KSampler uses for (scheduler, steps, denoise, sampler_name) on ``model``.

    Float32, ending in 0; empty when ``denoise`` ≤ 0 (the node then returns its latent unchanged).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")

    def compute(n: int) -> torch.Tensor:
        if sampler_name not in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
            return comfy_calculate_sigmas(scheduler, model, n)
        sigmas = comfy_calculate_sigmas(scheduler, model, n + 1)
        return torch.cat([sigmas[:-2], sigmas[-1:]])

    if denoise > 0.9999:
        return compute(steps)
    if denoise <= 0:
        return torch.zeros(0)
    return compute(int(steps / denoise))[-(steps + 1) :]


def comfy_step_range(
    sigmas: torch.Tensor, start_step: int, last_step: int, force_full_denoise: bool
) -> torch.Tensor | None:
    """KSamplerAdvanced's slice of the σ list: up to ``last_step`` (its σ set to 0 when
    ``force_full_denoise``), from ``start_step``; None when nothing is left to sample (ComfyUI then
    returns the latent unchanged)."""
    if last_step < len(sigmas) - 1:
        sigmas = sigmas[: last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step >= len(sigmas) - 1:
        return None
    return sigmas[start_step:]


def sample_denoised_last_step(
    sampler: Sampler,
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise = _no_noise,
    callback: Callback = None,
) -> torch.Tensor:
    """Run ``sampler`` down to the last nonzero σ, then return the denoised prediction there.

    ComfyUI's ``lms`` ends so; the model is evaluated once at that σ either way.
    """
    if len(sigmas) < 2 or float(sigmas[-1]) != 0:
        return sampler(model, x, sigmas, noise=noise, callback=callback)
    x = sampler(model, x, sigmas[:-1], noise=noise, callback=callback)
    sigma = float(sigmas[-2])
    denoised = _call(model, x, sigma)
    if callback:
        callback(len(sigmas) - 2, x, sigma, denoised)
    return denoised


def comfy_sampler(name: str) -> Sampler:
    """The sampler behind ComfyUI's ``sampler_name``, with ComfyUI's end-of-run behaviour.

    Raises ValueError with :func:`~nodes.diffusion.names.unsupported_sampler_message` for names we
    do not implement.
    """
    message = unsupported_sampler_message(name)
    if message is not None:
        raise ValueError(message)
    base = SAMPLERS[COMFY_SAMPLER_ALIASES.get(name, name)]
    if name not in DENOISED_LAST_STEP_SAMPLERS:
        return base

    def sample(
        model: Model,
        x: torch.Tensor,
        sigmas: torch.Tensor,
        *,
        noise: Noise = _no_noise,
        callback: Callback = None,
    ) -> torch.Tensor:
        return sample_denoised_last_step(base, model, x, sigmas, noise=noise, callback=callback)

    sample.__doc__ = f"{name} as ComfyUI runs it: its last step returns the denoised prediction."
    return sample


def comfy_initial_noise(
    seed: int,
    shape: Sequence[int],
    batch_index: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """ComfyUI's ``prepare_noise``: standard normal noise (B, C, H, W) on the CPU from one seed.

    Without ``batch_index`` one ``torch.randn`` draws the whole batch. With it (a latent's
    "batch_index", e.g. from a latent batch split), per-sample draws are made in index order up to
    the largest index and sample b gets draw ``batch_index[b]``, so a picture keeps its noise when
    taken out of its batch.
    """
    generator = torch.Generator().manual_seed(int(seed))
    if batch_index is None:
        return torch.randn(tuple(shape), generator=generator, dtype=dtype)
    unique, inverse = np.unique(np.asarray(batch_index), return_inverse=True)
    single = (1, *tuple(shape)[1:])
    draws = [torch.randn(single, generator=generator, dtype=dtype) for _ in range(int(unique[-1]) + 1)]
    return torch.cat([draws[int(unique[i])] for i in inverse.reshape(-1)])  # (B, C, H, W)


def _max_denoise(sigma_0: float, sigma_max: float) -> bool:
    return math.isclose(sigma_max, sigma_0, rel_tol=1e-5) or sigma_0 > sigma_max


def comfy_noise_scaling(
    latent: torch.Tensor, noise: torch.Tensor, sigma_0: float, sigma_max: float
) -> torch.Tensor:
    """ComfyUI's first sample for ε/v models: latent + noise·√(1 + σ₀²) when σ₀ ≥ σ_max (within
    1e-5 relative), else latent + noise·σ₀ (ComfyUI ``EPS.noise_scaling`` with ``max_denoise``)."""
    return latent + noise * (math.sqrt(1 + sigma_0**2) if _max_denoise(sigma_0, sigma_max) else sigma_0)


class ComfyNoise:
    """The noise ComfyUI's ancestral samplers draw after the first step, for our ``noise`` parameter.

    k-diffusion's ``default_noise_sampler`` seeded with the KSampler seed: one generator, seeded
    once, each call one ``torch.randn`` of the whole batch. The generator is on the CPU, so draws
    equal ComfyUI's when ComfyUI samples on the CPU; ComfyUI on CUDA draws from a CUDA generator,
    whose stream differs. Note that in ComfyUI the first draw equals the initial noise (same seed).
    ComfyUI's SDE samplers (dpmpp_sde, dpmpp_2m_sde(_heun), dpmpp_3m_sde) use a seeded torchsde
    Brownian tree instead, which this does not reproduce: their results match ComfyUI in
    distribution only.
    """

    def __init__(self, seed: int, shape: Sequence[int], device: torch.device, dtype: torch.dtype):
        self.generator = torch.Generator().manual_seed(int(seed))
        self.shape, self.device, self.dtype = tuple(shape), device, dtype

    def __call__(self) -> torch.Tensor:
        return torch.randn(self.shape, generator=self.generator, dtype=self.dtype).to(self.device)


class ComfyKSamplerNoise:
    """A ``noise_source`` for :func:`~nodes.diffusion.sampling.guided_sample` that reproduces KSampler.

    The first call gives ComfyUI's initial noise (:func:`comfy_initial_noise`, zeros when
    ``add_noise`` is off), multiplied by √(1 + σ₀²)/σ₀ when σ₀ is σ_max so that guided_sample's
    ``start + σ₀·n`` equals ComfyUI's :func:`comfy_noise_scaling`. Later calls are the sampler's
    noise, :class:`ComfyNoise` (a fresh generator from the same seed, so its first draw repeats the
    initial noise, as in ComfyUI).
    """

    def __init__(
        self,
        seed: int,
        shape: Sequence[int],
        device: torch.device,
        dtype: torch.dtype,
        *,
        sigma_0: float,
        sigma_max: float,
        batch_index: Sequence[int] | None = None,
        add_noise: bool = True,
    ):
        first = comfy_initial_noise(seed, shape, batch_index) if add_noise else torch.zeros(tuple(shape))
        scale = math.sqrt(1 + sigma_0**2) / sigma_0 if _max_denoise(sigma_0, sigma_max) else 1.0
        self.first: torch.Tensor | None = (first * scale).to(device, dtype)
        self.stream = ComfyNoise(seed, shape, device, dtype)

    def __call__(self) -> torch.Tensor:
        if self.first is None:
            return self.stream()
        first, self.first = self.first, None
        return first
