"""Stable Diffusion networks as graph values: the UNet as a σ-space denoiser, CLIP text encoders, the VAE.

The networks are diffusers' ``UNet2DConditionModel`` and ``AutoencoderKL`` and transformers'
``CLIPTextModel`` / ``CLIPTextModelWithProjection``; this module only adapts them to guidegraph's
contracts, following what the reference pipelines (diffusers' StableDiffusionPipeline and
StableDiffusionXLPipeline) do:

- UNet: a discrete VP network, ε- or v-prediction, on the DDPM table of its scheduler config
  (SD: ``scaled_linear`` β from 0.00085 to 0.012 over 1000 steps); called with the continuous
  timestep t(σ) and ``encoder_hidden_states``; SDXL adds ``text_embeds`` (pooled) and ``time_ids``.
- Text: BPE ids in chunks of 77 (``families.sd.tokenizer``); SD 1.x and 2.x take the last hidden
  state after the final layer norm (SD 2.x checkpoints hold 23 of OpenCLIP's 24 layers: its
  "penultimate layer" is built into the config); SDXL takes the penultimate hidden state of both
  encoders, concatenated, and the second encoder's projected pooled output.
- VAE: latents are ``scaling_factor·(z − shift)``; encoding takes the posterior mean (deterministic).
- InstructPix2Pix (StableDiffusionInstructPix2PixPipeline): the UNet reads the c_in-scaled noisy
  latent and the edited image's latent concatenated on the channel axis; that image latent is the
  posterior's mode *without* the latent scaling (``vae.encode(image).latent_dist.mode()``), and the
  null image is zeros. A condition carries the image as a scaled latent like any LATENT (extra
  ``image_latent``); the UNet undoes the scaling before concatenating.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from families.base import Checkpoint, LoadOptions
from families.sd.attention import install as install_perturbable_attention
from families.sd.components import IMAGE_CONDITIONED, SDComponents
from nodes.diffusion.conventions import Denoiser
from nodes.diffusion.types import IMAGE_LATENT, Conditioning

XL_VARIANTS = ("sdxl", "sdxl_refiner")
REFINER_AESTHETIC_SCORE = 6.0  # diffusers' default for the refiner's positive prompt


def betas_from_config(config: dict[str, Any]) -> torch.Tensor:
    """The DDPM β table a diffusers scheduler config describes (float64)."""
    n = int(config.get("num_train_timesteps", 1000))
    start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
    kind = config.get("beta_schedule", "scaled_linear")
    if kind == "scaled_linear":
        return torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
    if kind == "linear":
        return torch.linspace(start, end, n, dtype=torch.float64)
    raise ValueError(f"beta_schedule {kind!r} is not supported (scaled_linear or linear)")


def sigmas_from_config(config: dict[str, Any]) -> torch.Tensor:
    """σ_i = √((1 − ᾱ_i)/ᾱ_i), i = 0…T−1 (float32, increasing)."""
    alphas_bar = torch.cumprod(1 - betas_from_config(config), dim=0)
    return ((1 - alphas_bar) / alphas_bar).sqrt().float()


def prediction_of(config: dict[str, Any], override: str) -> str:
    """eps or v: the override when given, else the scheduler config's ``prediction_type``."""
    if override in ("eps", "v"):
        return override
    found = config.get("prediction_type", "epsilon")
    if found == "epsilon":
        return "eps"
    if found == "v_prediction":
        return "v"
    raise ValueError(f"prediction_type {found!r} is not supported (epsilon or v_prediction)")


class SDUNet(nn.Module):
    """``UNet2DConditionModel`` behind the denoiser's network contract ``(c_in·x, t, cond) → raw``.

    ``latent_scaling`` (scale, shift) is the VAE's: an image-conditioned UNet (InstructPix2Pix) reads
    its image latent unscaled, ``latent/scale + shift``.
    """

    def __init__(
        self, unet: Any, variant: str, downscale: int, latent_scaling: tuple[float, float] = (1.0, 0.0)
    ) -> None:
        super().__init__()
        self.unet, self.variant, self.downscale = unet, variant, downscale
        self.latent_scaling = latent_scaling
        self.self_attention = install_perturbable_attention(unet)  # PAG / SEG / SLG / SAG on their rows

    def forward(self, x_in: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        dtype = self.unet.dtype
        context = cond["context"] if isinstance(cond, dict) else cond  # (B, T, D)
        if context.ndim != 3:
            raise ValueError(
                "a Stable Diffusion UNet takes token embeddings (B, T, D); this condition was made by "
                "another model's encoder"
            )
        for processor in self.self_attention:
            processor.latent = (x_in.shape[-2], x_in.shape[-1])
        added = None
        if self.variant in XL_VARIANTS:
            if not isinstance(cond, dict) or "pooled" not in cond:
                raise ValueError("SDXL needs the pooled text embedding: encode the prompt with its CLIP")
            added = {"text_embeds": cond["pooled"].to(dtype), "time_ids": self.time_ids(cond, x_in).to(dtype)}
        if self.variant in IMAGE_CONDITIONED:
            x_in = torch.cat([x_in, self.image_latent(cond, x_in)], dim=1)  # (B, 4 + 4, H, W)
        elif isinstance(cond, dict) and IMAGE_LATENT in cond and not bool(cond[IMAGE_LATENT].isnan().all()):
            raise ValueError(
                f"an image condition (InstructPixToPixConditioning) was given to a {self.variant} model, "
                "which takes no image; use an InstructPix2Pix checkpoint"
            )
        out = self.unet(
            x_in.to(dtype), t.to(dtype), encoder_hidden_states=context.to(dtype), added_cond_kwargs=added
        ).sample
        return out.to(x_in.dtype)

    def image_latent(self, cond: Any, x_in: torch.Tensor) -> torch.Tensor:
        """InstructPix2Pix's second input: each row's image latent, unscaled; zeros (the null image, as
        in diffusers and ComfyUI) for a condition without one."""
        b, _, h, w = x_in.shape
        channels = int(self.unet.config.in_channels) - x_in.shape[1]
        given = cond.get(IMAGE_LATENT) if isinstance(cond, dict) else None
        if given is None:
            return x_in.new_zeros(b, channels, h, w)
        if given.shape[-1] != channels * h * w:
            raise ValueError(
                f"the InstructPix2Pix image condition holds a latent of {given.shape[-1]} values, but this "
                f"sample is {channels}×{h}×{w}: sample a latent of the edited image's size (the latent "
                "InstructPixToPixConditioning outputs)"
            )
        scale, shift = self.latent_scaling
        image = given.to(x_in.dtype).reshape(b, channels, h, w) / scale + shift  # (B, C, H, W)
        return torch.where(image.isnan(), torch.zeros_like(image), image)  # NaN rows: no image

    def time_ids(self, cond: dict[str, torch.Tensor], x_in: torch.Tensor) -> torch.Tensor:
        """SDXL's micro-conditioning: the condition's own, else the image size with no crop (diffusers'
        default: original = target = the generated size; the refiner's aesthetic score 6)."""
        h, w = x_in.shape[-2] * self.downscale, x_in.shape[-1] * self.downscale
        ids = [h, w, 0, 0, REFINER_AESTHETIC_SCORE] if self.variant == "sdxl_refiner" else [h, w, 0, 0, h, w]
        default = torch.tensor(ids, dtype=x_in.dtype, device=x_in.device).expand(x_in.shape[0], -1)
        given = cond.get("time_ids")
        if given is None:
            return default
        if given.shape[-1] != default.shape[-1]:
            raise ValueError(
                f"time ids of width {given.shape[-1]} for a {self.variant} UNet, which takes "
                f"{default.shape[-1]} (SDXL base: 6, refiner: 5)"
            )
        return torch.where(given.isnan(), default, given.to(x_in.dtype))  # NaN rows: the default


@dataclass(frozen=True, eq=False)
class SDText:
    """The CLIP text encoder(s) of an SD checkpoint (socket CLIP).

    ``layer_skip`` drops final layers for every prompt (ComfyUI's CLIPSetLastLayer), on top of each
    prompt's own ``clip_skip``.
    """

    encoders: tuple[Any, ...]
    pad_tokens: tuple[str, ...]
    variant: str
    name: str
    labels: tuple[str, ...] = ()
    null_label: int | None = None
    layer_skip: int = 0

    def encode_text(self, text: str, clip_skip: int = 0) -> Conditioning:
        """A prompt, literally (as diffusers' pipelines encode it), in 75-token windows."""
        return self.encode_segments([(text, 1.0)], clip_skip, f"prompt {text!r}")

    def encode_segments(
        self, segments: list[tuple[str, float]], clip_skip: int, meaning: str
    ) -> Conditioning:
        """Weighted text segments (ComfyUI's emphasis): a token of weight w becomes
        ``z_empty + w·(z − z_empty)``, with z_empty the empty prompt's embedding at that position."""
        return self.encode_parts([segments] * len(self.encoders), clip_skip, meaning)

    def encode_parts(
        self,
        parts: list[list[tuple[str, float]]],
        clip_skip: int,
        meaning: str,
        time_ids: list[float] | None = None,
    ) -> Conditioning:
        """One list of weighted segments per encoder (SDXL: CLIP-L's text, then bigG's), windows padded
        with empty ones to a common count (as ComfyUI), and optional SDXL time ids."""
        from families.sd.tokenizer import weighted_chunks

        skip = clip_skip + self.layer_skip
        xl = self.variant in XL_VARIANTS
        chunked = [weighted_chunks(part, pad) for part, pad in zip(parts, self.pad_tokens, strict=True)]
        count = max(len(ids) for ids, _ in chunked)
        contexts: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        for encoder, pad, (ids, weights) in zip(self.encoders, self.pad_tokens, chunked, strict=True):
            layers = encoder.config.num_hidden_layers
            if skip >= layers - (1 if xl else 0):
                raise ValueError(f"clip_skip {skip}: this text encoder has only {layers} layers")
            empty_ids, empty_weights = weighted_chunks([("", 1.0)], pad)
            ids = ids + empty_ids * (count - len(ids))
            weights = weights + empty_weights * (count - len(weights))
            weighted = any(w != 1.0 for row in weights for w in row)
            device = next(encoder.parameters()).device
            batch = ids + empty_ids if weighted else ids  # the empty prompt last, for the weighting
            with torch.no_grad():
                out = encoder(torch.tensor(batch, device=device), output_hidden_states=True)
                if xl:
                    hidden = out.hidden_states[-2 - skip]  # (chunks, 77, D)
                    if hasattr(out, "text_embeds"):
                        pooled = out.text_embeds[0]  # (P,) first window, as ComfyUI
                else:
                    hidden = encoder.final_layer_norm(out.hidden_states[-1 - skip])
            hidden = hidden.float()
            if weighted:
                hidden, empty = hidden[:-1], hidden[-1:]  # (chunks, 77, D), (1, 77, D)
                w = torch.tensor(weights, device=hidden.device)[..., None]  # (chunks, 77, 1)
                hidden = empty + w * (hidden - empty)
            contexts.append(hidden.reshape(-1, hidden.shape[-1]))  # (77·chunks, D)
        context = torch.cat(contexts, dim=-1)  # (T, ΣD)
        extras: dict[str, torch.Tensor] = {}
        if xl and pooled is not None:
            extras["pooled"] = pooled.float().cpu()
        if time_ids is not None:
            extras["time_ids"] = torch.tensor(time_ids, dtype=torch.float32)
        if skip:
            meaning += f" clip_skip {skip}"
        return Conditioning.of(context.cpu(), meaning, extras or None, self.name)

    def encode_label(self, index: int) -> Conditioning:
        raise ValueError(f"{self.name}: Stable Diffusion models take prompts, not class labels")


@dataclass(frozen=True, eq=False)
class SDVAE:
    """``AutoencoderKL`` between pixels in [-1, 1] and scaled latents (socket VAE)."""

    vae: Any  # diffusers AutoencoderKL
    name: str

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def scale_shift(self) -> tuple[float, float]:
        """(scaling_factor, shift_factor) of the latents: latent = scale·(z − shift)."""
        return float(self.vae.config.scaling_factor), float(
            getattr(self.vae.config, "shift_factor", None) or 0.0
        )

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_shift()
        z = self.vae.encode(pixels.to(self.vae.device, self.vae.dtype)).latent_dist.mean
        return ((z - shift) * scale).to(pixels.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_shift()
        z = latents.to(self.vae.device, self.vae.dtype) / scale + shift
        return self.vae.decode(z).sample.to(latents.dtype)


def checkpoint_from_components(components: SDComponents, options: LoadOptions) -> Checkpoint:
    """Wrap loaded SD networks as MODEL, CLIP and VAE (moved to the options' device and dtype)."""
    device = torch.device(options.device or "cpu")
    dtype = options.dtype or torch.float32
    for module in (components.unet, components.vae, *components.text_encoders):
        first = next(module.parameters())
        if first.device != device or first.dtype != dtype:  # diffusers warns on every .to()
            module.to(device=device, dtype=dtype)
        module.eval().requires_grad_(False)
    name = components.name
    vae = SDVAE(components.vae, name)
    config = dict(components.scheduler_config)
    network = SDUNet(components.unet, components.variant, vae.downscale, vae.scale_shift())
    model = Denoiser(
        network,
        prediction_of(config, options.prediction),
        sigmas_from_config(config),
        discrete=True,
        name=name,
        latent_channels=int(components.unet.config.out_channels),
        downscale=vae.downscale,
        encoder=name,
    )
    text = SDText(tuple(components.text_encoders), tuple(components.pad_tokens), components.variant, name)
    return Checkpoint(model=model, clip=text, vae=vae, family="sd", variant=components.variant)


def load_vae_file(path: Path, options: LoadOptions) -> SDVAE:
    """A separate VAE file (``models/vae``) as a VAE value."""
    from families.sd.files import load_vae

    vae = load_vae(path, options).to(options.device or "cpu", options.dtype or torch.float32)
    return SDVAE(vae.eval().requires_grad_(False), path.name)
