"""One guided sampling run: compile the GUIDANCE program, draw per-sample noise, run a named sampler.

Pure torch (no engine imports): the Sampler node is a thin adapter over :func:`guided_sample`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from nodes.diffusion.conventions import Denoiser
from nodes.diffusion.guidance import Guidance, Prediction
from nodes.diffusion.program import CompiledGuidance, ForwardStats
from nodes.diffusion.recurrence import check_recurrence, with_recurrence
from nodes.diffusion.samplers import MULTISTEP, RENOISING, SAMPLERS, Callback, PerSampleNoise, Sampler


def leaf_models(root: Guidance) -> list[Denoiser]:
    """The distinct models of a program's leaves, in first-seen order (iterative walk)."""
    seen: list[Denoiser] = []
    stack, visited = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, Prediction) and node.model not in seen:
            seen.append(node.model)
        stack.extend(reversed(node.children()))
    return seen


def guided_sample(
    program: Guidance,
    start: torch.Tensor,
    seeds: Sequence[int],
    sigmas: torch.Tensor,
    sampler_name: str,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    noise_mask: torch.Tensor | None = None,
    callback: Callback = None,
    max_batch: int = 0,
    noise_source: Callable[[], torch.Tensor] | None = None,
    sampler_fn: Sampler | None = None,
    recurrence: int = 1,
) -> tuple[torch.Tensor, ForwardStats]:
    """Sample from ``start`` (B, C, H, W; zeros for txt2img, an image for img2img) along ``sigmas``.

    The initial sample is ``start + σ_0·n`` with n drawn from generator ``seeds[b]`` for sample b (the
    same generator then feeds the sampler's later noise), so a sample's result does not depend on its
    position in the batch. ``noise_source`` replaces that noise (both the first draw and the sampler's
    later ones) with another convention, e.g. ComfyUI's one draw for the whole batch. With
    ``noise_mask`` (1 = regenerate) the kept region is pinned to ``start``
    inside the denoiser and again at the end. Runs under ``torch.no_grad``; gradient rules switch
    autograd on locally. The program is compiled on ``sigmas``, which places step-counted rules and
    step-fraction windows; a CFG++ rule hands its re-noising prediction to the sampler.
    ``sampler_fn`` runs instead of ``SAMPLERS[sampler_name]`` (ComfyUI's variant of a named sampler).
    ``recurrence`` > 1 repeats every step that many times, re-noising in between (universal guidance's
    self-recurrence, :mod:`nodes.diffusion.recurrence`; one-step samplers only).
    """
    if sampler_fn is None and sampler_name not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler_name!r}; expected one of {sorted(SAMPLERS)}")
    if len(seeds) != start.shape[0]:
        raise ValueError(f"{len(seeds)} seeds for a batch of {start.shape[0]}")
    check_recurrence(sampler_name, recurrence)
    compiled = CompiledGuidance(
        program, seeds=seeds, device=device, dtype=dtype, max_batch=max_batch, sigmas=sigmas
    )
    if sampler_name in MULTISTEP and any(n.needs_single_step_sampler() for n in compiled.nodes):
        raise ValueError(
            f"the guidance holds CFG-Zero*'s zero-init, which multistep sampler {sampler_name!r} would "
            f"extrapolate from; choose a single-step sampler ({sorted(set(SAMPLERS) - MULTISTEP)})"
        )
    renoising = any(n.renoise_input is not None for n in compiled.nodes)
    if renoising and sampler_name not in RENOISING:
        raise ValueError(
            f"the guidance holds a CFG++ rule, which sampler {sampler_name!r} cannot run; "
            f"choose one of {sorted(RENOISING)}"
        )
    noise = noise_source or PerSampleNoise(seeds, start.shape[1:], device, dtype)
    latent = start.to(device, dtype)
    sigmas = sigmas.to(torch.float64)
    x = latent + noise() * float(sigmas[0])
    mask = None if noise_mask is None else noise_mask.to(device, dtype)

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = compiled(x, sigma)
        return out if mask is None else mask * out + (1 - mask) * latent

    def renoise() -> torch.Tensor | None:
        out = compiled.renoise
        return out if mask is None or out is None else mask * out + (1 - mask) * latent

    extra = {"renoise": renoise} if renoising else {}
    with torch.no_grad():
        run = with_recurrence(sampler_fn or SAMPLERS[sampler_name], recurrence)
        out = run(denoise, x, sigmas, noise=noise, callback=callback, **extra)
    if mask is not None:
        out = mask * out + (1 - mask) * latent
    return out, compiled.stats
