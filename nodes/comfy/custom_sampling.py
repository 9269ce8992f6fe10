"""ComfyUI's custom-sampling nodes: samplers, schedules, noise and guiders as separate values.

GUIDER values are GUIDANCE programs (the guider nodes build CFG programs, and SamplerCustomAdvanced
also takes any GUIDANCE); SAMPLER is a sampler name; SIGMAS a σ list ending in 0; NOISE a seed, or
none (DisableNoise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graph_runtime.api import Boolean, Combo, Context, Float, Int, Node, Output, Socket
from nodes.diffusion.names import COMFY_SAMPLER_NAMES, COMFY_SCHEDULER_NAMES

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

    display_name = "KSamplerSelect"
    category = "sampling/custom_sampling/samplers"
    inputs = (
        Combo(
            name="sampler_name",
            options=COMFY_SAMPLER_NAMES,
            default="euler",
            tooltip="the sampling method (ComfyUI's names)",
        ),
    )
    outputs = (Output("SAMPLER", "SAMPLER"),)

    @staticmethod
    def run(ctx: Context, sampler_name: str) -> tuple[str]:
        return (sampler_name,)


class BasicScheduler(Node):
    """The σ list of a named schedule for ``model`` (``denoise`` < 1: its last steps)."""

    display_name = "BasicScheduler"
    category = "sampling/custom_sampling/schedulers"
    inputs = (
        Socket(name="model", type="MODEL", tooltip="the model whose noise schedule to follow"),
        Combo(
            name="scheduler",
            options=COMFY_SCHEDULER_NAMES,
            default="simple",
            tooltip="the schedule's spacing (ComfyUI's names)",
        ),
        Int(name="steps", default=20, min=1, max=10000, tooltip="number of steps"),
        Float(
            name="denoise",
            default=1.0,
            min=0.0,
            max=1.0,
            step=0.01,
            tooltip="share of the schedule to keep, from its end (1: all of it)",
        ),
    )
    outputs = (Output("SIGMAS", "SIGMAS"),)

    @staticmethod
    def run(ctx: Context, model: Denoiser, scheduler: str, steps: int, denoise: float) -> tuple[torch.Tensor]:
        import torch

        from nodes.diffusion.comfy_parity import comfy_sigmas

        if denoise <= 0:
            return (torch.zeros(0),)
        return (comfy_sigmas(scheduler, model, steps, denoise),)


# steps, σ_max, σ_min as ComfyUI's explicit schedulers take them (its defaults are SD's σ range)
SIGMA_RANGE = (
    Int(name="steps", default=20, min=1, max=10000, tooltip="number of steps"),
    Float(
        name="sigma_max",
        default=14.614642,
        min=0.0,
        max=SIGMA_LIMIT,
        step=0.01,
        round=False,
        tooltip="the first σ",
    ),
    Float(
        name="sigma_min",
        default=0.0291675,
        min=0.0,
        max=SIGMA_LIMIT,
        step=0.01,
        round=False,
        tooltip="the last σ before 0",
    ),
)


class KarrasScheduler(Node):
    """σ_i = (σ_max^(1/ρ) + i/(n−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, then 0 (Karras et al. 2022, eq. 5)."""

    display_name = "KarrasScheduler"
    category = "sampling/custom_sampling/schedulers"
    inputs = (
        *SIGMA_RANGE,
        Float(
            name="rho",
            default=7.0,
            min=0.0,
            max=100.0,
            step=0.01,
            round=False,
            tooltip="ρ of Karras et al. 2022 (7: their default)",
        ),
    )
    outputs = (Output("SIGMAS", "SIGMAS"),)

    @staticmethod
    def run(ctx: Context, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple[torch.Tensor]:
        from nodes.diffusion.schedules import sigmas_karras

        return (sigmas_karras(steps, sigma_min, sigma_max, rho),)


class ExponentialScheduler(Node):
    """σ log-uniform from σ_max to σ_min, then 0."""

    display_name = "ExponentialScheduler"
    category = "sampling/custom_sampling/schedulers"
    inputs = (*SIGMA_RANGE,)
    outputs = (Output("SIGMAS", "SIGMAS"),)

    @staticmethod
    def run(ctx: Context, steps: int, sigma_max: float, sigma_min: float) -> tuple[torch.Tensor]:
        from nodes.diffusion.schedules import sigmas_exponential

        return (sigmas_exponential(steps, sigma_min, sigma_max),)


class SplitSigmas(Node):
    """Split a σ list at ``step``: high = σ[0..step], low = σ[step..] (they share σ[step])."""

    display_name = "SplitSigmas"
    category = "sampling/custom_sampling/sigmas"
    inputs = (
        Socket(name="sigmas", type="SIGMAS", tooltip="the schedule to split"),
        Int(
            name="step",
            default=0,
            min=0,
            max=10000,
            tooltip="where: the first part ends at this step, the second starts there",
        ),
    )
    outputs = (Output("high_sigmas", "SIGMAS"), Output("low_sigmas", "SIGMAS"))

    @staticmethod
    def run(ctx: Context, sigmas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (sigmas[: step + 1], sigmas[step:])


class RandomNoise(Node):
    """Initial noise from ``noise_seed`` (per sample: seed + batch index)."""

    display_name = "RandomNoise"
    category = "sampling/custom_sampling/noise"
    inputs = (
        Int(
            name="noise_seed",
            default=0,
            min=0,
            max=SEED_MAX,
            control_after_generate=True,
            tooltip="noise seed of the first sample; sample i uses seed + i",
        ),
    )
    outputs = (Output("NOISE", "NOISE"),)

    @staticmethod
    def run(ctx: Context, noise_seed: int) -> tuple[NoiseSpec]:
        return (NoiseSpec(noise_seed),)


class DisableNoise(Node):
    """No initial noise: sample the latent as it is (a second pass over leftover noise)."""

    display_name = "DisableNoise"
    category = "sampling/custom_sampling/noise"
    inputs = ()
    outputs = (Output("NOISE", "NOISE"),)

    @staticmethod
    def run(ctx: Context) -> tuple[NoiseSpec]:
        return (NoiseSpec(None),)


class BasicGuider(Node):
    """One prediction, no guidance: D(x, σ, c)."""

    display_name = "BasicGuider"
    category = "sampling/custom_sampling/guiders"
    inputs = (
        Socket(name="model", type="MODEL", tooltip="the denoiser"),
        Socket(
            name="conditioning", type="CONDITIONING", tooltip="the condition c of D(x, σ, c), no guidance"
        ),
    )
    outputs = (Output("GUIDER", "GUIDER"),)

    @staticmethod
    def run(ctx: Context, model: Denoiser, conditioning: Conditioning) -> tuple[Guidance]:
        from nodes.diffusion.regions import predict

        return (predict(model, conditioning),)


class CFGGuider(Node):
    """Classifier-free guidance ``u + cfg·(c − u)`` (our CFGCombine, as a GUIDER)."""

    display_name = "CFGGuider"
    category = "sampling/custom_sampling/guiders"
    inputs = (
        Socket(name="model", type="MODEL", tooltip="the denoiser"),
        Socket(name="positive", type="CONDITIONING", tooltip="c: the condition to steer towards"),
        Socket(name="negative", type="CONDITIONING", tooltip="u: the unconditional or negative condition"),
        Float(
            name="cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="w in u + w·(c − u)"
        ),
    )
    outputs = (Output("GUIDER", "GUIDER"),)

    @staticmethod
    def run(
        ctx: Context, model: Denoiser, positive: Conditioning, negative: Conditioning, cfg: float
    ) -> tuple[Guidance]:
        from nodes.comfy.model_patches import comfy_cfg

        return (comfy_cfg(ctx, model, positive, negative, cfg),)


class PerpNegGuider(Node):
    """Perp-Neg (Armandpour et al. 2023): remove only the part of the negative orthogonal to the
    positive, relative to the empty prompt: ``u∅ + cfg·(δ⁺ − neg_scale·(δ⁻ − proj_δ⁺ δ⁻))``.

    guidegraph's PerpNeg rule, projected per sample; ComfyUI projects with one coefficient over the
    whole batch, which couples the samples of a batch (kept as ours; equal for batch 1).
    """

    category = "_for_testing"
    inputs = (
        Socket(name="model", type="MODEL", tooltip="the model to guide"),
        Socket(name="positive", type="CONDITIONING", tooltip="what to include"),
        Socket(name="negative", type="CONDITIONING", tooltip="what to exclude"),
        Socket(name="empty_conditioning", type="CONDITIONING", tooltip="the empty prompt's conditioning"),
        Float(name="cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="guidance scale"),
        Float(name="neg_scale", default=1.0, min=0.0, max=100.0, step=0.01, tooltip="weight of the negative"),
    )
    outputs = (Output("GUIDER", "GUIDER"),)

    @staticmethod
    def run(
        ctx: Context,
        model: Denoiser,
        positive: Conditioning,
        negative: Conditioning,
        empty_conditioning: Conditioning,
        cfg: float,
        neg_scale: float,
    ) -> tuple[Guidance]:
        from nodes.rule_nodes import PerpNegGuidance

        return PerpNegGuidance.run(ctx, model, positive, negative, empty_conditioning, cfg, neg_scale)


class DualCFGGuider(Node):
    """Two conditions and a negative: ``u + s₂·(c₂ − u) + s₁·(c₁ − c₂)`` ("regular"; with c₁ the
    image-and-text condition, c₂ the image-only one and u no image, InstructPix2Pix's two-scale
    guidance, Brooks et al. 2023, with s₁ = s_T and s₂ = s_I), or "nested",
    ``u + s₂·(c₂ + s₁·(c₁ − c₂) − u)``. One batched forward of the three predictions."""

    display_name = "DualCFGGuider"
    category = "sampling/custom_sampling/guiders"
    inputs = (
        Socket(name="model", type="MODEL", tooltip="the denoiser"),
        Socket(name="cond1", type="CONDITIONING", tooltip="c₁: the condition to steer towards"),
        Socket(
            name="cond2", type="CONDITIONING", tooltip="c₂: the second condition (e.g. an image condition)"
        ),
        Socket(name="negative", type="CONDITIONING", tooltip="u: the unconditional or negative condition"),
        Float(
            name="cfg_conds",
            default=8.0,
            min=0.0,
            max=100.0,
            step=0.1,
            round=0.01,
            tooltip="s₁ in u + s₂·(c₂ − u) + s₁·(c₁ − c₂)",
        ),
        Float(
            name="cfg_cond2_negative",
            default=8.0,
            min=0.0,
            max=100.0,
            step=0.1,
            round=0.01,
            tooltip="s₂ in u + s₂·(c₂ − u) + s₁·(c₁ − c₂)",
        ),
        Combo(
            name="style",
            options=("regular", "nested"),
            default="regular",
            optional=True,
            tooltip="regular: u + s₂·(c₂ − u) + s₁·(c₁ − c₂); nested: u + s₂·(c₂ + s₁·(c₁ − c₂) − u)",
        ),
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
        style: str = "regular",
    ) -> tuple[Guidance]:
        from nodes.diffusion.guidance import dual_cfg
        from nodes.diffusion.regions import predict

        u, c1, c2 = (predict(model, c) for c in (negative, cond1, cond2))
        return (dual_cfg(c1, c2, u, cfg_cond2_negative, cfg_conds, style == "nested"),)


def _sample(
    ctx: Context, guider: Guidance, noise: NoiseSpec, sampler: str, sigmas: torch.Tensor, latent: Latent
) -> tuple[Latent, Latent]:
    """Run ``guider`` along ``sigmas``; (output, the last x̂0)."""
    from nodes.diffusion.types import Latent
    from nodes.sampling_nodes import run_sampler

    if len(sigmas) < 2:
        return (latent, latent)
    last: list[Any] = [None]
    seed, add = noise.seed or 0, noise.seed is not None
    out = run_sampler(ctx, guider, latent, seed, sigmas, sampler, add_noise=add, last=last, comfy=True)[0]
    if last[0] is None:
        return (out, out)
    return (out, Latent(last[0].float().cpu(), latent.noise_mask, latent.batch_index))


class SamplerCustomAdvanced(Node):
    """Sample with separately chosen noise, guider, sampler and σ list → (output, denoised_output).

    ``guider`` takes a GUIDER or any GUIDANCE program of ours.
    """

    display_name = "SamplerCustomAdvanced"
    category = "sampling/custom_sampling"
    inputs = (
        Socket(name="noise", type="NOISE", tooltip="the noise source (RandomNoise or DisableNoise)"),
        Socket(name="guider", type="GUIDER,GUIDANCE", tooltip="the guidance (a guider node)"),
        Socket(name="sampler", type="SAMPLER", tooltip="the sampling method (KSamplerSelect)"),
        Socket(name="sigmas", type="SIGMAS", tooltip="the noise schedule (a scheduler node)"),
        Socket(
            name="latent_image", type="LATENT", tooltip="where to start: an empty latent or an encoded image"
        ),
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

    display_name = "SamplerCustom"
    category = "sampling/custom_sampling"
    inputs = (
        Socket(name="model", type="MODEL", tooltip="the denoiser"),
        Boolean(
            name="add_noise",
            default=True,
            tooltip="add noise at the first σ (off: start from the latent as it is)",
        ),
        Int(
            name="noise_seed",
            default=0,
            min=0,
            max=SEED_MAX,
            control_after_generate=True,
            tooltip="noise seed of the first sample; sample i uses seed + i",
        ),
        Float(
            name="cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="w in u + w·(c − u)"
        ),
        Socket(name="positive", type="CONDITIONING", tooltip="c: the condition to steer towards"),
        Socket(name="negative", type="CONDITIONING", tooltip="u: the unconditional or negative condition"),
        Socket(name="sampler", type="SAMPLER", tooltip="the sampling method (KSamplerSelect)"),
        Socket(name="sigmas", type="SIGMAS", tooltip="the noise schedule (a scheduler node)"),
        Socket(
            name="latent_image", type="LATENT", tooltip="where to start: an empty latent or an encoded image"
        ),
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
    PerpNegGuider,
    SamplerCustom,
    SamplerCustomAdvanced,
]
