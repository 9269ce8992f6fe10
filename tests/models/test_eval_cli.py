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
    return {
        "denoiser": save_network(
            ShapesUNet(**unet_cfg),
            folder / "u.safetensors",
            {**meta, "kind": "denoiser", "config": unet_cfg, "parametrization": "eps", "schedule": SCHEDULE},
        ),
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
    argv = [
        "--per-class",
        "1",
        "--steps",
        "1",
        "--scales",
        "cfg=2;classifier=1;clip=1;clip_contrast=1",
        "--device",
        "cpu",
    ]
    argv += ["--out-dir", str(tmp_path / "out")]
    for key, path in files.items():
        argv += [f"--{key}", str(path)]
    assert run(parser.parse_args(argv)) == 0
    rows = json.loads((tmp_path / "out" / "eval.json").read_text())["rows"]
    assert [r["strategy"] for r in rows] == ["cfg", "classifier", "clip", "clip_contrast"]
    assert all(r["n"] == len(CLASS_NAMES) and 0 <= r["acc_class"] <= 1 for r in rows)
    assert "| cfg | 2 |" in (tmp_path / "out" / "eval.md").read_text()
    assert (tmp_path / "out" / "eval.png").stat().st_size > 0
    assert (tmp_path / "out" / "eval_samples.png").stat().st_size > 0


def test_clip_contrast_strategy_contrasts_the_target_caption_with_the_other_fifteen(tmp_path: Path) -> None:
    import torch

    from nodes.diffusion.gradients import ClipGradient
    from families.shapes.evaluation.run import Models, Setting, program_for

    models = Models.load(tiny_models(tmp_path), torch.device("cpu"))
    rule = program_for(models, Setting("clip_contrast", 30.0), label=5)
    assert isinstance(rule, ClipGradient) and rule.through_denoiser
    assert rule.text.meaning == 'clip text "a green square"' and len(rule.contrast) == len(CLASS_NAMES) - 1
    assert rule.text.meaning not in {c.meaning for c in rule.contrast}
    assert abs(rule.logit_scale - float(models.clip.module.logit_scale.exp())) < 1e-5
    capped = program_for(models, Setting("clip_contrast_capped", 30.0), label=5)
    assert isinstance(capped, ClipGradient) and capped.shift_clamp > 0 and capped.contrast == rule.contrast
    assert program_for(models, Setting("clip_capped", 0.0), label=5) == program_for(
        models, Setting("none", 0.0), 5
    )
