"""The Sampler (runs a GUIDANCE program along a schedule) and latent sources."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from graph_runtime.api import Combo, Context, Float, Footprint, Int, Node, Output, PreviewImage, Socket
from nodes.diffusion.guidance import Guidance
from nodes.diffusion.samplers import SAMPLERS
from nodes.diffusion.sampling import guided_sample, leaf_models
from nodes.diffusion.schedules import SCHEDULERS, sigmas_for_denoise
from nodes.diffusion.types import Latent

SEED_MAX = 2**64 - 1


def preview_of(denoised: torch.Tensor) -> PreviewImage:
    """The first sample's x̂0 (C, H, W) in [-1, 1] → uint8 (H, W, 3) for the editor's live preview."""
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
    many rows (memory); 0 never splits.
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
            options=tuple(SAMPLERS),
            default="euler",
            tooltip="the sampling method (ComfyUI's names)",
        ),
        Combo(
            name="scheduler",
            options=SCHEDULERS,
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
    ) -> tuple[Latent]:
        models = leaf_models(guidance)
        if not models:
            raise ValueError("the guidance has no model prediction to sample from")
        sigmas = sigmas_for_denoise(scheduler, models[0], steps, denoise)
        seeds = [(seed + i) % (SEED_MAX + 1) for i in latent.seed_offsets()]
        total = len(sigmas) - 1

        def on_step(i: int, x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> None:
            ctx.progress(i + 1, total, preview_of(denoised) if ctx.wants_preview else None)

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
            max_batch=max_batch or 0,
        )
        return (Latent(out.float().cpu(), latent.noise_mask, latent.batch_index),)

    @staticmethod
    def footprint(inputs: Mapping[str, Any]) -> Footprint:
        """Working memory of sampling a latent (B, C, H, W) of known shape.

        Per model evaluation, rows = 2B (a CFG pair per sample; ``max_batch`` caps the rows of one
        forward): about 3.2 KB per pixel and row for the convolutions, plus float32 attention maps
        at 1/4 resolution (4 heads, scores and softmax). Measured on the shipped shapes UNet on a
        CPU (peak RSS: 0.2 GB at 64² × 8, 10 GB at 256² × 8); other families declare their own.
        """
        shape = inputs.get("latent")
        if not shape:
            return Footprint(outputs=(None,))
        b, _, h, w = shape
        rows = 2 * b if not inputs.get("max_batch") else min(2 * b, int(inputs["max_batch"]))
        tokens = (h // 4) * (w // 4)
        working = rows * (h * w * 3200 + 4 * tokens * tokens * 4 * 2)
        return Footprint(outputs=(shape,), working=working)


class EmptyLatent(Node):
    """A batch of empty latents (zeros) to sample from; our models work in pixel space (3 channels)."""

    category = "guidegraph/latent"
    inputs = (
        Int(name="width", default=32, min=8, max=4096, step=8, tooltip="width in pixels, a multiple of 8"),
        Int(name="height", default=32, min=8, max=4096, step=8, tooltip="height in pixels, a multiple of 8"),
        Int(
            name="batch_size",
            default=1,
            min=1,
            max=4096,
            tooltip="how many samples; sample i gets the seed seed + i",
        ),
        Int(
            name="channels",
            default=3,
            min=1,
            max=64,
            tooltip="latent channels (3 for the shipped pixel-space models)",
        ),
    )
    outputs = (Output("LATENT", "LATENT"),)

    @staticmethod
    def run(ctx: Context, width: int, height: int, batch_size: int, channels: int) -> tuple[Latent]:
        return (Latent(torch.zeros(batch_size, channels, height, width)),)

    @staticmethod
    def footprint(inputs: Mapping[str, Any]) -> Footprint:
        """The latent's shape, for the memory estimate of what samples from it."""
        dims = [inputs.get(k) for k in ("batch_size", "channels", "height", "width")]
        shape = tuple(v for v in dims if isinstance(v, int))
        return Footprint(outputs=(shape if len(shape) == 4 else None,))


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
        m = mask.float().reshape(-1, 1, *mask.shape[-2:])  # (B or 1, 1, H, W)
        if m.shape[-2:] != latent.samples.shape[-2:]:
            m = torch.nn.functional.interpolate(m, size=latent.samples.shape[-2:], mode="bilinear")
        return (Latent(latent.samples, m, latent.batch_index),)


NODES: list[type[Node]] = [Sampler, EmptyLatent, SetNoiseMask]
