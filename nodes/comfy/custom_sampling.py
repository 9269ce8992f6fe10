"""ComfyUI's custom-sampling nodes: samplers, schedules, noise and guiders as separate values.

GUIDER values are GUIDANCE programs (the guider nodes build CFG programs, and SamplerCustomAdvanced
also takes any GUIDANCE); SAMPLER is a sampler name; SIGMAS a σ list ending in 0; NOISE a seed, or
none (DisableNoise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graph_runtime.api import Boolean, Combo, Context, Float, Int, Node, Output, Socket
from nodes.diffusion.names import SAMPLER_NAMES, SCHEDULER_NAMES

if TYPE_CHECKING:
    import torch

    from nodes.diffusion.conventions import Denoiser
    from nodes.diffusion.guidance import Guidance
    from nodes.diffusion.types import Conditioning, Latent

SEED_MAX = 0xFFFFFFFFFFFFFFFF
SIGMA_LIMIT = 5000.0


@dataclass(frozen=True)
class NoiseSpec:
    """A NOISE value: the seed of the initial noise, or None to start from the latent as it is."""

    seed: int | None


class KSamplerSelect(Node):
    """Pick a sampler by name → SAMPLER."""

    category = "sampling/custom_sampling/samplers"
    inputs = (Combo(name="sampler_name", options=SAMPLER_NAMES, default="euler"),)
    outputs = (Output("SAMPLER", "SAMPLER"),)

    @staticmethod
    def run(ctx: Context, sampler_name: str) -> tuple[str]:
        return (sampler_name,)


class BasicScheduler(Node):
    """The σ list of a named schedule for ``model`` (``denoise`` < 1: its last steps)."""

    category = "sampling/custom_sampling/schedulers"
    inputs = (
        Socket(name="model", type="MODEL"),
        Combo(name="scheduler", options=SCHEDULER_NAMES, default="simple"),
        Int(name="steps", default=20, min=1, max=10000),
        Float(name="denoise", default=1.0, min=0.0, max=1.0, step=0.01),
    )
    outputs = (Output("SIGMAS", "SIGMAS"),)

    @staticmethod
    def run(ctx: Context, model: Denoiser, scheduler: str, steps: int, denoise: float) -> tuple[torch.Tensor]:
        import torch

        from nodes.diffusion.schedules import sigmas_for_denoise

        if denoise <= 0:
            return (torch.zeros(0),)
        return (sigmas_for_denoise(scheduler, model, steps, denoise),)


class KarrasScheduler(Node):
    """σ_i = (σ_max^(1/ρ) + i/(n−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, then 0 (Karras et al. 2022, eq. 5)."""

    category = "sampling/custom_sampling/schedulers"
    inputs = (
        Int(name="steps", default=20, min=1, max=10000),
        Float(name="sigma_max", default=14.614642, min=0.0, max=SIGMA_LIMIT, step=0.01, round=False),
        Float(name="sigma_min", default=0.0291675, min=0.0, max=SIGMA_LIMIT, step=0.01, round=False),
        Float(name="rho", default=7.0, min=0.0, max=100.0, step=0.01, round=False),
    )
    outputs = (Output("SIGMAS", "SIGMAS"),)

    @staticmethod
    def run(ctx: Context, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple[torch.Tensor]:
        from nodes.diffusion.schedules import sigmas_karras

        return (sigmas_karras(steps, sigma_min, sigma_max, rho),)


class ExponentialScheduler(Node):
    """σ log-uniform from σ_max to σ_min, then 0."""

    category = "sampling/custom_sampling/schedulers"
    inputs = (
        Int(name="steps", default=20, min=1, max=10000),
        Float(name="sigma_max", default=14.614642, min=0.0, max=SIGMA_LIMIT, step=0.01, round=False),
        Float(name="sigma_min", default=0.0291675, min=0.0, max=SIGMA_LIMIT, step=0.01, round=False),
    )
    outputs = (Output("SIGMAS", "SIGMAS"),)

    @staticmethod
    def run(ctx: Context, steps: int, sigma_max: float, sigma_min: float) -> tuple[torch.Tensor]:
        from nodes.diffusion.schedules import sigmas_exponential

        return (sigmas_exponential(steps, sigma_min, sigma_max),)


class SplitSigmas(Node):
    """Split a σ list at ``step``: high = σ[0..step], low = σ[step..] (they share σ[step])."""

    category = "sampling/custom_sampling/sigmas"
    inputs = (Socket(name="sigmas", type="SIGMAS"), Int(name="step", default=0, min=0, max=10000))
    outputs = (Output("high_sigmas", "SIGMAS"), Output("low_sigmas", "SIGMAS"))

    @staticmethod
    def run(ctx: Context, sigmas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (sigmas[: step + 1], sigmas[step:])


class RandomNoise(Node):
    """Initial noise from ``noise_seed`` (per sample: seed + batch index)."""

    category = "sampling/custom_sampling/noise"
    inputs = (Int(name="noise_seed", default=0, min=0, max=SEED_MAX, control_after_generate=True),)
    outputs = (Output("NOISE", "NOISE"),)

    @staticmethod
    def run(ctx: Context, noise_seed: int) -> tuple[NoiseSpec]:
        return (NoiseSpec(noise_seed),)


class DisableNoise(Node):
    """No initial noise: sample the latent as it is (a second pass over leftover noise)."""

    category = "sampling/custom_sampling/noise"
    inputs = ()
    outputs = (Output("NOISE", "NOISE"),)

    @staticmethod
    def run(ctx: Context) -> tuple[NoiseSpec]:
        return (NoiseSpec(None),)


class BasicGuider(Node):
    """One prediction, no guidance: D(x, σ, c)."""

    category = "sampling/custom_sampling/guiders"
    inputs = (Socket(name="model", type="MODEL"), Socket(name="conditioning", type="CONDITIONING"))
    outputs = (Output("GUIDER", "GUIDER"),)

    @staticmethod
    def run(ctx: Context, model: Denoiser, conditioning: Conditioning) -> tuple[Guidance]:
        from nodes.diffusion.regions import predict

        return (predict(model, conditioning),)


class CFGGuider(Node):
    """Classifier-free guidance ``u + cfg·(c − u)`` (our CFGCombine, as a GUIDER)."""

    category = "sampling/custom_sampling/guiders"
    inputs = (
        Socket(name="model", type="MODEL"),
        Socket(name="positive", type="CONDITIONING"),
        Socket(name="negative", type="CONDITIONING"),
        Float(name="cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01),
    )
    outputs = (Output("GUIDER", "GUIDER"),)

    @staticmethod
    def run(
        ctx: Context, model: Denoiser, positive: Conditioning, negative: Conditioning, cfg: float
    ) -> tuple[Guidance]:
        from nodes.guidance_nodes import CFGCombine

        return CFGCombine.run(ctx, model, positive, negative, cfg)


class DualCFGGuider(Node):
    """Two conditions and a negative: ``u + s₂·(c₂ − u) + s₁·(c₁ − c₂)`` (ComfyUI's "regular"
    style; with c₂ an image condition this is InstructPix2Pix's two-scale guidance, Brooks et al. 2023)."""

    category = "sampling/custom_sampling/guiders"
    inputs = (
        Socket(name="model", type="MODEL"),
        Socket(name="cond1", type="CONDITIONING"),
        Socket(name="cond2", type="CONDITIONING"),
        Socket(name="negative", type="CONDITIONING"),
        Float(name="cfg_conds", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01),
        Float(name="cfg_cond2_negative", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01),
    )
    outputs = (Output("GUIDER", "GUIDER"),)

    @staticmethod
    def run(
        ctx: Context,
        model: Denoiser,
        cond1: Conditioning,
        cond2: Conditioning,
        negative: Conditioning,
        cfg_conds: float,
        cfg_cond2_negative: float,
    ) -> tuple[Guidance]:
        from nodes.diffusion.guidance import combine
        from nodes.diffusion.regions import predict

        u, c1, c2 = (predict(model, c) for c in (negative, cond1, cond2))
        # u + s₂(c₂ − u) + s₁(c₁ − c₂) = u + (s₂ − s₁)(c₂ − u) + s₁(c₁ − u)
        return (combine(u, [(c2, cfg_cond2_negative - cfg_conds), (c1, cfg_conds)]),)


def _sample(
    ctx: Context, guider: Guidance, noise: NoiseSpec, sampler: str, sigmas: torch.Tensor, latent: Latent
) -> tuple[Latent, Latent]:
    """Run ``guider`` along ``sigmas``; (output, the last x̂0)."""
    from nodes.diffusion.types import Latent
    from nodes.sampling_nodes import run_sampler

    if len(sigmas) < 2:
        return (latent, latent)
    last: list[Any] = [None]
    out = run_sampler(
        ctx, guider, latent, noise.seed or 0, sigmas, sampler, add_noise=noise.seed is not None, last=last
    )[0]
    if last[0] is None:
        return (out, out)
    return (out, Latent(last[0].float().cpu(), latent.noise_mask, latent.batch_index))


class SamplerCustomAdvanced(Node):
    """Sample with separately chosen noise, guider, sampler and σ list → (output, denoised_output).

    ``guider`` takes a GUIDER or any GUIDANCE program of ours.
    """

    category = "sampling/custom_sampling"
    inputs = (
        Socket(name="noise", type="NOISE"),
        Socket(name="guider", type="GUIDER,GUIDANCE"),
        Socket(name="sampler", type="SAMPLER"),
        Socket(name="sigmas", type="SIGMAS"),
        Socket(name="latent_image", type="LATENT"),
    )
    outputs = (Output("output", "LATENT"), Output("denoised_output", "LATENT"))

    @staticmethod
    def run(
        ctx: Context,
        noise: NoiseSpec,
        guider: Guidance,
        sampler: str,
        sigmas: torch.Tensor,
        latent_image: Latent,
    ) -> tuple[Latent, Latent]:
        return _sample(ctx, guider, noise, sampler, sigmas, latent_image)


class SamplerCustom(Node):
    """Sample with CFG, a chosen sampler and σ list → (output, denoised_output)."""

    category = "sampling/custom_sampling"
    inputs = (
        Socket(name="model", type="MODEL"),
        Boolean(name="add_noise", default=True),
        Int(name="noise_seed", default=0, min=0, max=SEED_MAX, control_after_generate=True),
        Float(name="cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01),
        Socket(name="positive", type="CONDITIONING"),
        Socket(name="negative", type="CONDITIONING"),
        Socket(name="sampler", type="SAMPLER"),
        Socket(name="sigmas", type="SIGMAS"),
        Socket(name="latent_image", type="LATENT"),
    )
    outputs = (Output("output", "LATENT"), Output("denoised_output", "LATENT"))

    @staticmethod
    def run(
        ctx: Context,
        model: Denoiser,
        add_noise: bool,
        noise_seed: int,
        cfg: float,
        positive: Conditioning,
        negative: Conditioning,
        sampler: str,
        sigmas: torch.Tensor,
        latent_image: Latent,
    ) -> tuple[Latent, Latent]:
        (guider,) = CFGGuider.run(ctx, model, positive, negative, cfg)
        return _sample(
            ctx, guider, NoiseSpec(noise_seed if add_noise else None), sampler, sigmas, latent_image
        )


NODES: list[type[Node]] = [
    KSamplerSelect,
    BasicScheduler,
    KarrasScheduler,
    ExponentialScheduler,
    SplitSigmas,
    RandomNoise,
    DisableNoise,
    BasicGuider,
    CFGGuider,
    DualCFGGuider,
    SamplerCustom,
    SamplerCustomAdvanced,
]
