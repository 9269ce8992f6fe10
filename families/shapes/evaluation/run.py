"""Sample every (strategy, scale) for a fixed set of seeds per class and score the samples."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from families.shapes.data.shapes import CLASS_NAMES, caption_for
from families.shapes.evaluation.metrics import accuracies, clip_score, within_class_diversity
from families.shapes.family import ShapesText
from families.shapes.networks.io import load_network
from nodes.diffusion.conventions import Denoiser, denoiser_from_metadata
from nodes.diffusion.gradients import ClassifierGradient, ClipGradient, clip_logit_scale
from nodes.diffusion.guidance import Guidance, Prediction, cfg, window
from nodes.diffusion.sampling import guided_sample
from nodes.diffusion.schedules import calculate_sigmas
from nodes.diffusion.types import Classifier, Clip, Conditioning

DEFAULT_SCALES: dict[str, list[float]] = {  # the ranges benchmarks/results/models.md measured
    "none": [0.0],
    "cfg": [1.0, 3.0, 5.0, 7.0],
    "classifier": [1.0, 3.0, 5.0, 10.0],
    "clip": [10.0, 30.0, 60.0],
    "clip_capped": [30.0, 100.0, 300.0],
}
DESCRIPTIONS = {
    "none": "unconditional model (null prompt), no guidance",
    "cfg": "classifier-free guidance u + w(c − u), c = the full caption, u = the null prompt",
    "classifier": "unconditional model + noise-aware classifier gradient, D + s·σ²·∇ log p(y|x,σ)",
    "clip": "unconditional model + CLIP loss gradient through the denoiser, D + s·σ²·(−∇ sphdist)",
    "clip_contrast": "unconditional model + CLIP zero-shot classifier gradient through the denoiser, "
    "D + s·σ²·∇ log softmax_i(τ·cos(E_img(x̂0), E_txt(captionᵢ)))[target], contrast = the other 15 captions",
    "clip_capped": "as clip, with the per-sample RMS of the x̂0 shift s·σ²·g capped at 1 (shift_clamp)",
    "clip_contrast_capped": "as clip_contrast, with the per-sample RMS of the x̂0 shift s·σ²·g capped at 1",
    "clip_window": "as clip, but only while σ > 1 (structure forms there; below it the gradient of a small "
    "CLIP mostly adds adversarial texture), the plain unconditional model after",
    "cfg+classifier": "CFG at w = 3 plus the classifier gradient at scale s",
}
CLIP_WINDOW_SIGMA_LO = 1.0
CLIP_SHIFT_CLAMP = 1.0  # RMS of the x̂0 shift per sample and step, data range [-1, 1]


@dataclass
class Models:
    """The four shipped networks, wrapped the way the guidance engine uses them."""

    denoiser: Denoiser
    classifier: Classifier
    clip: Clip
    evaluator: torch.nn.Module
    files: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def load(paths: dict[str, Path], device: torch.device) -> Models:
        unet = load_network(paths["denoiser"], device)
        noisy = load_network(paths["classifier"], device)
        clip = load_network(paths["clip"], device)
        judge = load_network(paths["evaluator"], device)
        return Models(
            denoiser=denoiser_from_metadata(unet.module, unet.metadata, name=paths["denoiser"].name),
            classifier=Classifier(noisy.module, tuple(noisy.metadata["labels"]), paths["classifier"].name),
            clip=Clip(clip.module, paths["clip"].name),
            evaluator=judge.module,
            files={k: str(v) for k, v in paths.items()},
        )


@dataclass(frozen=True)
class Setting:
    strategy: str
    scale: float


def program_for(models: Models, setting: Setting, label: int) -> Guidance:
    """The GUIDANCE program of one strategy at one scale for one requested class."""
    model = models.denoiser
    caption = caption_for(label)
    words = ShapesText(model.network, model.name)
    null = Prediction(model, words.encode_text("").with_tensors("null: empty prompt"))
    cond = Prediction(model, words.encode_text(caption))
    s = setting.scale
    if setting.strategy == "none":
        return null
    if setting.strategy == "cfg":
        return cfg(cond, null, s)
    if setting.strategy == "classifier":
        return ClassifierGradient(null, models.classifier, label, s) if s else null
    if setting.strategy == "clip":
        text = Conditioning.of(models.clip.encode_text([caption])[0], f'clip text "{caption}"')
        return ClipGradient(null, models.clip, text, s, through_denoiser=True) if s else null
    if setting.strategy in ("clip_capped", "clip_contrast_capped"):
        plain = program_for(models, Setting(setting.strategy.removesuffix("_capped"), s), label)
        return replace(plain, shift_clamp=CLIP_SHIFT_CLAMP) if isinstance(plain, ClipGradient) else plain
    if setting.strategy == "clip_contrast":
        return clip_contrast_program(models, null, label, s) if s else null
    if setting.strategy == "clip_window":
        text = Conditioning.of(models.clip.encode_text([caption])[0], f'clip text "{caption}"')
        term = ClipGradient(null, models.clip, text, s, through_denoiser=True)
        return window(term, sigma_hi=float("inf"), sigma_lo=CLIP_WINDOW_SIGMA_LO, outside=null) if s else null
    if setting.strategy == "cfg+classifier":
        return ClassifierGradient(cfg(cond, null, 3.0), models.classifier, label, s)
    raise ValueError(f"unknown strategy {setting.strategy!r}; expected one of {sorted(DESCRIPTIONS)}")


def clip_contrast_program(models: Models, null: Guidance, label: int, scale: float) -> Guidance:
    """CLIP as a zero-shot classifier over the 16 captions: the target's caption against the other 15."""
    embeddings = models.clip.encode_text([caption_for(k) for k in range(len(CLASS_NAMES))])  # (16, E)
    texts = [Conditioning.of(e, f'clip text "{caption_for(k)}"') for k, e in enumerate(embeddings)]
    contrast = tuple(t for k, t in enumerate(texts) if k != label)
    tau = clip_logit_scale(models.clip)
    return ClipGradient(
        null, models.clip, texts[label], scale, through_denoiser=True, contrast=contrast, logit_scale=tau
    )


def evaluate_setting(
    models: Models,
    setting: Setting,
    per_class: int,
    steps: int,
    sampler: str,
    scheduler: str,
    device: torch.device,
    seed: int = 0,
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """Sample ``per_class`` seeds for every class under one setting; returns scores, images, labels."""
    sigmas = calculate_sigmas(scheduler, models.denoiser, steps)
    images, labels, calls = [], [], 0
    start = time.perf_counter()
    for label in range(len(CLASS_NAMES)):
        seeds = [seed + label * 10_000 + i for i in range(per_class)]
        program = program_for(models, setting, label)
        out, stats = guided_sample(
            program, torch.zeros(per_class, 3, 32, 32), seeds, sigmas, sampler, device=device
        )
        images.append(out.clamp(-1, 1))
        labels.append(torch.full((per_class,), label, device=device))
        calls += stats.model_calls
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    x, y = torch.cat(images), torch.cat(labels)
    with torch.no_grad():
        logits = models.evaluator(x)
        features = getattr(models.evaluator, "features")(x)  # noqa: B009  (B, F)
        img = models.clip.encode_image(x)
        txt = models.clip.encode_text([caption_for(int(k)) for k in y.tolist()])
    row = {
        "strategy": setting.strategy,
        "scale": setting.scale,
        "n": len(y),
        **{f"acc_{k}": v for k, v in accuracies(logits, y).items()},
        "diversity": within_class_diversity(x, y),
        "feature_diversity": within_class_diversity(features, y),
        "clip_score": clip_score(img, txt),
        "s_per_image": seconds / len(y),
        "model_calls_per_image_batch": calls / len(CLASS_NAMES),
    }
    return row, x.cpu(), y.cpu()


def evaluate(
    models: Models,
    scales: dict[str, list[float]],
    per_class: int,
    steps: int,
    sampler: str,
    scheduler: str,
    device: torch.device,
    seed: int = 0,
    progress: Callable[[str], None] = print,
    after_row: Callable[[list[dict[str, Any]], dict[Setting, torch.Tensor]], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[Setting, torch.Tensor]]:
    """Every (strategy, scale): rows of scores and the first sample of each class (for a picture)."""
    rows, firsts = [], {}
    for strategy, values in scales.items():
        for scale in values:
            setting = Setting(strategy, scale)
            row, images, _ = evaluate_setting(
                models, setting, per_class, steps, sampler, scheduler, device, seed
            )
            rows.append(row)
            firsts[setting] = images[::per_class]  # (K, 3, 32, 32): one per class
            if after_row is not None:
                after_row(rows, firsts)
            progress(
                f"{strategy:>15} {scale:>8g}: class {row['acc_class']:.3f} shape {row['acc_shape']:.3f} "
                f"colour {row['acc_colour']:.3f} diversity {row['diversity']:.3f} "
                f"clip {row['clip_score']:.3f} "
                f"{row['s_per_image'] * 1000:.1f} ms/image"
            )
    return rows, firsts
