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
    (graph,) = Sampler.run(ctx, program, latent, 7, 3, "euler_ancestral", "karras", 1.0, 0, None, "comfyui")
    assert torch.equal(ours.samples, graph.samples)
    (own,) = Sampler.run(ctx, program, latent, 7, 3, "euler_ancestral", "karras", 1.0)
    assert not torch.equal(ours.samples, own.samples)  # our own noise is per sample, ComfyUI's per batch
    with pytest.raises(ValueError, match="not supported"):
        KSampler.run(ctx, model, 7, 3, 6.5, "sa_solver", "karras", pos, neg, latent, 1.0)


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
    from nodes.diffusion.program import CompiledGuidance

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


def test_empty_image_is_comfyuis_colour_fill_and_declares_its_size() -> None:
    from graph_runtime.memory import estimate
    from graph_runtime.validation import validate
    from nodes.comfy.latent import EmptyImage

    image = EmptyImage.run(Context(), 5, 3, 2, 0x12AB00)[0]
    assert image.shape == (2, 3, 5, 3)
    assert torch.equal(image[1, 2, 4], torch.tensor([0x12 / 255, 0xAB / 255, 0.0]))
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 4096, "height": 4096, "batch_size": 64, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    report = validate(prompt, Registry(node_classes()))
    assert report.ok
    assert estimate(report).total == 64 * 4096 * 4096 * 3 * 4  # refused beyond the memory budget
    prompt["1"]["inputs"]["color"] = 0x1000000
    assert (
        validate(prompt, Registry(node_classes())).node_errors["1"]["errors"][0]["type"]
        == "value_bigger_than_max"
    )


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


def test_combined_conditions_mix_per_pixel_by_area_strength_and_schedule(gaussian: Any, cond: Any) -> None:
    from nodes.comfy.conditioning import (
        ConditioningCombine,
        ConditioningSetArea,
        ConditioningSetTimestepRange,
    )
    from nodes.diffusion.program import CompiledGuidance
    from nodes.diffusion.regions import predict

    m, ctx = gaussian(), Context()
    red, blue = cond(m, "red"), cond(m, "blue")
    x, sigma = torch.randn(1, 3, 32, 32), torch.full((1,), 1.5)

    def run(value: Any) -> torch.Tensor:
        return CompiledGuidance(predict(m, value), seeds=[0], device=torch.device("cpu"))(x, sigma)

    d_red, d_blue = run(red), run(blue)
    assert torch.allclose(run(ConditioningCombine.run(ctx, red, red)[0]), d_red, atol=1e-6)
    (area,) = ConditioningSetArea.run(ctx, blue, 16, 16, 8, 8, 1.0)  # pixels = latent units here
    mixed = run(ConditioningCombine.run(ctx, red, area)[0])
    assert torch.allclose(mixed[..., :8, :], d_red[..., :8, :], atol=1e-6)  # outside the area
    core = (d_red + d_blue) / 2  # the area's centre is not feathered (8-pixel ramps, 16-pixel area)
    assert torch.allclose(mixed[..., 15:17, 15:17], core[..., 15:17, 15:17], atol=1e-6)
    (late,) = ConditioningSetTimestepRange.run(ctx, blue, 0.9, 1.0)  # only the last 10% of the schedule
    assert torch.allclose(run(ConditioningCombine.run(ctx, red, late)[0]), d_red, atol=1e-6)


def test_conditioning_average_and_concat_follow_comfyui(loaded: Any) -> None:
    from nodes.comfy.conditioning import ConditioningAverage, ConditioningConcat, ConditioningZeroOut

    _, clip, _ = loaded
    ctx = Context()
    a, b = clip.encode_text("a red house"), clip.encode_text(" ".join(["tree"] * 80))  # b: 154 tokens
    (avg,) = ConditioningAverage.run(ctx, a, b, 0.25)
    assert torch.allclose(avg.embedding, 0.25 * a.embedding + 0.75 * b.embedding[:77], atol=1e-6)
    (cat,) = ConditioningConcat.run(ctx, a, b)
    assert cat.embedding.shape == (77 + 154, a.embedding.shape[-1])
    (zero,) = ConditioningZeroOut.run(ctx, a)
    assert float(zero.embedding.abs().sum()) == 0


def test_area_composition_runs_through_ksampler(loaded: Any) -> None:
    from nodes.comfy.conditioning import ConditioningCombine, ConditioningSetArea

    model, clip, _ = loaded
    ctx = Context()
    sky, tree = clip.encode_text("a blue sky"), clip.encode_text("a tree")
    (area,) = ConditioningSetArea.run(ctx, tree, 32, 64, 32, 0, 1.5)  # pixels: the right half (tiny VAE: /2)
    (both,) = ConditioningCombine.run(ctx, sky, area)
    (out,) = KSampler.run(
        ctx,
        model,
        0,
        2,
        5.0,
        "euler",
        "karras",
        both,
        clip.encode_text(""),
        Latent(torch.zeros(1, 4, 32, 32)),
        1.0,
    )
    assert out.samples.shape == (1, 4, 32, 32) and bool(out.samples.isfinite().all())


def test_lora_merges_w_plus_s_up_down_per_format_without_touching_the_checkpoint(
    loaded: Any, ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import save_file

    from families.sd.lora import Patched
    from nodes.comfy.core import LoraLoader, LoraLoaderModelOnly

    model, clip, _ = loaded
    unet = model.network.unet
    q_name = next(n for n, _ in unet.named_modules() if n.endswith("attn1.to_q"))
    te_name = "encoder.layers.0.self_attn.q_proj"
    w_q = unet.get_submodule(q_name).weight.detach().clone()
    w_te = clip.encoders[0].get_submodule(te_name).weight.detach().clone()
    torch.manual_seed(0)
    r = 2
    down, up = torch.randn(r, w_q.shape[1]), torch.randn(w_q.shape[0], r)
    te_down, te_up = torch.randn(r, w_te.shape[1]), torch.randn(w_te.shape[0], r)
    kohya = {
        f"lora_unet_{q_name.replace('.', '_')}.lora_down.weight": down,
        f"lora_unet_{q_name.replace('.', '_')}.lora_up.weight": up,
        f"lora_unet_{q_name.replace('.', '_')}.alpha": torch.tensor(4.0),
        "lora_te_text_model_" + te_name.replace(".", "_") + ".lora_down.weight": te_down,
        "lora_te_text_model_" + te_name.replace(".", "_") + ".lora_up.weight": te_up,
    }
    peft = {f"unet.{q_name}.lora_A.weight": down, f"unet.{q_name}.lora_B.weight": up}
    loras = ckpt_dir / "loras"
    loras.mkdir(exist_ok=True)
    save_file(kohya, str(loras / "kohya.safetensors"))
    save_file(peft, str(loras / "peft.safetensors"))
    monkeypatch.setenv("GUIDEGRAPH_MODEL_DIRS", f"checkpoints={ckpt_dir / 'checkpoints'}:loras={loras}")
    ctx = Context()
    new_model, new_clip = LoraLoader.run(ctx, model, clip, "kohya.safetensors", 0.5, 2.0)
    patched = new_model.network.unet
    assert isinstance(patched, Patched)
    assert torch.allclose(patched.overrides[f"{q_name}.weight"], w_q + 0.5 * (4.0 / r) * up @ down, atol=1e-6)
    te = new_clip.encoders[0]
    assert torch.allclose(te.overrides[f"{te_name}.weight"], w_te + 2.0 * up_down(te_up, te_down), atol=1e-6)
    assert torch.equal(unet.get_submodule(q_name).weight, w_q)  # the shared checkpoint is untouched
    (peft_model,) = LoraLoaderModelOnly.run(ctx, model, "peft.safetensors", 1.0)
    assert torch.allclose(peft_model.network.unet.overrides[f"{q_name}.weight"], w_q + up @ down, atol=1e-6)
    latent = Latent(torch.zeros(1, 4, 16, 16))
    pos, neg = clip.encode_text("a red house"), clip.encode_text("")
    plain = KSampler.run(ctx, model, 0, 2, 5.0, "euler", "karras", pos, neg, latent, 1.0)[0].samples
    lora = KSampler.run(ctx, new_model, 0, 2, 5.0, "euler", "karras", pos, neg, latent, 1.0)[0].samples
    assert not torch.allclose(plain, lora)


def up_down(up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    return up @ down  # α absent: α = r, scale 1


def test_the_docs_example_runs_a_comfyui_graph_with_clip_guidance_in_place_of_ksampler(
    ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import json

    from families.clip import write_random_clip

    write_random_clip(ckpt_dir / "clip" / "clip_vit_b32.safetensors", "tiny")
    dirs = f"checkpoints={ckpt_dir / 'checkpoints'}:clip={ckpt_dir / 'clip'}"
    monkeypatch.setenv("GUIDEGRAPH_MODEL_DIRS", dirs)
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "comfyui_clip_guided.api.json"
    prompt = json.loads(example.read_text())
    prompt["5"]["inputs"].update(width=64, height=64)
    prompt["14"]["inputs"]["steps"] = 2
    executor = Executor(Registry(node_classes()), device="cpu", paths=Paths(output=tmp_path / "out"))
    result = executor.run(prompt)
    assert result.ok, {k: f.message for k, f in result.failures.items()}


def test_rescale_cfg_patches_the_model_for_comfyui_samplers_and_perp_neg_guides(loaded: Any) -> None:
    from nodes.comfy.custom_sampling import PerpNegGuider
    from nodes.comfy.model_patches import RescaleCFG
    from nodes.guidance_nodes import CFGRescale

    model, clip, _ = loaded
    ctx = Context()
    pos, neg = clip.encode_text("a red house"), clip.encode_text("")
    latent = Latent(torch.zeros(1, 4, 16, 16))
    (patched,) = RescaleCFG.run(ctx, model, 0.7)
    (rescaled,) = KSampler.run(ctx, patched, 3, 2, 7.0, "euler", "karras", pos, neg, latent, 1.0)
    (program,) = CFGRescale.run(ctx, CFGCombine.run(ctx, model, pos, neg, 7.0)[0], 0.7, "v")
    (by_hand,) = Sampler.run(ctx, program, latent, 3, 2, "euler", "karras", 1.0, 0, None, "comfyui")
    assert torch.equal(rescaled.samples, by_hand.samples)
    (plain,) = KSampler.run(ctx, model, 3, 2, 7.0, "euler", "karras", pos, neg, latent, 1.0)
    assert not torch.equal(plain.samples, rescaled.samples)
    (guider,) = PerpNegGuider.run(ctx, model, pos, clip.encode_text("blue"), neg, 6.0, 1.0)
    (out,) = Sampler.run(ctx, guider, latent, 3, 2, "euler", "karras", 1.0)
    assert bool(out.samples.isfinite().all())


def test_self_attention_guidance_patches_the_model_and_stacks_after_rescale_cfg(loaded: Any) -> None:
    from nodes.comfy.model_patches import RescaleCFG, SelfAttentionGuidance
    from nodes.composition_nodes import SAG
    from nodes.guidance_nodes import CFGRescale

    model, clip, _ = loaded
    ctx = Context()
    pos, neg = clip.encode_text("a red house"), clip.encode_text("")
    latent = Latent(torch.zeros(1, 4, 16, 16))
    (patched,) = SelfAttentionGuidance.run(ctx, *RescaleCFG.run(ctx, model, 0.7), 0.5, 2.0)
    (both,) = KSampler.run(ctx, patched, 3, 2, 7.0, "euler", "karras", pos, neg, latent, 1.0)
    (rescaled,) = CFGRescale.run(ctx, CFGCombine.run(ctx, model, pos, neg, 7.0)[0], 0.7, "v")
    (program,) = SAG.run(ctx, rescaled, model, neg, 0.5, 2.0, 1.0, "mid")  # ComfyUI: after the CFG
    (by_hand,) = Sampler.run(ctx, program, latent, 3, 2, "euler", "karras", 1.0, 0, None, "comfyui")
    assert torch.equal(both.samples, by_hand.samples)
    (sag_only,) = KSampler.run(
        ctx,
        SelfAttentionGuidance.run(ctx, model, 0.5, 2.0)[0],
        3,
        2,
        7.0,
        "euler",
        "karras",
        pos,
        neg,
        latent,
        1.0,
    )
    (plain,) = KSampler.run(ctx, model, 3, 2, 7.0, "euler", "karras", pos, neg, latent, 1.0)
    assert not torch.equal(sag_only.samples, plain.samples) and not torch.equal(
        sag_only.samples, both.samples
    )
