"""SAG on Stable Diffusion equals diffusers' ``StableDiffusionSAGPipeline`` (tiny random sd1 config, CPU).

Same networks, prompts, initial latents and DDIM steps (η = 0, the pipeline needs integer
timesteps): the pipeline records the mid block's self-attention with its own processor, blurs x̂0
where it is attended, re-noises and runs the UNet a second time; we run the SAG
program through our Euler sampler in σ-space (DDIM's ODE step, see ``test_sd_pipeline_parity.py``).
With CFG the pipeline degrades the unconditional prediction; with ``guidance_scale ≤ 1`` it has no
unconditional one and degrades the conditional prediction, which our program says explicitly.
Measured max abs difference of the final latents (magnitude ≈ 17): 3.2e-5 with CFG, 1.4e-5 without;
the blur mask covers 46–49% of the latent at each step, so the blurred and the kept regions both count.
A 64×48 image checks the mid block's non-square grid (16×12) against the pipeline's.
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
from graph_runtime.context import Context
from nodes.composition_nodes import SAG
from nodes.diffusion.guidance import Prediction, cfg
from nodes.diffusion.program import CompiledGuidance
from nodes.diffusion.samplers import SAMPLERS
from tests.families.tiny_sd import scheduler_kwargs, wrap

PROMPT, NEGATIVE, STEPS, SAG_SCALE = "a photograph of an astronaut riding a horse", "blurry", 4, 0.75
TOL = 2e-4  # as the CFG parity tests; a wrong mask, blur or re-noising moves latents by 1e-2 or more


def components() -> SDComponents:
    return wrap("sd1", build_networks("sd1", "tiny", seed=3), ["<|endoftext|>"])


def pipeline(parts: SDComponents) -> Any:
    import diffusers

    scheduler = diffusers.DDIMScheduler(
        **scheduler_kwargs(parts.scheduler_config),
        clip_sample=False,
        set_alpha_to_one=False,
    )
    return diffusers.StableDiffusionSAGPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoders[0],
        tokenizer=clip_tokenizer(parts.pad_tokens[0]),
        unet=parts.unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.mark.parametrize(
    ("scale", "width"), [(7.5, 64), (1.0, 64), (7.5, 48)], ids=["cfg", "no-cfg", "cfg-non-square"]
)
def test_sag_sampling_equals_the_diffusers_sag_pipeline(scale: float, width: int) -> None:
    parts = components()
    pipe = pipeline(parts)
    latents = torch.randn(1, 4, 32, width // 2, generator=torch.Generator().manual_seed(11))  # VAE ÷ 2
    with torch.no_grad():
        reference = pipe(
            prompt=PROMPT,
            negative_prompt=NEGATIVE,
            num_inference_steps=STEPS,
            guidance_scale=scale,
            sag_scale=SAG_SCALE,
            latents=latents.clone(),
            height=64,
            width=width,
            output_type="latent",
        ).images
    scheduler = pipe.scheduler
    scheduler.set_timesteps(STEPS)
    table = ((1 - scheduler.alphas_cumprod) / scheduler.alphas_cumprod).sqrt()
    sigmas = torch.cat([table[scheduler.timesteps], table[:1]]).to(torch.float64)  # DDIM ends at σ(t = 0)

    checkpoint = checkpoint_from_components(parts, LoadOptions(device=torch.device("cpu")))
    text, model = checkpoint.clip, checkpoint.model
    assert isinstance(text, SDText)
    c, u = Prediction(model, text.encode_text(PROMPT)), Prediction(model, text.encode_text(NEGATIVE))
    base, degraded = (cfg(c, u, scale), u) if scale > 1 else (c, c)
    (program,) = SAG.run(Context(), base, model, degraded.condition, SAG_SCALE, 1.0, 1.0, "mid")
    compiled = CompiledGuidance(program, seeds=[0], device=torch.device("cpu"))
    with torch.no_grad():
        got = SAMPLERS["euler"](
            compiled, latents * (1 + sigmas[0] ** 2).sqrt(), sigmas, noise=None, callback=None
        )
    got = got / (1 + sigmas[-1] ** 2).sqrt()  # σ-space → VP latents
    assert compiled.stats.model_calls == 2 * STEPS  # the guided forward, then the degraded one
    assert float((got - reference).abs().max()) < TOL, float((got - reference).abs().max())
    without = pipe(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        num_inference_steps=STEPS,
        guidance_scale=scale,
        sag_scale=0.0,
        latents=latents.clone(),
        height=64,
        width=width,
        output_type="latent",
    ).images
    assert float((reference - without).abs().max()) > 1e-2  # SAG changed the result: the check has teeth
