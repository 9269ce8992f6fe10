"""guidegraph's CFG sampling on SD networks equals diffusers' own pipelines (tiny random configs, CPU).

Same networks, prompts, initial latents and σ steps: the pipeline runs its scheduler loop; we run the
GUIDANCE program (CFG over two predictions, one batched forward per step) through our sampler on the
scheduler's σ list. Euler is k-diffusion's Euler in σ-space on both sides; DDIM (η = 0) is Euler in
σ-space too (Song et al. 2021, eq. 14 is that ODE step), ending at σ(t = 0) rather than 0 because
``set_alpha_to_one=False``. Measured max abs difference: 1e-5 to 3.7e-5 on latents of magnitude up
to 18 (relative 2e-6); the tolerance 2e-4 covers float32 reassociation, and a real difference (a
wrong layer, scale, time id or schedule) moves the latents by 1e-2 or more. The residue comes from
our σ ↔ t conversion interpolating a float64 log-σ table where diffusers indexes the timestep
directly, and from the two sides ordering the batched arithmetic differently.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from families.base import LoadOptions
from families.sd.components import SDComponents
from families.sd.make import build_networks
from families.sd.model import SDText, checkpoint_from_components
from families.sd.tokenizer import clip_tokenizer
from nodes.diffusion.guidance import Prediction, cfg
from nodes.diffusion.program import CompiledGuidance
from nodes.diffusion.samplers import SAMPLERS
from nodes.diffusion.types import Conditioning
from tests.families.tiny_sd import scheduler_kwargs, wrap

PROMPT, NEGATIVE, SCALE, STEPS = "a photograph of an astronaut riding a horse", "blurry, low quality", 7.5, 4
TOL = 2e-4
PADS = {"sd1": ["<|endoftext|>"], "sd2_v": ["!"], "sdxl": ["<|endoftext|>", "!"]}


def networks(variant: str) -> tuple[dict[str, Any], SDComponents]:
    configs, unet, vae, encoders = build_networks(variant, "tiny", seed=3)
    scheduler = dict(configs["scheduler"])
    if variant == "sd2_v":
        scheduler["prediction_type"] = "v_prediction"
    components = wrap(variant, (configs, unet, vae, encoders), PADS[variant], scheduler)
    return configs, components


def pipeline(variant: str, components: SDComponents, scheduler_name: str) -> Any:
    import diffusers

    config = {k: v for k, v in components.scheduler_config.items() if not k.startswith("_")}
    if scheduler_name == "euler":
        scheduler = diffusers.EulerDiscreteScheduler(**scheduler_kwargs(config), timestep_spacing="leading")
    else:
        scheduler = diffusers.DDIMScheduler(
            **scheduler_kwargs(config), clip_sample=False, set_alpha_to_one=False
        )
    tokenizers = [clip_tokenizer(pad) for pad in components.pad_tokens]
    common = {"vae": components.vae, "unet": components.unet, "scheduler": scheduler}
    if variant == "sdxl":
        return diffusers.StableDiffusionXLPipeline(
            text_encoder=components.text_encoders[0],
            text_encoder_2=components.text_encoders[1],
            tokenizer=tokenizers[0],
            tokenizer_2=tokenizers[1],
            force_zeros_for_empty_prompt=True,
            **common,
        )
    return diffusers.StableDiffusionPipeline(
        text_encoder=components.text_encoders[0],
        tokenizer=tokenizers[0],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        **common,
    )


def ours(
    variant: str, components: SDComponents, sigmas: torch.Tensor, x: torch.Tensor, negative: str | None
) -> torch.Tensor:
    checkpoint = checkpoint_from_components(components, LoadOptions(device=torch.device("cpu")))
    text = checkpoint.clip
    assert isinstance(text, SDText)
    positive = text.encode_text(PROMPT)
    if negative is None:  # SDXL with force_zeros_for_empty_prompt: the null is all zeros
        empty = text.encode_text("")
        zeros = {k: torch.zeros_like(v) for k, v in empty.extras}
        uncond: Conditioning = empty.with_tensors(
            "zeros", embedding=torch.zeros_like(empty.embedding), **zeros
        )
    else:
        uncond = text.encode_text(negative)
    model = checkpoint.model
    program = CompiledGuidance(
        cfg(Prediction(model, positive), Prediction(model, uncond), SCALE),
        seeds=[0],
        device=torch.device("cpu"),
    )
    with torch.no_grad():
        out = SAMPLERS["euler"](program, x, sigmas.to(torch.float64), noise=None, callback=None)
    assert program.stats.model_calls == len(sigmas) - 1  # cond and uncond in ONE forward per step
    return out


@pytest.mark.parametrize("variant", ["sd1", "sd2_v", "sdxl"])
@pytest.mark.parametrize("scheduler_name", ["euler", "ddim"])
def test_cfg_sampling_equals_the_diffusers_pipeline(variant: str, scheduler_name: str) -> None:
    _, components = networks(variant)
    pipe = pipeline(variant, components, scheduler_name)
    generator = torch.Generator().manual_seed(11)
    size = 64
    latents = torch.randn(1, 4, size // 2, size // 2, generator=generator)  # tiny VAE: downscale 2
    negative = None if variant == "sdxl" else NEGATIVE
    with torch.no_grad():
        reference = pipe(
            prompt=PROMPT,
            negative_prompt=negative,
            num_inference_steps=STEPS,
            guidance_scale=SCALE,
            latents=latents.clone(),
            height=size,
            width=size,
            output_type="latent",
        ).images
    scheduler = pipe.scheduler
    scheduler.set_timesteps(STEPS)
    if scheduler_name == "euler":
        sigmas = scheduler.sigmas  # σ(t_i)…, 0
        x = latents * scheduler.init_noise_sigma
        got = ours(variant, components, sigmas, x, negative)
    else:
        table = ((1 - scheduler.alphas_cumprod) / scheduler.alphas_cumprod).sqrt()
        sigmas = torch.cat([table[scheduler.timesteps], table[:1]])  # DDIM ends at σ(t = 0)
        x = latents * (1 + sigmas[0] ** 2).sqrt()  # VP noise → σ-space
        got = ours(variant, components, sigmas, x, negative) / (1 + sigmas[-1] ** 2).sqrt()  # back to VP
    assert got.shape == reference.shape
    assert float((got - reference).abs().max()) < TOL


def test_sdxl_conditions_carry_the_pooled_embedding_and_long_prompts_are_chunked() -> None:
    _, components = networks("sdxl")
    text = checkpoint_from_components(components, LoadOptions()).clip
    cond = text.encode_text(" ".join(["astronaut"] * 100))
    assert cond.embedding.shape == (154, 32 + 48)  # 2 chunks of 77, both encoders concatenated
    assert dict(cond.extras)["pooled"].shape == (32,)
