"""The eval table (markdown), its plot and a sample sheet, drawn with PIL (no plotting library)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from families.shapes.evaluation.run import DESCRIPTIONS, Setting

COLOURS_BY_STRATEGY = {
    "none": (120, 120, 120),
    "cfg": (31, 119, 180),
    "classifier": (214, 39, 40),
    "clip": (44, 160, 44),
    "clip_window": (23, 190, 207),
    "clip_contrast": (255, 127, 14),
    "clip_capped": (188, 189, 34),
    "clip_contrast_capped": (140, 86, 75),
    "cfg+classifier": (148, 103, 189),
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
        f"{header['per_class'] * 16} samples per row (the same seeds in every row).",
        "",
        "Accuracy: the independent evaluator's prediction equals the requested class (shape, colour). "
        "Diversity: mean pairwise RMS pixel distance between samples of one class ([-1, 1] units; "
        "higher = more varied; backgrounds dominate it); feature diversity: the same distance between the "
        "evaluator's pooled features (position, size, rotation and shade of the shape). "
        "CLIP score: cosine between the sample and its caption in the shipped CLIP "
        "(biased upward for CLIP guidance, which optimises it). Seconds per image include the guidance cost.",
        "",
        "| strategy | scale | accuracy | shape | colour | pixel diversity | feature diversity | CLIP score "
        "| ms / image |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {r['scale']:g} | {r['acc_class']:.1%} | {r['acc_shape']:.1%} | "
            f"{r['acc_colour']:.1%} | {r['diversity']:.3f} | {r.get('feature_diversity', 0.0):.3f} | "
            f"{r['clip_score']:.3f} | "
            f"{r['s_per_image'] * 1000:.1f} |"
        )
    lines += ["", "Strategies:", ""]
    lines += [
        f"- `{name}`: {text}"
        for name, text in DESCRIPTIONS.items()
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
