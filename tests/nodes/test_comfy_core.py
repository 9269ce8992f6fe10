"""ComfyUI's core nodes over our values: the classic default workflow runs, KSampler is CFGCombine +
Sampler, emphasis, CLIP skip, and KSamplerAdvanced's schedule slices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from families.sd.make import make_checkpoint
from graph_runtime import Executor, Registry
from graph_runtime.context import Context, Paths
from graph_runtime.workflow import to_api_prompt
from nodes import node_classes
from nodes.comfy.core import CLIPSetLastLayer, CLIPTextEncode, KSampler, KSamplerAdvanced
from nodes.comfy.emphasis import parse_emphasis
from nodes.diffusion.types import Latent
from nodes.guidance_nodes import CFGCombine
from nodes.model_nodes import Condition, Model
from nodes.sampling_nodes import Sampler

CKPT = "v1-5-pruned-emaonly-fp16.safetensors"  # what ComfyUI's classic default workflow names


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("comfy")
    make_checkpoint("sd1", root / "checkpoints" / CKPT, size="tiny")
    return root


@pytest.fixture
def loaded(ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, Any]:
    monkeypatch.setenv("GUIDEGRAPH_MODEL_DIRS", f"checkpoints={ckpt_dir / 'checkpoints'}")
    return Model.run(Context(), CKPT, "auto", "auto")


def classic_default_workflow() -> dict[str, Any]:
    """ComfyUI's classic default graph (SD 1.5 txt2img) in the editor's format, steps cut to 2."""

    def node(
        i: int,
        kind: str,
        widgets: list[Any],
        inputs: list[tuple[str, str, int]],
        outputs: list[tuple[str, str, list[int]]],
    ) -> dict[str, Any]:
        return {
            "id": i,
            "type": kind,
            "pos": [0, 0],
            "size": [300, 100],
            "flags": {},
            "order": i,
            "mode": 0,
            "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs],
            "outputs": [{"name": n, "type": t, "links": links} for n, t, links in outputs],
            "properties": {},
            "widgets_values": widgets,
        }

    nodes = [
        node(
            4,
            "CheckpointLoaderSimple",
            [CKPT],
            [],
            [("MODEL", "MODEL", [1]), ("CLIP", "CLIP", [3, 5]), ("VAE", "VAE", [8])],
        ),
        node(
            6,
            "CLIPTextEncode",
            ["beautiful scenery nature glass bottle landscape, purple galaxy bottle,"],
            [("clip", "CLIP", 3)],
            [("CONDITIONING", "CONDITIONING", [4])],
        ),
        node(
            7,
            "CLIPTextEncode",
            ["text, watermark"],
            [("clip", "CLIP", 5)],
            [("CONDITIONING", "CONDITIONING", [6])],
        ),
        node(5, "EmptyLatentImage", [64, 64, 1], [], [("LATENT", "LATENT", [2])]),
        node(
            3,
            "KSampler",
            [156680208700286, "randomize", 2, 8, "euler", "normal", 1],
            [
                ("model", "MODEL", 1),
                ("positive", "CONDITIONING", 4),
                ("negative", "CONDITIONING", 6),
                ("latent_image", "LATENT", 2),
            ],
            [("LATENT", "LATENT", [7])],
        ),
        node(8, "VAEDecode", [], [("samples", "LATENT", 7), ("vae", "VAE", 8)], [("IMAGE", "IMAGE", [9])]),
        node(9, "SaveImage", ["ComfyUI"], [("images", "IMAGE", 9)], []),
    ]
    links = [
        [1, 4, 0, 3, 0, "MODEL"],
        [2, 5, 0, 3, 3, "LATENT"],
        [3, 4, 1, 6, 0, "CLIP"],
        [4, 6, 0, 3, 1, "CONDITIONING"],
        [5, 4, 1, 7, 0, "CLIP"],
        [6, 7, 0, 3, 2, "CONDITIONING"],
        [7, 3, 0, 8, 0, "LATENT"],
        [8, 4, 2, 8, 1, "VAE"],
        [9, 8, 0, 9, 0, "IMAGE"],
    ]
    return {
        "last_node_id": 9,
        "last_link_id": 9,
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }


def test_the_classic_default_workflow_runs_unchanged(loaded: Any, tmp_path: Path) -> None:
    registry = Registry(node_classes())
    prompt = to_api_prompt(classic_default_workflow(), registry)
    assert prompt["3"]["inputs"]["seed"] == 156680208700286 and prompt["3"]["inputs"]["cfg"] == 8
    executor = Executor(registry, device="cpu", paths=Paths(output=tmp_path / "out", temp=tmp_path / "tmp"))
    result = executor.run(prompt)
    assert result.ok, {k: f.message for k, f in result.failures.items()}
    (image,) = result.ui["9"]["images"]
    assert image["filename"].startswith("ComfyUI_")


def test_ksampler_is_cfgcombine_plus_sampler_bit_for_bit(loaded: Any) -> None:
    model, clip, _ = loaded
    ctx = Context()
    pos, neg = clip.encode_text("a red house"), clip.encode_text("")
    latent = Latent(torch.zeros(2, 4, 16, 16))
    (ours,) = KSampler.run(ctx, model, 7, 3, 6.5, "euler_ancestral", "karras", pos, neg, latent, 1.0)
    (program,) = CFGCombine.run(ctx, model, pos, neg, 6.5)
    (graph,) = Sampler.run(ctx, program, latent, 7, 3, "euler_ancestral", "karras", 1.0)
    assert torch.equal(ours.samples, graph.samples)


def test_ksampler_advanced_halves_compose_to_the_whole_run(loaded: Any) -> None:
    model, clip, _ = loaded
    ctx = Context()
    pos, neg = clip.encode_text("a red house"), clip.encode_text("")
    latent = Latent(torch.zeros(1, 4, 16, 16))
    args = (4, 5.0, "euler", "normal", pos, neg)
    (whole,) = KSamplerAdvanced.run(ctx, model, "enable", 3, *args, latent, 0, 10000, "disable")
    (first,) = KSamplerAdvanced.run(ctx, model, "enable", 3, *args, latent, 0, 2, "enable")
    (second,) = KSamplerAdvanced.run(ctx, model, "disable", 3, *args, first, 2, 10000, "disable")
    assert torch.allclose(whole.samples, second.samples, atol=1e-5)
    (cut,) = KSamplerAdvanced.run(ctx, model, "enable", 3, *args, latent, 0, 2, "disable")
    assert not torch.allclose(cut.samples, first.samples)  # without leftover noise: denoised at step 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("a (red:1.3) cat", [("a ", 1.0), ("red", 1.3), (" cat", 1.0)]),
        ("((big))", [("big", pytest.approx(1.21))]),
        ("(a (b:0.5) c)", [("a ", pytest.approx(1.1)), ("b", 0.5), (" c", pytest.approx(1.1))]),
        ("\\(literal\\) [not special]", [("(literal) [not special]", 1.0)]),
        ("(x:abc)", [("x:abc", pytest.approx(1.1))]),
        ("open (ended", [("open ", 1.0), ("(ended", 1.0)]),
    ],
)
def test_emphasis_parses_as_comfyui(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_emphasis(text) == expected


def test_weighted_tokens_move_away_from_the_empty_prompt(loaded: Any) -> None:
    _, clip, _ = loaded
    ctx = Context()
    (plain,) = CLIPTextEncode.run(ctx, "a red house", clip)
    assert plain == Condition.run(ctx, clip, "a red house", "prompt")[0]  # weight 1: the literal prompt
    (weighted,) = CLIPTextEncode.run(ctx, "a (red:1.5) house", clip)
    empty = clip.encode_text("").embedding
    # token 2 is "red" (after BOS and "a"); the others keep their weight 1
    expected = empty[2] + 1.5 * (plain.embedding[2] - empty[2])
    assert torch.allclose(weighted.embedding[2], expected, atol=1e-5)
    assert torch.allclose(weighted.embedding[1], plain.embedding[1], atol=1e-5)


def test_clip_set_last_layer_is_clip_skip(loaded: Any) -> None:
    _, clip, _ = loaded
    ctx = Context()
    (skipped,) = CLIPSetLastLayer.run(ctx, clip, -2)
    via_node = CLIPTextEncode.run(ctx, "a red house", skipped)[0]
    assert torch.equal(via_node.embedding, Condition.run(ctx, clip, "a red house", "prompt", 1)[0].embedding)
    assert CLIPSetLastLayer.run(ctx, clip, -1)[0].encode_text("x") == clip.encode_text("x")


def test_sampler_custom_advanced_with_cfg_guider_equals_ksampler(loaded: Any) -> None:
    from nodes.comfy.custom_sampling import (
        BasicScheduler,
        CFGGuider,
        DisableNoise,
        KSamplerSelect,
        RandomNoise,
        SamplerCustomAdvanced,
        SplitSigmas,
    )

    model, clip, _ = loaded
    ctx = Context()
    pos, neg = clip.encode_text("a red house"), clip.encode_text("")
    latent = Latent(torch.zeros(1, 4, 16, 16))
    (reference,) = KSampler.run(ctx, model, 5, 4, 6.0, "euler", "karras", pos, neg, latent, 1.0)
    (guider,) = CFGGuider.run(ctx, model, pos, neg, 6.0)
    (sigmas,) = BasicScheduler.run(ctx, model, "karras", 4, 1.0)
    noise, sampler = RandomNoise.run(ctx, 5)[0], KSamplerSelect.run(ctx, "euler")[0]
    out, denoised = SamplerCustomAdvanced.run(ctx, noise, guider, sampler, sigmas, latent)
    assert torch.equal(out.samples, reference.samples)
    assert denoised.samples.shape == out.samples.shape
    high, low = SplitSigmas.run(ctx, sigmas, 2)
    first, _ = SamplerCustomAdvanced.run(ctx, noise, guider, sampler, high, latent)
    second, _ = SamplerCustomAdvanced.run(ctx, DisableNoise.run(ctx)[0], guider, sampler, low, first)
    assert torch.allclose(second.samples, reference.samples, atol=1e-5)


def test_dual_cfg_guider_is_its_formula(gaussian: Any, cond: Any) -> None:
    from nodes.comfy.custom_sampling import DualCFGGuider
    from nodes.diffusion.guidance import CompiledGuidance

    m = gaussian()
    c1, c2, u = cond(m, "red"), cond(m, "blue"), cond(m, "")
    (guider,) = DualCFGGuider.run(Context(), m, c1, c2, u, 3.0, 2.0)
    x, sigma = torch.randn(2, 3, 8, 8), torch.full((2,), 1.5)
    program = CompiledGuidance(guider, seeds=[0, 1], device=torch.device("cpu"))
    d = {k: m(x, sigma, c.embedding.expand(2, -1)) for k, c in (("c1", c1), ("c2", c2), ("u", u))}
    expected = d["u"] + 2.0 * (d["c2"] - d["u"]) + 3.0 * (d["c1"] - d["c2"])
    assert torch.allclose(program(x, sigma), expected, atol=1e-5)
    assert program.stats.model_calls == 1  # three predictions, one batched forward


def test_latent_and_image_resizing_follow_comfyui_sizes() -> None:
    from nodes.comfy.latent import ImageInvert, ImageScale, ImageScaleBy, LatentUpscale, LatentUpscaleBy

    ctx = Context()
    latent = Latent(torch.randn(1, 4, 8, 12))  # 96×64 pixels
    assert LatentUpscale.run(ctx, latent, "bilinear", 192, 128, "disabled")[0].samples.shape == (1, 4, 16, 24)
    assert LatentUpscale.run(ctx, latent, "nearest-exact", 0, 128, "disabled")[0].samples.shape == (
        1,
        4,
        16,
        24,
    )
    assert LatentUpscale.run(ctx, latent, "area", 64, 64, "center")[0].samples.shape == (1, 4, 8, 8)
    assert LatentUpscaleBy.run(ctx, latent, "bicubic", 1.5)[0].samples.shape == (1, 4, 12, 18)
    with pytest.raises(ValueError, match="bislerp"):
        LatentUpscaleBy.run(ctx, latent, "bislerp", 2.0)
    image = torch.rand(2, 10, 20, 3)
    assert ImageScale.run(ctx, image, "lanczos", 40, 0, "disabled")[0].shape == (2, 20, 40, 3)
    assert ImageScaleBy.run(ctx, image, "bilinear", 0.5)[0].shape == (2, 5, 10, 3)
    assert torch.equal(ImageInvert.run(ctx, image)[0], 1 - image)


def test_inpaint_encode_greys_the_mask_and_tiled_decode_matches_whole(loaded: Any) -> None:
    from nodes.comfy.core import VAEDecode
    from nodes.comfy.latent import VAEDecodeTiled, VAEEncodeForInpaint

    _, _, vae = loaded
    ctx = Context()
    image = torch.rand(1, 35, 35, 3)  # cropped to 34×34 (a multiple of the tiny VAE's 2)
    mask = torch.zeros(1, 35, 35)
    mask[:, :10, :10] = 1
    (latent,) = VAEEncodeForInpaint.run(ctx, image, vae, mask, 4)
    assert latent.samples.shape == (1, 4, 17, 17) and latent.noise_mask is not None
    grown = latent.noise_mask
    assert float(grown[..., :10, :10].min()) == 1 and float(grown[..., 11:13, :8].max()) == 1  # grown
    assert float(grown[..., 20:, 20:].max()) == 0
    (whole,) = VAEDecode.run(ctx, latent, vae)
    (one_tile,) = VAEDecodeTiled.run(ctx, latent, vae, 64, 0)
    assert torch.equal(whole, one_tile)  # a tile as large as the image is the whole decode
    (tiled,) = VAEDecodeTiled.run(ctx, latent, vae, 16, 8)
    assert tiled.shape == whole.shape and bool(tiled.isfinite().all())


def test_sdxl_encode_carries_its_size_conditioning_and_mixes_with_plain_prompts(
    ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nodes.comfy.core import CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner

    make_checkpoint("sdxl", ckpt_dir / "checkpoints" / "xl.safetensors", size="tiny")
    monkeypatch.setenv("GUIDEGRAPH_MODEL_DIRS", f"checkpoints={ckpt_dir / 'checkpoints'}")
    ctx = Context()
    model, clip, _ = Model.run(ctx, "xl.safetensors", "auto", "auto")
    (pos,) = CLIPTextEncodeSDXL.run(ctx, clip, 64, 64, 0, 0, 64, 64, "a fox", "a (red:1.2) fox")
    assert dict(pos.extras)["time_ids"].tolist() == [64, 64, 0, 0, 64, 64]
    assert pos.embedding.shape == (77, 32 + 48)
    (neg,) = CLIPTextEncode.run(ctx, "", clip)  # no time ids: the UNet's default (the image size)
    latent = Latent(torch.zeros(1, 4, 32, 32))
    (same,) = KSampler.run(ctx, model, 1, 2, 5.0, "euler", "karras", pos, neg, latent, 1.0)
    (plain,) = CLIPTextEncodeSDXL.run(ctx, clip, 512, 512, 0, 0, 512, 512, "a fox", "a (red:1.2) fox")
    (other,) = KSampler.run(ctx, model, 1, 2, 5.0, "euler", "karras", plain, neg, latent, 1.0)
    assert not torch.allclose(same.samples, other.samples)  # the size conditioning reaches the UNet
    with pytest.raises(ValueError, match="SDXL base encoder"):
        CLIPTextEncodeSDXLRefiner.run(ctx, 6.0, 64, 64, "x", clip)
