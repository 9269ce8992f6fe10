"""InstructPix2Pix: files, detection and dual-CFG sampling against diffusers' own pipeline (tiny, CPU).

Parity: the same random networks, prompt, image and initial latents through diffusers'
StableDiffusionInstructPix2PixPipeline (Euler, its three-chunk batch [image+text, image, neither]) and
through our nodes: InstructPixToPixConditioning for the image conditions, DualCFGCombine for the
three-term rule, our Euler on the scheduler's σ list. As in ``test_sd_pipeline_parity.py`` the residue
is float32 reassociation and the σ ↔ t interpolation: measured max abs difference 3.4e-5 on latents of
magnitude 16 (tolerance 2e-4), while swapping the two scales moves them by 7.5.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from families.base import CheckpointError, LoadOptions, Source
from families.sd.components import SDComponents
from families.sd.detect import detect_variant
from families.sd.files import load_components
from families.sd.make import build_networks, make_checkpoint, write_single_file
from families.sd.model import checkpoint_from_components
from families.sd.tokenizer import clip_tokenizer
from graph_runtime.api import Context
from nodes.comfy.conditioning import InstructPixToPixConditioning
from nodes.diffusion.program import CompiledGuidance
from nodes.diffusion.samplers import SAMPLERS
from nodes.diffusion.types import batch_conditions
from nodes.rule_nodes import DualCFGCombine
from tests.families.tiny_sd import scheduler_kwargs, wrap

PROMPT, NEGATIVE = "turn the horse into a zebra", "blurry"
IMAGE_SCALE, TEXT_SCALE, STEPS, SIZE = 1.5, 7.5, 4, 64
TOL = 2e-4


@pytest.fixture(scope="module")
def built() -> tuple[dict[str, Any], Any, Any, dict[str, Any]]:
    return build_networks("sd1_ip2p", "tiny", seed=3)


def components(built: tuple[dict[str, Any], Any, Any, dict[str, Any]]) -> SDComponents:
    return wrap("sd1_ip2p", built, ["<|endoftext|>"])


def test_dual_cfg_sampling_equals_the_instruct_pix2pix_pipeline(built: Any) -> None:
    import diffusers

    parts = components(built)
    config = parts.scheduler_config
    scheduler = diffusers.EulerDiscreteScheduler(**scheduler_kwargs(config), timestep_spacing="leading")
    pipe = diffusers.StableDiffusionInstructPix2PixPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoders[0],
        tokenizer=clip_tokenizer("<|endoftext|>"),
        unet=parts.unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    generator = torch.Generator().manual_seed(11)
    image = torch.rand(1, 3, SIZE, SIZE, generator=generator)  # in [0, 1]
    latents = torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=generator)  # tiny VAE: downscale 2
    with torch.no_grad():
        reference = pipe(
            prompt=PROMPT,
            image=image,
            negative_prompt=NEGATIVE,
            num_inference_steps=STEPS,
            guidance_scale=TEXT_SCALE,
            image_guidance_scale=IMAGE_SCALE,
            latents=latents.clone(),
            output_type="latent",
        ).images

    checkpoint = checkpoint_from_components(parts, LoadOptions(device=torch.device("cpu")))
    ctx = Context()
    positive, negative = checkpoint.clip.encode_text(PROMPT), checkpoint.clip.encode_text(NEGATIVE)
    pixels = image.permute(0, 2, 3, 1)  # ComfyUI's IMAGE: (B, H, W, C)
    with_image, image_only, empty = InstructPixToPixConditioning.run(
        ctx, positive, negative, checkpoint.vae, pixels
    )
    assert empty.samples.shape == latents.shape and not empty.samples.any()
    (program,) = DualCFGCombine.run(
        ctx, checkpoint.model, with_image, image_only, negative, IMAGE_SCALE, TEXT_SCALE
    )
    compiled = CompiledGuidance(program, seeds=[0], device=torch.device("cpu"))
    pipe.scheduler.set_timesteps(STEPS)
    sigmas = pipe.scheduler.sigmas.to(torch.float64)
    with torch.no_grad():
        got = SAMPLERS["euler"](compiled, latents * pipe.scheduler.init_noise_sigma, sigmas)
    assert compiled.stats.model_calls == STEPS and compiled.stats.rows == 3 * STEPS  # one forward, 3 rows
    assert float((got - reference).abs().max()) < TOL


def test_the_unet_reads_the_image_latent_unscaled_and_zeros_without_one(built: Any) -> None:
    checkpoint = checkpoint_from_components(components(built), LoadOptions())
    network, vae = checkpoint.model.network, checkpoint.vae
    seen: list[torch.Tensor] = []
    hook = network.unet.conv_in.register_forward_hook(lambda _m, args, _o: seen.append(args[0]))
    positive = checkpoint.clip.encode_text(PROMPT)
    pixels = torch.rand(1, SIZE, SIZE, 3)
    with_image, _, _ = InstructPixToPixConditioning.run(Context(), positive, positive, vae, pixels)
    model, cpu = checkpoint.model, torch.device("cpu")
    with torch.no_grad():
        cond = batch_conditions([with_image, positive], 1, cpu, torch.float32)  # image, then none
        model(torch.zeros(2, 4, SIZE // 2, SIZE // 2), torch.full((2,), 1.0), cond)
    hook.remove()
    (x,) = seen  # (2, 8, H, W): noisy latent then image latent
    mode = vae.vae.encode(pixels.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mode()[0]  # unscaled
    assert torch.allclose(x[0, 4:], mode, atol=1e-5)
    assert not x[1, 4:].any()  # the condition without an image: the null image, zeros
    small = batch_conditions([with_image], 1, cpu, torch.float32)
    with torch.no_grad(), pytest.raises(ValueError, match=r"a latent of 4096 values.*4×16×16"):
        model(torch.zeros(1, 4, 16, 16), torch.full((1,), 1.0), small)


def test_instruct_pix2pix_conditioning_crops_to_multiples_of_eight_and_takes_one_image(built: Any) -> None:
    checkpoint = checkpoint_from_components(components(built), LoadOptions())
    positive = checkpoint.clip.encode_text(PROMPT)
    _, _, latent = InstructPixToPixConditioning.run(
        Context(), positive, positive, checkpoint.vae, torch.rand(1, 70, 67, 3)
    )
    assert latent.samples.shape == (1, 4, 32, 32)  # 64×64 pixels at the tiny VAE's downscale 2
    with pytest.raises(ValueError, match=r"pixels: a 5×64 image; expected at least 8×8"):
        InstructPixToPixConditioning.run(
            Context(), positive, positive, checkpoint.vae, torch.rand(1, 64, 5, 3)
        )
    with pytest.raises(ValueError, match=r"pixels: a batch of 2 images"):
        InstructPixToPixConditioning.run(
            Context(), positive, positive, checkpoint.vae, torch.rand(2, 64, 64, 3)
        )


@pytest.mark.parametrize("fmt", ["single", "diffusers"])
def test_make_checkpoint_writes_an_instruct_pix2pix_model_that_loads_to_the_same_weights(
    fmt: str, tmp_path: Path, built: Any
) -> None:
    out = tmp_path / ("ip2p.safetensors" if fmt == "single" else "ip2p")
    make_checkpoint("sd1_ip2p", out, fmt=fmt, seed=3)
    source = Source.open(out)
    assert detect_variant(source) == "sd1_ip2p"
    got = load_components(source, "sd1_ip2p", LoadOptions())
    _, unet, vae, encoders = built
    for expected, actual in (
        (unet, got.unet),
        (vae, got.vae),
        (encoders["text_encoder"], got.text_encoders[0]),
    ):
        theirs = {k: v for k, v in actual.state_dict().items() if not k.endswith("position_ids")}
        ours = {k: v for k, v in expected.state_dict().items() if not k.endswith("position_ids")}
        assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert got.unet.config.in_channels == 8


def test_diffusers_reads_our_single_file_as_an_instruct_pix2pix_pipeline(built: Any, tmp_path: Path) -> None:
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from families.sd.configs import write_config_folder

    configs, unet, vae, encoders = built
    path = write_single_file(tmp_path / "ip2p.safetensors", "sd1_ip2p", configs, unet, vae, encoders)
    pipe = StableDiffusionInstructPix2PixPipeline.from_single_file(
        str(path),
        config=str(write_config_folder(configs, tmp_path / "config")),
        local_files_only=True,
        tokenizer=clip_tokenizer("<|endoftext|>"),
        safety_checker=None,
        requires_safety_checker=False,
    )
    assert all(
        torch.equal(a, b)
        for a, b in zip(unet.state_dict().values(), pipe.unet.state_dict().values(), strict=True)
    )
    assert pipe.unet.conv_in.in_channels == 8


def test_an_eight_channel_unet_of_another_family_is_named_not_loaded(tmp_path: Path) -> None:
    from families.sd.configs import variant_configs, write_config_folder

    configs = variant_configs("sd2")
    configs["unet"]["in_channels"] = 8
    with pytest.raises(CheckpointError, match=r"8 input channels"):
        detect_variant(Source.open(write_config_folder(configs, tmp_path / "sd2_ip2p")))


def comfy_ip2p_prompt(ckpt: str, image: str, style: str) -> dict[str, Any]:
    """ComfyUI's InstructPix2Pix graph in the API format: the image conditions as DualCFGGuider's cond1
    and cond2, the plain negative prompt as its negative, sampled by SamplerCustomAdvanced."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["1", 1]}},
        "4": {"class_type": "LoadImage", "inputs": {"image": image}},
        "5": {
            "class_type": "InstructPixToPixConditioning",
            "inputs": {"positive": ["2", 0], "negative": ["3", 0], "vae": ["1", 2], "pixels": ["4", 0]},
        },
        "6": {
            "class_type": "DualCFGGuider",
            "inputs": {
                "model": ["1", 0],
                "cond1": ["5", 0],
                "cond2": ["5", 1],
                "negative": ["3", 0],
                "cfg_conds": TEXT_SCALE,
                "cfg_cond2_negative": IMAGE_SCALE,
                "style": style,
            },
        },
        "7": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
        "8": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler_ancestral"}},
        "9": {
            "class_type": "BasicScheduler",
            "inputs": {"model": ["1", 0], "scheduler": "normal", "steps": 2, "denoise": 1.0},
        },
        "10": {
            "class_type": "SamplerCustomAdvanced",
            "inputs": {
                "noise": ["7", 0],
                "guider": ["6", 0],
                "sampler": ["8", 0],
                "sigmas": ["9", 0],
                "latent_image": ["5", 2],
            },
        },
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
        "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "ip2p"}},
    }


@pytest.mark.parametrize("style", ["regular", "nested"])
def test_a_comfyui_instruct_pix2pix_workflow_runs(
    style: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    from graph_runtime import Executor, Registry
    from graph_runtime.context import Paths
    from nodes import node_classes

    make_checkpoint("sd1_ip2p", tmp_path / "checkpoints" / "ip2p.safetensors", seed=3)
    (tmp_path / "input").mkdir()
    Image.new("RGB", (SIZE, SIZE), (200, 40, 40)).save(tmp_path / "input" / "photo.png")
    dirs = f"checkpoints={tmp_path / 'checkpoints'}{os.pathsep}input={tmp_path / 'input'}"
    monkeypatch.setenv("GUIDEGRAPH_MODEL_DIRS", dirs)
    paths = Paths(output=tmp_path / "out", temp=tmp_path / "tmp", input=tmp_path / "input")
    executor = Executor(Registry(node_classes()), device="cpu", paths=paths)
    result = executor.run(comfy_ip2p_prompt("ip2p.safetensors", "photo.png", style))
    assert result.ok, {k: f.message for k, f in result.failures.items()}
    (image,) = result.outputs["11"]
    assert image.shape == (1, SIZE, SIZE, 3)


def test_a_model_without_an_image_input_refuses_an_image_condition(built: Any) -> None:
    ip2p = checkpoint_from_components(components(built), LoadOptions())
    configs, unet, vae, encoders = build_networks("sd1", "tiny", seed=3)
    sd1 = checkpoint_from_components(
        SDComponents(
            "sd1", unet, vae, list(encoders.values()), ["<|endoftext|>"], dict(configs["scheduler"])
        ),
        LoadOptions(),
    )
    positive = sd1.clip.encode_text(PROMPT)
    with_image, _, _ = InstructPixToPixConditioning.run(
        Context(), positive, positive, ip2p.vae, torch.rand(1, SIZE, SIZE, 3)
    )
    cond = batch_conditions([with_image], 1, torch.device("cpu"), torch.float32)
    with torch.no_grad(), pytest.raises(ValueError, match=r"image condition .* given to a sd1 model"):
        sd1.model(torch.zeros(1, 4, SIZE // 2, SIZE // 2), torch.full((1,), 1.0), cond)
