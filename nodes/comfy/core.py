"""ComfyUI's everyday image nodes: load a checkpoint, encode prompts, sample with KSampler, decode.

Declarations only: torch, the families and the samplers load when a node runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graph_runtime.api import Combo, Context, Float, FolderFiles, Int, Node, Output, Socket, String
from nodes.comfy.model_patches import comfy_cfg
from nodes.diffusion.names import COMFY_SAMPLER_NAMES, COMFY_SCHEDULER_NAMES
from nodes.model_nodes import MODEL_FILES

if TYPE_CHECKING:
    import torch

    from nodes.diffusion.conventions import Denoiser
    from nodes.diffusion.types import VAE, Conditioning, Latent, TextEncoder

MAX_RESOLUTION = 16384
SEED_MAX = 0xFFFFFFFFFFFFFFFF


class CheckpointLoaderSimple(Node):
    """Loads a diffusion model checkpoint: MODEL (denoises latents), CLIP (encodes prompts), VAE
    (between images and latents). ComfyUI's loader; guidegraph's Model node with its defaults."""

    display_name = "Load Checkpoint"
    category = "loaders"
    inputs = (
        Combo(
            name="ckpt_name",
            options=FolderFiles("checkpoints", MODEL_FILES, "model_index.json"),
            tooltip="The name of the checkpoint (model) to load.",
        ),
    )
    outputs = (Output("MODEL", "MODEL"), Output("CLIP", "CLIP"), Output("VAE", "VAE"))

    @staticmethod
    def run(ctx: Context, ckpt_name: str) -> tuple[Any, Any, Any]:
        from nodes.model_nodes import Model

        return Model.run(ctx, ckpt_name, "auto", "auto")


class LoraLoader(Node):
    """Apply a LoRA to the model and to CLIP, each with its own strength: ``W' = W + s·(α/r)·B·A``.
    Kohya and diffusers/PEFT files (safetensors); the loaded checkpoint itself is never modified."""

    display_name = "Load LoRA"
    category = "loaders"
    inputs = (
        Socket(name="model", type="MODEL", tooltip="The diffusion model the LoRA will be applied to."),
        Socket(name="clip", type="CLIP", tooltip="The CLIP model the LoRA will be applied to."),
        Combo(name="lora_name", options=FolderFiles("loras", MODEL_FILES), tooltip="The name of the LoRA."),
        Float(
            name="strength_model",
            default=1.0,
            min=-100.0,
            max=100.0,
            step=0.01,
            tooltip="how much of the LoRA to add to the denoiser (0: none, negative: the opposite)",
        ),
        Float(
            name="strength_clip",
            default=1.0,
            min=-100.0,
            max=100.0,
            step=0.01,
            tooltip="how much of the LoRA to add to the text encoder",
        ),
    )
    outputs = (Output("MODEL", "MODEL"), Output("CLIP", "CLIP"))

    @staticmethod
    def run(
        ctx: Context,
        model: Denoiser,
        clip: TextEncoder,
        lora_name: str,
        strength_model: float,
        strength_clip: float,
    ) -> tuple[Any, Any]:
        from families.sd.lora import apply_lora
        from graph_runtime.folders import resolve_file

        if strength_model == 0 and strength_clip == 0:
            return (model, clip)
        return apply_lora(model, clip, resolve_file("loras", lora_name), strength_model, strength_clip)


class LoraLoaderModelOnly(Node):
    """Apply a LoRA to the model only."""

    display_name = "LoraLoaderModelOnly"
    category = "loaders"
    inputs = (
        Socket(name="model", type="MODEL", tooltip="the denoiser to patch"),
        Combo(
            name="lora_name",
            options=FolderFiles("loras", MODEL_FILES),
            tooltip="a LoRA in the loras folder (safetensors)",
        ),
        Float(
            name="strength_model",
            default=1.0,
            min=-100.0,
            max=100.0,
            step=0.01,
            tooltip="how much of the LoRA to add (0: none, negative: the opposite)",
        ),
    )
    outputs = (Output("MODEL", "MODEL"),)

    @staticmethod
    def run(ctx: Context, model: Denoiser, lora_name: str, strength_model: float) -> tuple[Any]:
        from families.sd.lora import apply_lora
        from graph_runtime.folders import resolve_file

        if strength_model == 0:
            return (model,)
        return (apply_lora(model, None, resolve_file("loras", lora_name), strength_model, 0.0)[0],)


class CLIPTextEncode(Node):
    """Encodes a text prompt with CLIP into a CONDITIONING, with ComfyUI's emphasis syntax:
    ``(word)`` weighs 1.1 per level of parentheses, ``(word:1.3)`` sets 1.3, ``\\(`` is a literal
    parenthesis. A weighted token's embedding z becomes ``z_empty + w·(z − z_empty)``."""

    display_name = "CLIP Text Encode (Prompt)"
    category = "conditioning"
    inputs = (
        String(name="text", multiline=True, tooltip="The text to be encoded."),
        Socket(name="clip", type="CLIP", tooltip="The CLIP model used for encoding the text."),
    )
    outputs = (Output("CONDITIONING", "CONDITIONING"),)

    @staticmethod
    def run(ctx: Context, text: str, clip: TextEncoder) -> tuple[Conditioning]:
        from nodes.comfy.emphasis import parse_emphasis

        segments = parse_emphasis(text)
        encode_segments = getattr(clip, "encode_segments", None)
        if encode_segments is None or all(w == 1.0 for _, w in segments):
            return (clip.encode_text("".join(s for s, _ in segments)),)
        return (encode_segments(segments, 0, f"prompt {text!r}"),)


def _xl_encoder(clip: TextEncoder, node: str) -> Any:
    encode_parts = getattr(clip, "encode_parts", None)
    if encode_parts is None or getattr(clip, "variant", "") not in ("sdxl", "sdxl_refiner"):
        raise ValueError(f"clip: {node} needs an SDXL text encoder; {clip.name!r} is not one")
    return encode_parts


def _told(name: str, default: int, what: str) -> Int:
    """One of SDXL's micro-conditioning sizes, as ComfyUI declares them."""
    return Int(
        name=name, default=default, min=0, max=MAX_RESOLUTION, tooltip=f"{what} the UNet is told about"
    )


class CLIPTextEncodeSDXL(Node):
    """SDXL prompt encoding with its micro-conditioning: ``text_l`` through CLIP-L, ``text_g`` through
    OpenCLIP-bigG, and the original size, crop and target size the UNet is told about."""

    display_name = "CLIPTextEncodeSDXL"
    category = "advanced/conditioning"
    inputs = (
        Socket(name="clip", type="CLIP", tooltip="SDXL's two text encoders"),
        _told("width", 1024, "the original image width"),
        _told("height", 1024, "the original image height"),
        _told("crop_w", 0, "the crop's left offset"),
        _told("crop_h", 0, "the crop's top offset"),
        _told("target_width", 1024, "the target width"),
        _told("target_height", 1024, "the target height"),
        String(name="text_g", multiline=True, tooltip="the prompt for OpenCLIP bigG"),
        String(name="text_l", multiline=True, tooltip="the prompt for CLIP L"),
    )
    outputs = (Output("CONDITIONING", "CONDITIONING"),)

    @staticmethod
    def run(
        ctx: Context,
        clip: TextEncoder,
        width: int,
        height: int,
        crop_w: int,
        crop_h: int,
        target_width: int,
        target_height: int,
        text_g: str,
        text_l: str,
    ) -> tuple[Conditioning]:
        from nodes.comfy.emphasis import parse_emphasis

        encode_parts = _xl_encoder(clip, "CLIPTextEncodeSDXL")
        parts = [parse_emphasis(text_l), parse_emphasis(text_g)]
        ids = [height, width, crop_h, crop_w, target_height, target_width]
        return (encode_parts(parts, 0, f"sdxl prompt g={text_g!r} l={text_l!r} size {ids}", ids),)


class CLIPTextEncodeSDXLRefiner(Node):
    """SDXL refiner prompt encoding with its aesthetic-score conditioning (6 for prompts, 2.5 for
    negatives in the reference pipeline)."""

    display_name = "CLIPTextEncodeSDXLRefiner"
    category = "advanced/conditioning"
    inputs = (
        Float(
            name="ascore",
            default=6.0,
            min=0.0,
            max=1000.0,
            step=0.01,
            tooltip="aesthetic score (6 for prompts, 2.5 for negatives in the reference pipeline)",
        ),
        _told("width", 1024, "the original image width"),
        _told("height", 1024, "the original image height"),
        String(name="text", multiline=True, tooltip="the prompt"),
        Socket(name="clip", type="CLIP", tooltip="the refiner's text encoder"),
    )
    outputs = (Output("CONDITIONING", "CONDITIONING"),)

    @staticmethod
    def run(
        ctx: Context, ascore: float, width: int, height: int, text: str, clip: TextEncoder
    ) -> tuple[Conditioning]:
        from nodes.comfy.emphasis import parse_emphasis

        encode_parts = _xl_encoder(clip, "CLIPTextEncodeSDXLRefiner")
        if getattr(clip, "variant", "") != "sdxl_refiner":
            raise ValueError(f"clip: {clip.name!r} is an SDXL base encoder; use CLIPTextEncodeSDXL")
        ids = [height, width, 0, 0, ascore]
        return (encode_parts([parse_emphasis(text)], 0, f"refiner prompt {text!r} ascore {ascore}", ids),)


class CLIPSetLastLayer(Node):
    """Stops CLIP at an earlier layer: -1 is the model's usual layer, -2 one before it (A1111's
    "clip skip 2"), and so on."""

    category = "conditioning"
    inputs = (
        Socket(name="clip", type="CLIP", tooltip="the text encoder"),
        Int(
            name="stop_at_clip_layer",
            default=-1,
            min=-24,
            max=-1,
            step=1,
            tooltip="the layer to take the embedding from, counted from the end (-1: the last)",
        ),
    )
    outputs = (Output("CLIP", "CLIP"),)

    @staticmethod
    def run(ctx: Context, clip: TextEncoder, stop_at_clip_layer: int) -> tuple[TextEncoder]:
        import dataclasses

        if not hasattr(clip, "layer_skip"):
            raise ValueError(f"clip: the text encoder {clip.name!r} has no layers to stop at")
        return (dataclasses.replace(clip, layer_skip=-1 - stop_at_clip_layer),)  # type: ignore[type-var]


class EmptyLatentImage(Node):
    """Create a new batch of empty latent images to be denoised via sampling (4 channels at 1/8 of
    the pixels, the Stable Diffusion latent space)."""

    category = "latent"
    inputs = (
        Int(
            name="width",
            default=512,
            min=16,
            max=MAX_RESOLUTION,
            step=8,
            tooltip="The width of the latent images in pixels.",
        ),
        Int(
            name="height",
            default=512,
            min=16,
            max=MAX_RESOLUTION,
            step=8,
            tooltip="The height of the latent images in pixels.",
        ),
        Int(
            name="batch_size", default=1, min=1, max=4096, tooltip="The number of latent images in the batch."
        ),
    )
    outputs = (Output("LATENT", "LATENT"),)

    @staticmethod
    def run(ctx: Context, width: int, height: int, batch_size: int) -> tuple[Latent]:
        import torch

        from nodes.diffusion.types import Latent

        return (Latent(torch.zeros(batch_size, 4, height // 8, width // 8)),)


class VAEDecode(Node):
    """Decodes latent images back into pixel space images."""

    category = "latent"
    inputs = (
        Socket(name="samples", type="LATENT", tooltip="The latent to be decoded."),
        Socket(name="vae", type="VAE", tooltip="The VAE model used for decoding the latent."),
    )
    outputs = (Output("IMAGE", "IMAGE"),)

    @staticmethod
    def run(ctx: Context, samples: Latent, vae: VAE) -> tuple[torch.Tensor]:
        from nodes.image_nodes import Decode

        return Decode.run(ctx, samples, vae, 0)


class VAEEncode(Node):
    """Encodes pixel images into latents with the VAE."""

    category = "latent"
    inputs = (
        Socket(name="pixels", type="IMAGE", tooltip="the image to encode"),
        Socket(name="vae", type="VAE", tooltip="the VAE that turns pixels into latents"),
    )
    outputs = (Output("LATENT", "LATENT"),)

    @staticmethod
    def run(ctx: Context, pixels: torch.Tensor, vae: VAE) -> tuple[Latent]:
        from nodes.image_nodes import Encode

        return Encode.run(ctx, pixels, vae)


def _sampler_inputs() -> tuple[Any, ...]:
    return (
        Int(
            name="steps",
            default=20,
            min=1,
            max=10000,
            tooltip="The number of steps used in the denoising process.",
        ),
        Float(
            name="cfg",
            default=8.0,
            min=0.0,
            max=100.0,
            step=0.1,
            round=0.01,
            tooltip="The Classifier-Free Guidance scale.",
        ),
        Combo(
            name="sampler_name",
            options=COMFY_SAMPLER_NAMES,
            default="euler",
            tooltip="The algorithm used when sampling.",
        ),
        Combo(
            name="scheduler",
            options=COMFY_SCHEDULER_NAMES,
            default="normal",
            tooltip="How noise is removed over the steps.",
        ),
        Socket(name="positive", type="CONDITIONING", tooltip="What to include in the image."),
        Socket(name="negative", type="CONDITIONING", tooltip="What to exclude from the image."),
        Socket(name="latent_image", type="LATENT", tooltip="The latent image to denoise."),
    )


class KSampler(Node):
    """Uses the provided model, positive and negative conditioning to denoise the latent image.

    A CFGCombine (``u + cfg·(c − u)``) run by a Sampler with ComfyUI's conventions (one noise draw for
    the whole batch from the seed, ComfyUI's σ lists); swap it for a CFGCombine + Sampler to compose
    any other guidance.
    """

    display_name = "KSampler"
    category = "sampling"
    inputs = (
        Socket(name="model", type="MODEL", tooltip="The model used for denoising the input latent."),
        Int(
            name="seed",
            default=0,
            min=0,
            max=SEED_MAX,
            control_after_generate=True,
            tooltip="The random seed used for creating the noise.",
        ),
        *_sampler_inputs(),
        Float(
            name="denoise",
            default=1.0,
            min=0.0,
            max=1.0,
            step=0.01,
            tooltip="The amount of denoising applied.",
        ),
    )
    outputs = (Output("LATENT", "LATENT"),)

    @staticmethod
    def run(
        ctx: Context,
        model: Denoiser,
        seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        positive: Conditioning,
        negative: Conditioning,
        latent_image: Latent,
        denoise: float,
    ) -> tuple[Latent]:
        from nodes.sampling_nodes import Sampler

        program = comfy_cfg(ctx, model, positive, negative, cfg)
        return Sampler.run(
            ctx, program, latent_image, seed, steps, sampler_name, scheduler, denoise, 0, None, "comfyui"
        )


class KSamplerAdvanced(Node):
    """KSampler over a slice of the schedule: steps ``start_at_step`` to ``end_at_step`` of ``steps``,
    with or without adding noise first, and optionally returning the leftover noise (for handing a
    latent to a second sampler, e.g. SDXL base → refiner)."""

    display_name = "KSampler (Advanced)"
    category = "sampling"
    inputs = (
        Socket(name="model", type="MODEL", tooltip="the denoiser"),
        Combo(
            name="add_noise",
            options=("enable", "disable"),
            default="enable",
            tooltip="enable: start by adding noise at the first σ; disable: start from the latent as it is",
        ),
        Int(
            name="noise_seed",
            default=0,
            min=0,
            max=SEED_MAX,
            control_after_generate=True,
            tooltip="noise seed of the first sample; sample i uses seed + i",
        ),
        *_sampler_inputs(),
        Int(
            name="start_at_step", default=0, min=0, max=10000, tooltip="the first step of the schedule to run"
        ),
        Int(
            name="end_at_step",
            default=10000,
            min=0,
            max=10000,
            tooltip="the step to stop at (beyond steps: the end)",
        ),
        Combo(
            name="return_with_leftover_noise",
            options=("disable", "enable"),
            default="disable",
            tooltip="enable: stop without denoising the last σ (to hand the latent on)",
        ),
    )
    outputs = (Output("LATENT", "LATENT"),)

    @staticmethod
    def run(
        ctx: Context,
        model: Denoiser,
        add_noise: str,
        noise_seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        positive: Conditioning,
        negative: Conditioning,
        latent_image: Latent,
        start_at_step: int,
        end_at_step: int,
        return_with_leftover_noise: str,
    ) -> tuple[Latent]:
        from nodes.diffusion.comfy_parity import comfy_sigmas, comfy_step_range
        from nodes.sampling_nodes import run_sampler

        full = comfy_sigmas(scheduler, model, steps, 1.0, sampler_name)
        sigmas = comfy_step_range(full, start_at_step, end_at_step, return_with_leftover_noise != "enable")
        if sigmas is None:
            return (latent_image,)
        program = comfy_cfg(ctx, model, positive, negative, cfg)
        noise = add_noise == "enable"
        return run_sampler(ctx, program, latent_image, noise_seed, sigmas, sampler_name, noise, comfy=True)


NODES: list[type[Node]] = [
    CheckpointLoaderSimple,
    LoraLoader,
    LoraLoaderModelOnly,
    CLIPTextEncode,
    CLIPTextEncodeSDXL,
    CLIPTextEncodeSDXLRefiner,
    CLIPSetLastLayer,
    EmptyLatentImage,
    VAEDecode,
    VAEEncode,
    KSampler,
    KSamplerAdvanced,
]
