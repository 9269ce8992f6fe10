"""The eval table (markdown), its plot and a sample sheet, drawn with PIL (no plotting library)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from families.shapes.evaluation.run import Setting
from families.shapes.evaluation.strategies import STRATEGIES

HELD_OUT = "held out: never used to choose a configuration"
NOT_HELD_OUT = "NOT held out: these seeds chose the shipped configurations"
COLOURS_BY_STRATEGY = {
    "none": (120, 120, 120),
    "cfg": (31, 119, 180),
    "classifier": (214, 39, 40),
    "clip": (44, 160, 44),
    "clip_uncapped": (188, 189, 34),
    "cfg_classifier": (148, 103, 189),
    "apg": (255, 127, 14),
    "cfg_zero_star": (23, 190, 207),
    "cfg_pp": (140, 86, 75),
    "cfg_rescale": (227, 119, 194),
    "cfg_interval": (127, 127, 127),
    "cfg_schedule": (0, 0, 128),
    "tcfg": (0, 128, 0),
    "pag": (128, 0, 0),
    "sag": (128, 128, 0),
    "autoguidance": (210, 105, 30),
    "autoguidance_cfg": (75, 0, 130),
    "universal": (0, 0, 255),
    "universal_k1": (0, 128, 128),
    "universal_forward": (128, 0, 128),
}


def markdown_table(rows: list[dict[str, Any]], header: dict[str, Any]) -> str:
    """The results as a markdown table, with what was run above it."""
    lines = [
        "# guidegraph eval",
        "",
        f"Command: `{header['command']}`",
        "",
        f"Device: {header['device']}. Sampler `{header['sampler']}`, scheduler `{header['scheduler']}`, "
        f"{header['steps']} steps, {header['per_class']} seeds per class × 16 classes = "
        f"{header['per_class'] * 16} samples per row (the same seeds in every row; first seed "
        f"{header['seed']}, {HELD_OUT if header.get('held_out') else NOT_HELD_OUT}).",
        "",
        "Every strategy's program is built by the graph runtime from its shipped workflow (scale, class "
        "and variant set by node class and input name). Accuracy: the independent evaluator's prediction "
        "equals the requested class (shape, colour). Feature diversity: mean pairwise distance between "
        "the evaluator's pooled features of samples of one class (position, size, rotation, shade; "
        "higher = more varied). Clipped: share of sample values outside [−1, 1] before clamping "
        "(overshoot). Second opinions on the class (for strategies the evaluator guides): the "
        "noise-aware classifier at σ = 0.05 and the shipped CLIP zero-shot over the 16 captions. "
        "Saturation: mean HSV saturation, next to the training data's for the same "
        "classes; colour error: L1 distance of each class's mean RGB from the training data's. "
        "CLIP score: cosine between sample and caption in the shipped CLIP (biased upward for CLIP "
        "guidance). Seconds per image: sampling only, guidance included.",
        "",
        "| strategy | scale | accuracy | shape | colour | noisy classifier | CLIP zero-shot "
        "| feature diversity | clipped | saturation (data) | colour error | CLIP score | ms / image "
        "| forwards / step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        forwards = r["model_calls_per_image_batch"] / header["steps"]
        lines.append(
            f"| {r['strategy']} | {r['scale']:g} | {r['acc_class']:.1%} | {r['acc_shape']:.1%} | "
            f"{r['acc_colour']:.1%} | {r['acc_class_noisy']:.1%} | {r['acc_class_clip']:.1%} | "
            f"{r['feature_diversity']:.3f} | {r['clipped']:.1%} | "
            f"{r['saturation']:.3f} ({r['saturation_data']:.3f}) | {r['colour_error']:.3f} | "
            f"{r['clip_score']:.3f} | {r['s_per_image'] * 1000:.1f} | {forwards:g} |"
        )
    lines += ["", "Strategies:", ""]
    lines += [
        f"- `{name}`: workflow `{strategy.workflow}`, scale = {strategy.scale[0]}.{strategy.scale[1]}; "
        f"{strategy.description}"
        for name, strategy in STRATEGIES.items()
        if any(r["strategy"] == name for r in rows)
    ]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """One panel per guided strategy: accuracy (solid) and feature diversity (dashed) against scale."""
    strategies = [s for s in dict.fromkeys(r["strategy"] for r in rows) if s != "none"]
    panel_w, panel_h, pad = 300, 220, 40
    img = Image.new("RGB", (panel_w * max(len(strategies), 1), panel_h + 2 * pad), "white")
    draw = ImageDraw.Draw(img)
    max_div = max((r.get("feature_diversity", r["diversity"]) for r in rows), default=1.0) or 1.0
    for p, strategy in enumerate(strategies):
        pts = [r for r in rows if r["strategy"] == strategy]
        x0, y0 = p * panel_w + pad, pad
        w, h = panel_w - 2 * pad + 10, panel_h
        draw.rectangle([x0, y0, x0 + w, y0 + h], outline=(0, 0, 0))
        draw.text((x0, 8), f"{strategy}: accuracy (solid), feature diversity (dashed)", fill=(0, 0, 0))
        for frac in (0.0, 0.5, 1.0):
            y = y0 + h - frac * h
            draw.line([x0 - 4, y, x0, y], fill=(0, 0, 0))
            draw.text((x0 - 30, y - 6), f"{frac:.0%}", fill=(0, 0, 0))
        colour = COLOURS_BY_STRATEGY.get(strategy, (0, 0, 0))
        xs = [x0 + 10 + i * (w - 20) / max(len(pts) - 1, 1) for i in range(len(pts))]
        acc = [y0 + h - r["acc_class"] * h for r in pts]
        div = [y0 + h - r.get("feature_diversity", r["diversity"]) / max_div * h for r in pts]
        for i, r in enumerate(pts):
            draw.text((xs[i] - 8, y0 + h + 6), f"{r['scale']:g}", fill=(0, 0, 0))
            draw.ellipse([xs[i] - 3, acc[i] - 3, xs[i] + 3, acc[i] + 3], fill=colour)
        draw.line(list(zip(xs, acc, strict=True)), fill=colour, width=2)
        for i in range(len(pts) - 1):  # dashed: every other tenth of each segment
            for k in range(0, 10, 2):
                a, b = k / 10, (k + 1) / 10
                draw.line(
                    [
                        (xs[i] + a * (xs[i + 1] - xs[i]), div[i] + a * (div[i + 1] - div[i])),
                        (xs[i] + b * (xs[i + 1] - xs[i]), div[i] + b * (div[i + 1] - div[i])),
                    ],
                    fill=colour,
                    width=1,
                )
        draw.text((x0 + w // 2 - 16, y0 + h + 20), "scale", fill=(0, 0, 0))
    img.save(path)
    return path


def sample_sheet(firsts: dict[Setting, torch.Tensor], path: Path, zoom: int = 2) -> Path:
    """One row per (strategy, scale), one column per class (the first seed of each class)."""
    settings = list(firsts)
    cols = max((len(t) for t in firsts.values()), default=0)
    label_w, cell = 130, 32 * zoom + 2
    sheet = Image.new("RGB", (label_w + cols * cell, len(settings) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for r, setting in enumerate(settings):
        draw.text((4, r * cell + cell // 2 - 6), f"{setting.strategy} {setting.scale:g}", fill=(0, 0, 0))
        images = ((firsts[setting].clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        for c, image in enumerate(images):
            tile = Image.fromarray(image).resize((32 * zoom, 32 * zoom), Image.Resampling.NEAREST)
            sheet.paste(tile, (label_w + c * cell, r * cell))
    sheet.save(path)
    return path
