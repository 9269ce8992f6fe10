"""``guidegraph eval`` end to end on tiny untrained networks: it writes its table, data and pictures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from families.shapes.data import CLASS_NAMES
from families.shapes.evaluation.cli import add_arguments, parse_scales, run
from families.shapes.networks import Evaluator, NoisyClassifier, ShapesCLIP, ShapesUNet, save_network
from families.shapes.training.recipes import SCHEDULE

TINY = {"channels": [8, 8, 8, 8], "blocks_per_level": 1}


def tiny_models(folder: Path) -> dict[str, Path]:
    labels = list(CLASS_NAMES)
    unet_cfg = {"channels": [8, 8, 8, 8], "blocks_per_level": 1, "attention_levels": [3], "emb_dim": 16}
    meta = {"training": {}, "metrics": {}}
    unet_meta = {
        **meta,
        "kind": "denoiser",
        "config": unet_cfg,
        "parametrization": "eps",
        "schedule": SCHEDULE,
    }
    return {
        "denoiser": save_network(ShapesUNet(**unet_cfg), folder / "u.safetensors", unet_meta),
        "weak-denoiser": save_network(ShapesUNet(**unet_cfg), folder / "w.safetensors", unet_meta),
        "classifier": save_network(
            NoisyClassifier(**TINY, emb_dim=8, labels=labels),
            folder / "c.safetensors",
            {
                **meta,
                "kind": "noisy_classifier",
                "config": {**TINY, "emb_dim": 8, "labels": labels},
                "labels": labels,
            },
        ),
        "clip": save_network(
            ShapesCLIP(**TINY, embed_dim=8),
            folder / "p.safetensors",
            {**meta, "kind": "clip", "config": {**TINY, "embed_dim": 8}},
        ),
        "evaluator": save_network(
            Evaluator(**TINY, labels=labels),
            folder / "e.safetensors",
            {**meta, "kind": "evaluator", "config": {**TINY, "labels": labels}, "labels": labels},
        ),
    }


def test_scales_parse_per_strategy() -> None:
    assert parse_scales("none=0; cfg=1,3;clip=10") == {"none": [0.0], "cfg": [1.0, 3.0], "clip": [10.0]}


def test_eval_writes_table_json_plot_and_samples(tmp_path: Path) -> None:
    files = tiny_models(tmp_path)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--per-class", "1", "--steps", "1", "--device", "cpu"]
    scales = "cfg=2;apg=3;cfg_pp=0.5;classifier=1;clip=1;autoguidance=2"
    argv += ["--scales", scales, "--out-dir", str(tmp_path / "out")]
    for key, path in files.items():
        argv += [f"--{key}", str(path)]
    assert run(parser.parse_args(argv)) == 0
    data = json.loads((tmp_path / "out" / "eval.json").read_text())
    rows = data["rows"]
    assert [r["strategy"] for r in rows] == ["cfg", "apg", "cfg_pp", "classifier", "clip", "autoguidance"]
    assert rows[-1]["model_calls_per_image_batch"] == 2  # one forward each of the two networks
    assert all(r["n"] == len(CLASS_NAMES) and 0 <= r["acc_class"] <= 1 for r in rows)
    assert all(0 <= r["clipped"] <= 1 and 0 <= r["saturation_data"] <= 1 for r in rows)
    assert data["header"]["held_out"] and data["header"]["seed"] == 777
    table = (tmp_path / "out" / "eval.md").read_text()
    assert "| cfg | 2 |" in table and "held out" in table and "workflow `apg`" in table
    assert (tmp_path / "out" / "eval.png").stat().st_size > 0
    assert (tmp_path / "out" / "eval_samples.png").stat().st_size > 0


def test_strategies_are_the_shipped_workflows_with_scale_class_and_variant_set(tmp_path: Path) -> None:
    import torch

    from families.shapes.evaluation.strategies import STRATEGIES, build_program
    from graph_runtime import Executor, Registry
    from nodes.diffusion.gradients import ClassifierGradient, ClipGradient
    from nodes.diffusion.rules import AdaptiveProjected

    executor = Executor(Registry.from_entry_points(), device="cpu", dtype=torch.float32)
    clip, schedule = build_program(executor, STRATEGIES["clip_uncapped"], 30.0, 5, {})
    assert isinstance(clip, ClipGradient) and clip.shift_clamp == 0.0 and clip.scale == 30.0
    assert clip.text.meaning == "clip text 'a green square'" and schedule is None
    capped, _ = build_program(executor, STRATEGIES["clip"], 30.0, 5, {})
    assert isinstance(capped, ClipGradient) and capped.shift_clamp == 1.0  # the workflow's own value
    apg, _ = build_program(executor, STRATEGIES["apg"], 12.0, 0, {})
    assert isinstance(apg, AdaptiveProjected) and apg.scale == 12.0
    assert apg.cond.condition.meaning == "prompt 'a red circle'"  # type: ignore[attr-defined]
    classifier, _ = build_program(executor, STRATEGIES["classifier"], 3.0, 6, {})
    assert isinstance(classifier, ClassifierGradient) and classifier.label == 6


def test_autoguidance_strategies_keep_both_networks_and_sample_on_the_named_schedule() -> None:
    import torch

    from families.shapes.evaluation.strategies import STRATEGIES, build_program
    from graph_runtime import Executor, Registry
    from nodes.diffusion.program import CompiledGuidance
    from nodes.diffusion.sampling import leaf_models

    executor = Executor(Registry.from_entry_points(), device="cpu", dtype=torch.float32)
    alone, schedule = build_program(executor, STRATEGIES["autoguidance"], 2.5, 3, {})
    assert schedule is not None and schedule.name == "shapes_unet.safetensors"
    assert sorted(m.name for m in leaf_models(alone)) == [
        "shapes_unet.safetensors",
        "shapes_unet_small.safetensors",
    ]
    assert _leaf_meanings(alone) == {"prompt 'a yellow circle'"}  # both networks see the class's caption only
    both, _ = build_program(executor, STRATEGIES["autoguidance_cfg"], 2.5, 3, {})
    assert _leaf_meanings(both) == {"prompt 'a yellow circle'", "null: empty prompt"}
    compiled = CompiledGuidance(both, seeds=[0, 1], device=torch.device("cpu"))
    with torch.no_grad():
        compiled(torch.randn(2, 3, 32, 32), torch.full((2,), 3.0))
    # one batched forward per network per step: the good model's [c, u] and the weak model's [c′]
    assert compiled.stats.per_model == {"shapes_unet.safetensors": 1, "shapes_unet_small.safetensors": 1}
    assert compiled.stats.rows == 2 * 3


def _leaf_meanings(program: object) -> set[str]:
    from nodes.diffusion.guidance import Guidance, Prediction

    assert isinstance(program, Guidance)
    stack, meanings = [program], set()
    while stack:
        node = stack.pop()
        if isinstance(node, Prediction):
            meanings.add(node.condition.meaning)
        stack.extend(node.children())
    return meanings


def test_universal_strategies_guide_with_the_evaluator_and_carry_the_workflow_recurrence() -> None:
    import torch

    from families.shapes.evaluation.strategies import STRATEGIES, build_program, recurrence
    from graph_runtime import Executor, Registry
    from nodes.diffusion.gradients import UniversalGradient

    executor = Executor(Registry.from_entry_points(), device="cpu", dtype=torch.float32)
    rule, _ = build_program(executor, STRATEGIES["universal"], 0.5, 6, {})
    assert isinstance(rule, UniversalGradient) and rule.label == 6 and rule.backward_lr == 0.5
    assert rule.network.name == "shapes_evaluator.safetensors" and rule.clamp_x0
    assert recurrence(STRATEGIES["universal"]) == 4 and recurrence(STRATEGIES["universal_k1"]) == 1
    forward, _ = build_program(executor, STRATEGIES["universal_forward"], 0.3, 6, {})
    assert isinstance(forward, UniversalGradient) and forward.scale == 0.3 and forward.backward_steps == 0
    assert recurrence(STRATEGIES["cfg"]) == 1
