"""Self-recurrence (Bansal et al. 2023, "Universal Guidance for Diffusion Models", Alg. 1): repeat
every step of a one-step sampler k times, re-noising back to the step's σ between repeats.

In σ-space (x = x0 + σ·n) the paper's re-noising ``z_t = √(α_t/α_{t−1})·z_{t−1} + √(1 − α_t/α_{t−1})·ξ``
is ``x ← x' + √(σ_i² − σ_{i+1}²)·ξ``: it adds exactly the noise variance the step removed. So for each
step i, k times: ``x' = step(x; σ_i → σ_{i+1})``; then, unless it was the last repeat,
``x ← x' + √(σ_i² − σ_{i+1}²)·ξ`` with fresh noise ξ from the run's per-sample generators; the last
repeat keeps x'. A guidance rule thus gets k looks at each noise level, which the paper finds
necessary for strong external guidance (forward and backward guidance, "Universal guidance").

Only samplers whose step depends on (σ_i, σ_{i+1}) alone can be repeated: a multistep sampler's
history would hold the discarded repeats, and ``dpm_fast``, ``dpm_adaptive`` and ``heunpp2`` place
their evaluations from the whole σ list (``tests/nodes/test_recurrence.py`` checks that every sampler
in :data:`ONE_STEP` gives the same run step by step as over the whole list).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from nodes.diffusion.names import COMFY_SAMPLER_ALIASES
from nodes.diffusion.sampler_steps import Callback, Model, Noise, Sampler, _no_noise
from nodes.diffusion.samplers import MULTISTEP, SAMPLERS

WHOLE_LIST: frozenset[str] = frozenset({"dpm_fast", "dpm_adaptive", "heunpp2"})  # steps from the whole σ list
ONE_STEP: frozenset[str] = frozenset(SAMPLERS) - MULTISTEP - WHOLE_LIST


def check_recurrence(sampler_name: str, recurrence: int) -> None:
    """Refuse a recurrence the sampler cannot run: below 1, or above 1 on a sampler with history."""
    if recurrence < 1:
        raise ValueError(f"recurrence {recurrence}: expected 1 (no repeats) or more")
    if recurrence > 1 and COMFY_SAMPLER_ALIASES.get(sampler_name, sampler_name) not in ONE_STEP:
        why = (
            "places its evaluations from the whole σ list, which one repeated step does not see"
            if sampler_name in WHOLE_LIST
            else "is multistep: a repeat would reuse the evaluations it discarded"
        )
        raise ValueError(
            f"recurrence {recurrence}: self-recurrence repeats each step after re-noising, but sampler "
            f"{sampler_name!r} {why}; choose a one-step sampler ({', '.join(sorted(ONE_STEP))}) or "
            "recurrence 1"
        )


def with_recurrence(sampler: Sampler, repeats: int) -> Sampler:
    """``sampler`` with every step repeated ``repeats`` times (module docstring); 1 is ``sampler`` itself."""
    if repeats == 1:
        return sampler

    def sample(
        model: Model,
        x: torch.Tensor,
        sigmas: torch.Tensor,
        *,
        noise: Noise = _no_noise,
        callback: Callback = None,
        **extra: Any,
    ) -> torch.Tensor:
        for i in range(len(sigmas) - 1):
            sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
            renoise_std = math.sqrt(sigma**2 - sigma_next**2)
            step_callback = _at_step(callback, i)
            for r in range(repeats):
                x_next = sampler(model, x, sigmas[i : i + 2], noise=noise, callback=step_callback, **extra)
                x = x_next + noise() * renoise_std if r < repeats - 1 else x_next
        return x

    sample.__doc__ = f"{getattr(sampler, '__name__', 'the sampler')} with each step repeated {repeats} times"
    return sample


def _at_step(callback: Callback, index: int) -> Callback:
    """A one-step run reports step 0; the caller wants the step's index in the whole run."""
    if callback is None:
        return None
    report = callback

    def at(_: int, x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> None:
        report(index, x, sigma, denoised)

    return at
