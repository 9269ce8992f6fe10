"""Node run functions called directly: loaders, conditions, guidance builders, Sampler, images."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from families.shapes.family import PixelSpace
from families.shapes.networks import UnsafeModelFileError
from graph_runtime.api import Interrupted
from graph_runtime.context import CancelToken, Context, Paths
from graph_runtime.docs import summary
from nodes import node_classes
from nodes.composition_nodes import (
    PAG,
    SEG,
    Autoguidance,
    GuidanceCombine,
    GuidanceInterval,
    GuidanceSchedule,
    SkipLayerGuidance,
)
from nodes.diffusion.guidance import Combine, Prediction, Window
from nodes.diffusion.types import Latent
from nodes.guidance_nodes import CFGCombine, ClassifierGrad, ClipLoss, Composable, GuidanceWindow, Predict
from nodes.image_nodes import Decode, Encode, ImageGrid, LoadImage, SaveImage
from nodes.model_nodes import ClassifierLoader, ClipLoader, Condition, Model, NullCondition
from nodes.rule_nodes import APG, CFGPlusPlus, CFGZeroStar, PerpNegGuidance, TangentialCFG
from nodes.sampling_nodes import EmptyLatent, Sampler


def ctx_for(root: Path, **kw) -> Context:
    paths = Paths(output=root / "output", temp=root / "temp", input=root / "input")
    return Context(node_id="7", class_type="X", paths=paths, **kw)


def test_every_node_declares_a_category_a_description_and_unique_name() -> None:
    names = [cls.__name__ for cls in node_classes()]
    assert len(names) == len(set(names))
    for cls in node_classes():
        ours = not cls.__module__.startswith("nodes.comfy.")  # ComfyUI's nodes keep ComfyUI's categories
        assert cls.description and cls.category.startswith("guidegraph") == ours, cls.__name__
    required = {"Model", "Condition", "NullCondition", "CFGCombine", "ClassifierGrad", "ClipLoss", "Sampler"}
    assert required <= set(names)


def test_every_node_input_has_a_tooltip_and_every_description_a_plain_summary() -> None:
    for cls in node_classes():
        assert [s.name for s in cls.inputs if not s.tooltip] == [], cls.__name__
        assert "``" not in summary(cls.description) and summary(cls.description), cls.__name__


def test_model_loader_wraps_the_file_and_refuses_pickles(model_dirs: Path) -> None:
    ctx = ctx_for(model_dirs)
    model, clip, vae = Model.run(ctx, checkpoint="tiny.safetensors", prediction="auto", weight_dtype="auto")
    assert model.parametrization == "eps" and model.sigma_max > 100
    assert clip.name == model.encoder == "tiny.safetensors" and vae.downscale == 1
    with pytest.raises(UnsafeModelFileError, match="pickle"):
        Model.run(ctx, checkpoint="old.ckpt", prediction="auto", weight_dtype="auto")
    models = model_dirs / "models"
    (models / "classifiers" / "mislabelled.safetensors").write_bytes(
        (models / "checkpoints" / "tiny.safetensors").read_bytes()
    )
    with pytest.raises(ValueError, match="noisy_classifier"):
        ClassifierLoader.run(ctx, classifier="mislabelled.safetensors")
    with pytest.raises(FileNotFoundError):
        ClassifierLoader.run(ctx, classifier="../checkpoints/tiny.safetensors")


def test_conditions_hash_by_content_and_say_what_they_mean(model_dirs: Path) -> None:
    ctx = ctx_for(model_dirs)
    _, clip, _ = Model.run(ctx, checkpoint="tiny.safetensors", prediction="auto", weight_dtype="auto")
    (a,) = Condition.run(ctx, clip=clip, text="a red circle", kind="prompt")
    (b,) = Condition.run(ctx, clip=clip, text="a red circle", kind="prompt")
    (label,) = Condition.run(ctx, clip=clip, text="red circle", kind="class label")
    assert a == b and hash(a) == hash(b) and a != label
    assert "red circle" in label.meaning
    (empty,) = NullCondition.run(ctx, clip=clip, meaning="empty prompt")
    (zeros,) = NullCondition.run(ctx, clip=clip, meaning="zeroed embedding")
    assert float(zeros.embedding.abs().sum()) == 0 and empty != zeros
    with pytest.raises(ValueError, match="no null class"):
        NullCondition.run(ctx, clip=clip, meaning="null class")
    with pytest.raises(ValueError, match="unknown class"):
        Condition.run(ctx, clip=clip, text="purple blob", kind="class label")


def test_cfg_node_scale_one_and_zero_are_single_predictions(gaussian, cond) -> None:
    m = gaussian()
    pos, neg = cond(m, "red"), cond(m, "")
    assert CFGCombine.run(Context(), m, pos, neg, 1.0)[0] == Prediction(m, pos)
    assert CFGCombine.run(Context(), m, pos, neg, 0.0)[0] == Prediction(m, neg)
    assert isinstance(CFGCombine.run(Context(), m, pos, neg, 7.0)[0], Combine)


def test_composable_drops_unconnected_conditions_and_keeps_signs(gaussian, cond) -> None:
    m = gaussian()
    (g,) = Composable.run(
        Context(), m, cond(m, ""), cond(m, "red"), 2.0, None, 5.0, cond(m, "blue"), -1.0, None, 0.0
    )
    assert isinstance(g, Combine) and [w for _, w in g.terms] == [2.0, -1.0]


def test_window_node_refuses_an_inverted_window(gaussian, cond) -> None:
    m = gaussian()
    leaf = Prediction(m, cond(m, "red"))
    assert isinstance(GuidanceWindow.run(Context(), leaf, 5.0, 1.0)[0], Window)
    with pytest.raises(ValueError, match="sigma_end"):
        GuidanceWindow.run(Context(), leaf, 1.0, 5.0)


def sample(guidance, latent: Latent, seed: int, ctx: Context | None = None, sampler: str = "euler_ancestral"):
    return Sampler.run(ctx or Context(), guidance, latent, seed, 5, sampler, "karras", 1.0)[0].samples


def test_sampler_reports_every_step_with_a_preview_and_stops_when_cancelled(gaussian, cond) -> None:
    m = gaussian()
    seen: list[tuple[int, int, tuple[int, ...]]] = []
    token = CancelToken()

    def on_progress(node_id, value, total, preview):
        seen.append((value, total, tuple(preview.pixels.shape)))
        if value == 3:
            token.cancel()

    latent = EmptyLatent.run(Context(), m, 8, 8, 2)[0]
    guidance = CFGCombine.run(Context(), m, cond(m, "red"), cond(m, ""), 3.0)[0]
    with pytest.raises(Interrupted):
        sample(guidance, latent, 0, Context(cancel=token, on_progress=on_progress, wants_preview=True))
    assert seen == [(1, 5, (8, 8, 3)), (2, 5, (8, 8, 3)), (3, 5, (8, 8, 3))]


def test_sampler_samples_do_not_depend_on_batch_position(gaussian, cond) -> None:
    m = gaussian()
    guidance = CFGCombine.run(Context(), m, cond(m, "red"), cond(m, ""), 3.0)[0]
    batch = sample(guidance, EmptyLatent.run(Context(), m, 8, 8, 3)[0], 100)
    third = sample(guidance, Latent(torch.zeros(1, 3, 8, 8), batch_index=(2,)), 100)
    assert torch.allclose(batch[2:], third, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1])


def test_noise_mask_keeps_the_unmasked_pixels(gaussian, cond) -> None:
    m = gaussian()
    image = torch.rand(1, 3, 8, 8) * 2 - 1
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1
    out = sample(Prediction(m, cond(m, "red")), Latent(image, mask), 1)
    assert torch.equal(out[..., 4:], image[..., 4:]) and not torch.allclose(out[..., :4], image[..., :4])


def test_real_tiny_networks_run_under_every_guidance_node(model_dirs: Path) -> None:
    ctx = ctx_for(model_dirs)
    model, text, _ = Model.run(ctx, checkpoint="tiny.safetensors", prediction="auto", weight_dtype="auto")
    (clf,) = ClassifierLoader.run(ctx, classifier="tiny_cls.safetensors")
    (clip,) = ClipLoader.run(ctx, clip="tiny_clip.safetensors")
    (pos,) = Condition.run(ctx, clip=text, text="a red circle", kind="prompt")
    (neg,) = NullCondition.run(ctx, clip=text, meaning="empty prompt")
    (g,) = CFGCombine.run(ctx, model, pos, neg, 4.0)
    (g,) = ClassifierGrad.run(ctx, g, clf, "red circle", 2.0)
    (g,) = ClipLoss.run(ctx, g, clip, "a red circle", 50.0, 2, True, True, 0.05, "", 1.0)
    (g,) = PAG.run(ctx, g, model, pos, 2.0, "mid")
    (g,) = SEG.run(ctx, g, model, pos, 1.0, 2.0, "mid")
    (g,) = SkipLayerGuidance.run(ctx, g, model, pos, 1.0, "mid")
    (apg,) = APG.run(ctx, model, pos, neg, 7.0, 0.0, -0.5, 15.0, "x0")
    (zero,) = CFGZeroStar.run(ctx, model, pos, neg, 5.0, 1, "eps")
    (perp,) = PerpNegGuidance.run(ctx, model, pos, neg, neg, 5.0, 1.0)
    (tcfg,) = TangentialCFG.run(ctx, model, pos, neg, 5.0)
    (g,) = GuidanceCombine.run(
        ctx,
        g,
        guidance_1=apg,
        weight_1=0.2,
        guidance_2=zero,
        weight_2=0.2,
        guidance_3=perp,
        weight_3=0.2,
        guidance_4=tcfg,
        weight_4=0.2,
    )
    (g,) = GuidanceSchedule.run(ctx, GuidanceInterval.run(ctx, g, 0.1, 0.9)[0], "cosine_increasing")
    out = Sampler.run(ctx, g, EmptyLatent.run(ctx, model, 32, 32, 2)[0], 3, 3, "heun", "normal", 1.0)[0]
    assert out.samples.shape == (2, 3, 32, 32) and bool(out.samples.isfinite().all())
    (pp,) = CFGPlusPlus.run(ctx, model, pos, neg, 0.6)
    out = Sampler.run(ctx, pp, EmptyLatent.run(ctx, model, 32, 32, 2)[0], 3, 3, "euler", "normal", 1.0)[0]
    assert bool(out.samples.isfinite().all())


def test_decode_and_encode_are_inverse_and_use_comfy_layout() -> None:
    latent = Latent(torch.rand(2, 3, 4, 5) * 2 - 1)
    (image,) = Decode.run(Context(), latent, PixelSpace())
    assert image.shape == (2, 4, 5, 3) and float(image.min()) >= 0
    assert torch.allclose(Encode.run(Context(), image, PixelSpace())[0].samples, latent.samples, atol=1e-6)


def test_save_image_writes_unique_pngs_with_prompt_and_workflow_chunks(tmp_path: Path) -> None:
    ctx = ctx_for(
        tmp_path, prompt={"1": {"class_type": "X", "inputs": {}}}, extra_pnginfo={"workflow": {"nodes": []}}
    )
    images = torch.rand(2, 8, 8, 3)
    first = SaveImage.run(ctx, images, "runs/cfg").ui["images"]
    second = SaveImage.run(ctx, images[:1], "runs/cfg").ui["images"]
    names = [i["filename"] for i in first + second]
    assert names == ["cfg_00001_.png", "cfg_00002_.png", "cfg_00003_.png"]
    (tmp_path / "output" / "runs" / "cfg_00004_.png").write_bytes(b"another writer's file")
    third = SaveImage.run(ctx, images[:1], "runs/cfg").ui["images"]
    assert third[0]["filename"] == "cfg_00005_.png"  # never overwrites, even past its own count
    assert first[0]["subfolder"] == "runs" and first[0]["type"] == "output"
    with Image.open(tmp_path / "output" / "runs" / names[0]) as png:
        assert json.loads(png.text["prompt"])["1"]["class_type"] == "X"
        assert json.loads(png.text["workflow"]) == {"nodes": []}
    assert not list((tmp_path / "output" / "runs").glob(".*"))  # no temporary files left
    with pytest.raises(ValueError, match="outside"):
        SaveImage.run(ctx, images, "../escape")


def test_load_image_gives_image_and_mask_from_alpha(tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    rgba = Image.new("RGBA", (6, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 255, 0, 255))
    rgba.save(tmp_path / "input" / "x.png")
    image, mask = LoadImage.run(ctx_for(tmp_path), "x.png")
    assert image.shape == (1, 4, 6, 3) and mask.shape == (1, 4, 6)
    assert float(mask[0, 0, 0]) == 0 and float(mask[0, 1, 1]) == 1


def test_image_grid_tiles_with_labels() -> None:
    images = torch.zeros(6, 8, 8, 3)
    (grid,) = ImageGrid.run(Context(), images, 3, 2, 2, "a, b", "w=1, w=3, w=5")
    (plain,) = ImageGrid.run(Context(), images, 0, 1, 0, "", "")
    assert grid.shape[0] == 1 and grid.shape[-1] == 3
    assert plain.shape == (1, 16, 24, 3)
    assert grid.shape[1] > 2 * 16 and grid.shape[2] > 3 * 16  # room for labels


def test_clip_loss_with_contrast_prompts_builds_the_zero_shot_loss(model_dirs: Path) -> None:
    ctx = ctx_for(model_dirs)
    model, text, _ = Model.run(ctx, checkpoint="tiny.safetensors", prediction="auto", weight_dtype="auto")
    (clip,) = ClipLoader.run(ctx, clip="tiny_clip.safetensors")
    (neg,) = NullCondition.run(ctx, clip=text, meaning="empty prompt")
    base = Predict.run(ctx, model, neg)[0]
    (rule,) = ClipLoss.run(
        ctx, base, clip, "a red circle", 5.0, 0, False, True, 0.0, "a blue circle\n\n a red square ", 0.5
    )
    assert [c.meaning for c in rule.contrast] == ["clip text 'a blue circle'", "clip text 'a red square'"]
    assert rule.shift_clamp == 0.5 and abs(rule.logit_scale - float(clip.module.logit_scale.exp())) < 1e-5
    (plain,) = ClipLoss.run(ctx, base, clip, "a red circle", 5.0, 0, False, True, 0.0, "", 1.0)
    assert plain.contrast == ()


def test_clip_loss_rejects_contrast_lines_that_repeat_the_prompt_or_each_other(model_dirs: Path) -> None:
    ctx = ctx_for(model_dirs)
    model, text, _ = Model.run(ctx, checkpoint="tiny.safetensors", prediction="auto", weight_dtype="auto")
    (clip,) = ClipLoader.run(ctx, clip="tiny_clip.safetensors")
    base = Predict.run(ctx, model, NullCondition.run(ctx, clip=text, meaning="empty prompt")[0])[0]
    contrast = "a blue circle\nred circle\nthe blue circle"
    with pytest.raises(ValueError) as info:
        ClipLoss.run(ctx, base, clip, "a red circle", 5.0, 0, False, True, 0.0, contrast, 1.0)
    message = str(info.value)
    assert "line 2 'red circle' encodes the same as the prompt" in message
    assert "line 3 'the blue circle' encodes the same as an earlier line" in message


def test_every_node_takes_its_defaults_from_its_declaration_only() -> None:
    for cls in node_classes():
        params = inspect.signature(cls.run).parameters
        for spec in cls.inputs:
            declared = getattr(spec, "default", None)
            param = params.get(spec.name)
            given = inspect.Parameter.empty if param is None else param.default  # or in **inputs
            assert given is inspect.Parameter.empty or given == declared, (cls.__name__, spec.name)


def test_sampler_names_the_schedule_when_the_program_has_two_models(gaussian, cond) -> None:
    good, weak = gaussian(), gaussian(std=0.3)
    (program,) = Autoguidance.run(Context(), good, weak, cond(good, "red"), 2.0)
    latent = EmptyLatent.run(Context(), good, 8, 8, 1)[0]
    with pytest.raises(ValueError, match="schedule_model"):
        Sampler.run(Context(), program, latent, 0, 2, "euler", "karras", 1.0)
    out = Sampler.run(Context(), program, latent, 0, 2, "euler", "karras", 1.0, 0, good)[0]
    assert bool(out.samples.isfinite().all())
    with pytest.raises(ValueError, match="weaker"):
        Autoguidance.run(Context(), good, good, cond(good, "red"), 2.0)


def test_interval_node_refuses_start_after_stop(gaussian, cond) -> None:
    m = gaussian()
    with pytest.raises(ValueError, match="start"):
        GuidanceInterval.run(Context(), Prediction(m, cond(m, "red")), 0.8, 0.2)


def test_universal_guidance_node_loads_a_clean_image_classifier_and_names_its_class(gaussian, cond) -> None:
    from graph_runtime.folders import register_folders
    from nodes import MODELS_DIR
    from nodes.diffusion.gradients import UniversalGradient
    from nodes.universal_nodes import ImageClassifierLoader, UniversalGuidance

    register_folders({"evaluators": [MODELS_DIR / "evaluators"]})
    (judge,) = ImageClassifierLoader.run(Context(), "shapes_evaluator.safetensors")
    m = gaussian()
    base = Prediction(m, cond(m, ""))
    (rule,) = UniversalGuidance.run(Context(), base, judge, "blue square", 5.0, 2, 0.1, True)
    assert isinstance(rule, UniversalGradient) and judge.labels[rule.label] == "blue square"
    with pytest.raises(ValueError, match="unknown class"):
        UniversalGuidance.run(Context(), Prediction(m, cond(m, "")), judge, "purple blob", 5.0, 0, 0.1, True)


def test_the_memory_estimate_refuses_giant_latents_and_passes_the_shipped_workflows() -> None:
    from graph_runtime import Registry, validate
    from graph_runtime.memory import estimate

    registry = Registry.from_entry_points()  # with the shipped model folders, so the prompts validate
    workflows = Path(__file__).resolve().parents[2] / "workflows"
    checked = 0
    for path in workflows.glob("*.api.json"):
        if path.name.startswith("sd"):  # no checkpoint ships for them, and SD prompts are not estimated yet
            continue
        report = validate(json.loads(path.read_text()), registry)
        if report.ok:
            assert 0 < estimate(report).total < 1 << 30, path.name
            checked += 1
    assert checked >= 10
    prompt = json.loads((workflows / "cfg.api.json").read_text())
    prompt["5"]["inputs"].update(width=2048, height=2048, batch_size=64)
    found = estimate(validate(prompt, registry))
    assert found.total > 1 << 40 and found.largest() == "6"  # the Sampler
    prompt["6"]["inputs"]["max_batch"] = 2
    assert estimate(validate(prompt, registry)).total < found.total / 10
