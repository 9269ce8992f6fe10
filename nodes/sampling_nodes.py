"""The Sampler (runs a GUIDANCE program along a schedule) and latent sources."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from graph_runtime.api import Combo, Context, Float, Footprint, Int, Node, Output, PreviewImage, Socket
from nodes.diffusion.memory import LatentCost, LatentSize
from nodes.diffusion.names import SAMPLER_NAMES, SCHEDULER_NAMES

if TYPE_CHECKING:
    import torch

    from nodes.diffusion.conventions import Denoiser
    from nodes.diffusion.guidance import Guidance
    from nodes.diffusion.types import Latent

SEED_MAX = 2**64 - 1


def preview_of(denoised: torch.Tensor) -> PreviewImage:
    """The first sample's x̂0 (C, H, W) in [-1, 1] → uint8 (H, W, 3) for the editor's live preview."""
    import torch

    first = denoised[0, :3].detach().float()
    if first.shape[0] < 3:
        first = first[:1].expand(3, -1, -1)  # grey preview for 1- or 2-channel data
    pixels = ((first.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (3, H, W)
    return PreviewImage(pixels.permute(1, 2, 0).cpu())  # (H, W, 3)


class Sampler(Node):
    """Sample with a GUIDANCE program: compiled once, then run at every model evaluation.

    ``sampler_name`` and ``scheduler`` use ComfyUI's names. Noise is drawn per sample from
    ``seed + index`` (index = the latent's batch index), so a sample does not depend on the batch.
    The start is ``latent + σ_0·n``, as in ComfyUI: an empty latent gives txt2img, and ``denoise`` < 1
    starts an encoded image at a lower σ (img2img); a latent
    noise mask regenerates only where it is 1. Reports progress with a preview every step and stops
    there when cancelled. ``max_batch`` > 0 splits a model's batched forward into chunks of that
    many rows (memory); 0 never splits. The noise schedule comes from ``schedule_model`` or, when the
    program has a single model, from that model; it is never guessed among several.
    ``recurrence`` k > 1 repeats every step k times, re-noising back to the step's σ with fresh seeded
    noise in between (universal guidance's self-recurrence, Bansal et al. 2023, Alg. 1): k times the
    model evaluations, for one-step samplers only.
    """

    category = "guidegraph/sampling"
    inputs = (
        Socket(
            name="guidance", type="GUIDANCE", tooltip="the GUIDANCE program, run at every model evaluation"
        ),
        Socket(
            name="latent",
            type="LATENT",
            tooltip="where to start: an empty latent (txt2img) or an encoded image",
        ),
        Int(
            name="seed",
            default=0,
            min=0,
            max=SEED_MAX,
            control_after_generate=True,
            tooltip="noise seed of the first sample; sample i uses seed + i",
        ),
        Int(name="steps", default=20, min=1, max=10000, tooltip="sampler steps along the schedule"),
        Combo(
            name="sampler_name",
            options=SAMPLER_NAMES,
            default="euler",
            tooltip="the sampling method (ComfyUI's names)",
        ),
        Combo(
            name="scheduler",
            options=SCHEDULER_NAMES,
            default="karras",
            tooltip="the noise schedule σ₀ > … > 0 (ComfyUI's names)",
        ),
        Float(
            name="denoise",
            default=1.0,
            min=0.01,
            max=1.0,
            step=0.01,
            tooltip="share of the schedule to run: 1 starts from pure noise, less keeps more of the input",
        ),
        Int(
            name="max_batch",
            default=0,
            min=0,
            max=1 << 20,
            optional=True,
            tooltip="split each model forward into chunks of this many rows (memory); 0: never",
        ),
        Socket(
            name="schedule_model",
            type="MODEL",
            optional=True,
            tooltip="whose noise schedule to sample on, when the program has several models",
        ),
        Combo(
            name="conventions",
            options=("guidegraph", "comfyui"),
            default="guidegraph",
            optional=True,
            tooltip="guidegraph: noise per sample from seed + index; comfyui: ComfyUI's batch noise, "
            "σ lists and sampler endings, as its KSampler",
        ),
        Int(
            name="recurrence",
            default=1,
            min=1,
            max=100,
            optional=True,
            tooltip="k: run each step k times, re-noising back to its σ in between (universal guidance's "
            "self-recurrence; one-step samplers only); 1: once",
        ),
    )
    outputs = (Output("LATENT", "LATENT"),)

    @staticmethod
    def run(
        ctx: Context,
        guidance: Guidance,
        latent: Latent,
        seed: int,
        steps: int,
        sampler_name: str,
        scheduler: str,
        denoise: float,
        max_batch: int | None = 0,
        schedule_model: Denoiser | None = None,
        conventions: str = "guidegraph",
        recurrence: int = 1,
    ) -> tuple[Latent]:
        from nodes.diffusion.recurrence import check_recurrence
        from nodes.diffusion.schedules import sigmas_for_denoise

        check_recurrence(sampler_name, recurrence)
        model = schedule_source(guidance, schedule_model)
        comfy = conventions == "comfyui"
        if comfy:
            from nodes.diffusion.comfy_parity import comfy_sigmas

            sigmas = comfy_sigmas(scheduler, model, steps, denoise, sampler_name)
            if len(sigmas) < 2:
                return (latent,)
        else:
            sigmas = sigmas_for_denoise(scheduler, model, steps, denoise)
        return run_sampler(
            ctx,
            guidance,
            latent,
            seed,
            sigmas,
            sampler_name,
            max_batch=max_batch or 0,
            comfy=comfy,
            recurrence=recurrence,
        )

    @staticmethod
    def footprint(inputs: Mapping[str, Any]) -> Footprint:
        """Working memory of sampling a latent of known size: per model evaluation a CFG pair per
        sample (rows = 2B; ``max_batch`` caps the rows of one forward)."""
        latent, max_batch = inputs.get("latent"), inputs.get("max_batch")
        if not isinstance(latent, LatentSize):
            return Footprint(outputs=(None,))
        rows = 2 * latent.shape[0]
        if type(max_batch) is int and max_batch > 0:
            rows = min(rows, max_batch)
        return Footprint(outputs=(latent,), working=latent.cost.sampling_bytes(latent.shape, rows))


class _NoFirstDraw:
    """A noise source whose first draw (the initial noise) is zero: sampling starts from the latent
    as it is (ComfyUI's ``add_noise: disable``); later draws come from ``source``."""

    def __init__(self, source: Any, like: torch.Tensor) -> None:
        self.source, self.like, self.first = source, like, True

    def __call__(self) -> torch.Tensor:
        if self.first:
            self.first = False
            return self.like.new_zeros(self.like.shape)
        out: torch.Tensor = self.source()
        return out


def run_sampler(
    ctx: Context,
    guidance: Guidance,
    latent: Latent,
    seed: int,
    sigmas: torch.Tensor,
    sampler_name: str,
    add_noise: bool = True,
    max_batch: int = 0,
    last: list[Any] | None = None,
    comfy: bool = False,
    recurrence: int = 1,
) -> tuple[Latent]:
    """Sample ``latent`` along ``sigmas`` with per-sample noise from ``seed + batch index``, reporting
    progress (with previews when asked) and stopping when cancelled. ``last`` (a one-item list), when
    given, receives the last step's x̂0. ``comfy`` uses ComfyUI's conventions instead: one noise draw
    for the whole batch from the seed (scaled as ComfyUI scales it) and ComfyUI's variant of the
    named sampler (:mod:`nodes.diffusion.comfy_parity`). ``recurrence`` repeats each step
    (:mod:`nodes.diffusion.recurrence`)."""
    from nodes.diffusion.samplers import PerSampleNoise
    from nodes.diffusion.sampling import guided_sample
    from nodes.diffusion.types import Latent

    seeds = [(seed + i) % (SEED_MAX + 1) for i in latent.seed_offsets()]
    total = len(sigmas) - 1

    def on_step(i: int, x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> None:
        if last is not None:
            last[0] = denoised
        ctx.progress(i + 1, total, preview_of(denoised) if ctx.wants_preview else None)

    source: Any = None
    sampler_fn = None
    if comfy:
        from nodes.diffusion.comfy_parity import ComfyKSamplerNoise, comfy_sampler
        from nodes.diffusion.sampling import leaf_models

        sampler_fn = comfy_sampler(sampler_name)
        sigma_max = (
            max(m.sigma_max for m in leaf_models(guidance)) if leaf_models(guidance) else float(sigmas[0])
        )
        source = ComfyKSamplerNoise(
            seed,
            latent.samples.shape,
            ctx.device,
            ctx.dtype,
            sigma_0=float(sigmas[0]),
            sigma_max=sigma_max,
            batch_index=latent.batch_index,
            add_noise=add_noise,
        )
    elif not add_noise:
        per_sample = PerSampleNoise(seeds, latent.samples.shape[1:], ctx.device, ctx.dtype)
        source = _NoFirstDraw(per_sample, latent.samples.to(ctx.device, ctx.dtype))
    ctx.check_cancelled()
    out, _ = guided_sample(
        guidance,
        latent.samples,
        seeds,
        sigmas,
        sampler_name,
        device=ctx.device,
        dtype=ctx.dtype,
        noise_mask=latent.noise_mask,
        callback=on_step,
        max_batch=max_batch,
        noise_source=source,
        sampler_fn=sampler_fn,
        recurrence=recurrence,
    )
    return (Latent(out.float().cpu(), latent.noise_mask, latent.batch_index),)


def schedule_source(guidance: Guidance, schedule_model: Denoiser | None) -> Denoiser:
    """The model whose noise schedule the Sampler follows: ``schedule_model`` when connected, else the
    program's one model; a program with several models (autoguidance) must name it."""
    from nodes.diffusion.sampling import leaf_models

    if schedule_model is not None:
        return schedule_model
    models = leaf_models(guidance)
    if not models:
        raise ValueError("the guidance has no model prediction to sample from")
    if len(models) > 1:
        names = ", ".join(repr(m.name) for m in models)
        raise ValueError(
            f"schedule_model: the guidance uses {len(models)} models ({names}); connect the one whose "
            "noise schedule the Sampler should follow"
        )
    return models[0]


class EmptyLatent(Node):
    """A batch of empty latents (zeros) for ``model``: width and height in pixels (multiples of 8);
    the latents have the model's channels at its downscale (SD: 4 channels at 1/8, shapes: pixels)."""

    category = "guidegraph/latent"
    inputs = (
        Socket(
            name="model", type="MODEL", tooltip="the model whose latent space (channels, downscale) to use"
        ),
        Int(name="width", default=512, min=8, max=16384, step=8, tooltip="width in pixels, a multiple of 8"),
        Int(
            name="height", default=512, min=8, max=16384, step=8, tooltip="height in pixels, a multiple of 8"
        ),
        Int(
            name="batch_size",
            default=1,
            min=1,
            max=4096,
            tooltip="how many samples; sample i gets the seed seed + i",
        ),
    )
    outputs = (Output("LATENT", "LATENT"),)

    @staticmethod
    def run(ctx: Context, model: Denoiser, width: int, height: int, batch_size: int) -> tuple[Latent]:
        import torch

        from nodes.diffusion.types import Latent

        f = model.downscale
        problems = [
            f"{n} {v} is not a multiple of {max(f, 8)}"
            for n, v in (("width", width), ("height", height))
            if v % max(f, 8)
        ]
        if problems:
            raise ValueError("; ".join(problems) + f" (model {model.name!r} works at 1/{f} of the pixels)")
        return (Latent(torch.zeros(batch_size, model.latent_channels, height // f, width // f)),)

    @staticmethod
    def footprint(inputs: Mapping[str, Any]) -> Footprint:
        """The latent's size, when the model's latent space is known (see nodes.diffusion.memory)."""
        cost, dims = inputs.get("model"), [inputs.get(k) for k in ("batch_size", "height", "width")]
        if not isinstance(cost, LatentCost) or not all(type(v) is int for v in dims):
            return Footprint(outputs=(None,))
        b, h, w = (int(v) for v in dims)  # type: ignore[arg-type]
        return Footprint(outputs=(LatentSize(cost.latent(b, h, w), cost),))


class SetNoiseMask(Node):
    """Attach a mask to a latent: the Sampler regenerates where it is 1 and keeps the rest (inpainting)."""

    category = "guidegraph/latent"
    inputs = (
        Socket(name="latent", type="LATENT", tooltip="the latent to inpaint"),
        Socket(
            name="mask", type="MASK", tooltip="1 where the Sampler regenerates, 0 where it keeps the latent"
        ),
    )
    outputs = (Output("LATENT", "LATENT"),)

    @staticmethod
    def run(ctx: Context, latent: Latent, mask: torch.Tensor) -> tuple[Latent]:
        import torch

        from nodes.diffusion.types import Latent

        m = mask.float().reshape(-1, 1, *mask.shape[-2:])  # (B or 1, 1, H, W)
        if m.shape[-2:] != latent.samples.shape[-2:]:
            m = torch.nn.functional.interpolate(m, size=latent.samples.shape[-2:], mode="bilinear")
        return (Latent(latent.samples, m, latent.batch_index),)


NODES: list[type[Node]] = [Sampler, EmptyLatent, SetNoiseMask]
