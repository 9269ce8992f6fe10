"""Model cards: a short markdown page beside each shipped safetensors file, written from its metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from families.shapes.networks.io import read_metadata

_PURPOSE = {
    "denoiser": "Conditional and unconditional ε-prediction denoiser (one network; the empty prompt is the "
    "null condition). Used by CFG, negative prompts, composable prompts, and as the base model that "
    "classifier guidance and CLIP guidance steer.",
    "noisy_classifier": "Noise-aware classifier p(y | x, σ) on x = x0 + σ·n. Used for classifier guidance "
    "(Dhariwal & Nichol 2021): g = ∇ₓ log p(y | x, σ).",
    "clip": "CLIP-style image/text model. Used by ClipLoss to steer toward a prompt (gradient of the "
    "image-text similarity of the predicted x̂0).",
    "evaluator": "Clean-image classifier that scores samples in `guidegraph eval`. Trained separately "
    "(own seed, own architecture); the one guidance that uses it is the universal_guidance workflow, "
    "as the stand-in for any clean-image network, and eval then judges that by other networks too.",
    "denoiser_small": "The weak guiding model of autoguidance (Karras et al. 2024, Guiding a Diffusion "
    "Model with a Bad Version of Itself): the shipped denoiser's task, data, vocabulary, null prompt and "
    "noise schedule in a smaller network trained far shorter. `workflows/autoguidance.api.json` guides "
    "`shapes_unet` with it; on its own it samples worse than `shapes_unet`.",
}


def _flatten(prefix: str, value: Any, rows: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}{key} / " if prefix or isinstance(sub, dict) else key, sub, rows)
    else:
        rows.append((prefix.rstrip(" /"), json.dumps(value) if not isinstance(value, str) else value))


def model_card(path: Path, metadata: dict[str, Any], evaluation: str = "") -> str:
    """Markdown card: purpose, data, architecture, recipe, training numbers, metrics, limitations."""
    training = metadata.get("training", {})
    rows: list[tuple[str, str]] = []
    _flatten("", metadata.get("metrics", {}), rows)
    metric_lines = "\n".join(f"| {k} | {v} |" for k, v in rows)
    schedule = metadata.get("schedule")
    t = training
    minutes = round(float(t.get("wall_time_s") or 0) / 60 + 0.5)
    lines = [
        f"# {path.stem}",
        "",
        _PURPOSE.get(str(training.get("recipe")), _PURPOSE.get(str(metadata.get("kind")), "")),
        "",
        f"- **File**: `{path.name}` (safetensors, float16 weights; loaded as float32 by `load_network`)",
        f"- **Kind / architecture**: `{metadata.get('kind')}` / `{metadata.get('architecture')}`, "
        f"{t.get('parameters', 0) / 1e6:.2f}M parameters",
        f"- **Config**: `{json.dumps(metadata.get('config'))}`",
    ]
    if schedule:
        parametrization = metadata.get("parametrization", "-")
        lines.append(f"- **Parametrization / schedule**: `{parametrization}`, `{json.dumps(schedule)}`")
    lines += [
        f"- **Data**: {t.get('data', '')}",
        f"- **Recipe**: {t.get('notes', '')}",
        f"- **Training**: {t.get('steps')} steps × batch {t.get('batch')} "
        f"({t.get('examples_seen', 0) / 1e6:.2f}M examples), {t.get('wall_time_s')} s wall time "
        f"on {t.get('device')}, {t.get('precision')}; {t.get('optimizer')}; EMA {t.get('ema_decay')}",
        f"- **Reproduce**: `guidegraph train {t.get('recipe')} --max-minutes {minutes} "
        f"--out models/{path.parent.name}/{path.name}` (data comes from the seed; timing varies by device)",
        "",
        "## Metrics (held-out procedural data, written at the end of training)",
        "",
        "| metric | value |",
        "|---|---|",
        metric_lines,
        "",
    ]
    if evaluation:
        lines += ["## In use", "", evaluation, ""]
    lines += [
        "## Limitations",
        "",
        "Trained only on 32×32 synthetic pictures of 4 shapes × 4 colours; it knows nothing else. "
        "The vocabulary is the 8 colour and shape words; other words are ignored "
        "(a prompt with none of them is the null prompt).",
        "",
    ]
    return "\n".join(lines)


def write_model_card(path: str | Path, evaluation: str = "") -> Path:
    """Write ``<file>.md`` beside a shipped safetensors file from its header metadata."""
    path = Path(path)
    card = path.with_suffix(".md")
    card.write_text(model_card(path, read_metadata(path), evaluation))
    return card
