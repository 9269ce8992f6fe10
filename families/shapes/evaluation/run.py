"""Sample every (strategy, scale) for a fixed set of seeds per class and score the samples.

The programs come from the shipped workflows (``strategies.py``), built by the graph runtime; this
module only samples them with uniform settings and scores the samples against the training data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from families.shapes.data.shapes import CLASS_NAMES, ShapesDataset, caption_for
from families.shapes.evaluation.metrics import (
    accuracies,
    clip_score,
    colour_statistics,
    within_class_diversity,
)
from families.shapes.evaluation.strategies import STRATEGIES, build_program, recurrence
from families.shapes.networks.io import load_network
from graph_runtime import Executor
from nodes.diffusion.sampling import guided_sample
from nodes.diffusion.schedules import calculate_sigmas
from nodes.diffusion.types import Clip
from nodes.sampling_nodes import schedule_source

DEFAULT_SCALES: dict[str, list[float]] = {
    "none": [0.0],
    "cfg": [3.0, 7.0, 10.0, 15.0],
    "apg": [7.0, 10.0, 15.0],
    "cfg_zero_star": [7.0, 10.0, 15.0],
    "cfg_pp": [0.4, 0.8, 1.0],
    "cfg_rescale": [7.0, 10.0, 15.0],
    "cfg_interval": [7.0, 10.0, 15.0],
    "classifier": [3.0, 10.0],
    "clip": [300.0, 1000.0],
}
SELECTION_SEEDS = range(0, 16)  # seeds 0–15 per class chose the shipped configurations
JUDGE_SIGMA = 0.05  # the noise-aware classifier judges at its lowest σ on the model card (100% accuracy)
DATA_SEED = 4242  # the training-data reference for the colour statistics


@dataclass
class Judges:
    """What scores the samples: the evaluator, the shipped CLIP (CLIP score and a zero-shot class) and
    the noise-aware classifier at σ = :data:`JUDGE_SIGMA`: second opinions for the strategies that the
    evaluator itself guides (universal guidance), whose own accuracy would be the guide grading itself."""

    clip: Clip
    evaluator: torch.nn.Module
    classifier: torch.nn.Module
    files: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def load(paths: dict[str, Path], device: torch.device) -> Judges:
        clip, judge = load_network(paths["clip"], device), load_network(paths["evaluator"], device)
        classifier = load_network(paths["classifier"], device)
        return Judges(
            Clip(clip.module, paths["clip"].name),
            judge.module,
            classifier.module,
            {k: str(v) for k, v in paths.items()},
        )


@dataclass(frozen=True)
class Setting:
    strategy: str
    scale: float


def held_out(seed: int, per_class: int) -> bool:
    """True when the eval's seeds per class avoid the seeds that chose the configurations."""
    return seed >= SELECTION_SEEDS.stop or seed + per_class <= SELECTION_SEEDS.start


def evaluate_setting(
    executor: Executor,
    judges: Judges,
    setting: Setting,
    per_class: int,
    steps: int,
    sampler: str,
    scheduler: str,
    files: dict[str, str],
    seed: int,
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """Sample ``per_class`` seeds for every class under one setting; returns scores, images, labels."""
    if setting.strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {setting.strategy!r}; expected one of {sorted(STRATEGIES)}")
    strategy, device = STRATEGIES[setting.strategy], executor.device
    images, raw, labels, calls, seconds = [], [], [], 0, 0.0
    for label in range(len(CLASS_NAMES)):
        program, schedule_model = build_program(executor, strategy, setting.scale, label, files)
        start = time.perf_counter()
        sigmas = calculate_sigmas(scheduler, schedule_source(program, schedule_model), steps)
        seeds = [seed + label * 10_000 + i for i in range(per_class)]
        out, stats = guided_sample(
            program,
            torch.zeros(per_class, 3, 32, 32),
            seeds,
            sigmas,
            sampler,
            device=device,
            recurrence=recurrence(strategy),
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - start
        raw.append(out)
        images.append(out.clamp(-1, 1))
        labels.append(torch.full((per_class,), label, device=device))
        calls += stats.model_calls
    x, y = torch.cat(images), torch.cat(labels)
    data = ShapesDataset(DATA_SEED).batch(0, len(y), device, labels=y.cpu()).images
    with torch.no_grad():
        logits = judges.evaluator(x)
        features = getattr(judges.evaluator, "features")(x)  # noqa: B009  (B, F)
        img = judges.clip.encode_image(x)
        captions = judges.clip.encode_text([caption_for(k) for k in range(len(CLASS_NAMES))])  # (K, E)
        txt = captions[y]
        noisy = judges.classifier(x, torch.full((len(y),), JUDGE_SIGMA, device=x.device))
    row = {
        "strategy": setting.strategy,
        "scale": setting.scale,
        "n": len(y),
        **{f"acc_{k}": v for k, v in accuracies(logits, y).items()},
        "acc_class_noisy": accuracies(noisy, y)["class"],
        "acc_class_clip": accuracies(img @ captions.T, y)["class"],
        "diversity": within_class_diversity(x, y),
        "feature_diversity": within_class_diversity(features, y),
        "clip_score": clip_score(img, txt),
        **colour_statistics(torch.cat(raw), data, y),
        "s_per_image": seconds / len(y),
        "model_calls_per_image_batch": calls / len(CLASS_NAMES),
    }
    return row, x.cpu(), y.cpu()


def evaluate(
    executor: Executor,
    judges: Judges,
    scales: dict[str, list[float]],
    per_class: int,
    steps: int,
    sampler: str,
    scheduler: str,
    files: dict[str, str],
    seed: int,
    progress: Callable[[str], None] = print,
    after_row: Callable[[list[dict[str, Any]], dict[Setting, torch.Tensor]], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[Setting, torch.Tensor]]:
    """Every (strategy, scale): rows of scores and the first sample of each class (for a picture)."""
    rows, firsts = [], {}
    for strategy, values in scales.items():
        for scale in values:
            setting = Setting(strategy, scale)
            row, images, _ = evaluate_setting(
                executor, judges, setting, per_class, steps, sampler, scheduler, files, seed
            )
            rows.append(row)
            firsts[setting] = images[::per_class]  # (K, 3, 32, 32): one per class
            if after_row is not None:
                after_row(rows, firsts)
            progress(
                f"{strategy:>15} {scale:>8g}: class {row['acc_class']:.3f} shape {row['acc_shape']:.3f} "
                f"colour {row['acc_colour']:.3f} feature diversity {row['feature_diversity']:.3f} "
                f"saturation {row['saturation']:.3f} (data {row['saturation_data']:.3f}) "
                f"clipped {row['clipped']:.3f} {row['s_per_image'] * 1000:.1f} ms/image"
            )
    return rows, firsts
