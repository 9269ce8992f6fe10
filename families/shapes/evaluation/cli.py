"""``guidegraph eval``: the measured guidance table (accuracy, diversity, CLIP score, cost per image)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nodes import MODELS_DIR

DEFAULT_FILES = {
    "denoiser": "checkpoints/shapes_unet.safetensors",
    "weak_denoiser": "checkpoints/shapes_unet_small.safetensors",
    "classifier": "classifiers/shapes_noisy_classifier.safetensors",
    "clip": "clip/shapes_clip.safetensors",
    "evaluator": "evaluators/shapes_evaluator.safetensors",
}
# the files the workflows read, by folder kind (the evaluator by universal guidance's, as its guide)
FOLDERS = {
    "denoiser": "checkpoints",
    "weak_denoiser": "checkpoints",
    "classifier": "classifiers",
    "clip": "clip",
    "evaluator": "evaluators",
}
HELD_OUT_SEED = 777  # per-class seeds 777… never chose a configuration (those were 0–15)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``eval`` command to the ``guidegraph`` CLI (entry point group ``guidegraph.commands``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "eval",
        help="measure every guidance strategy on the shipped models (table + plot)",
        description="Build each strategy's program from its shipped workflow, sample a fixed set of "
        "held-out seeds per class for each scale, score the samples with the independent evaluator "
        "and against the training data's colours, and write eval.md, eval.json, eval.png and "
        "eval_samples.png.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def parse_scales(text: str) -> dict[str, list[float]]:
    """'cfg=0,1,3;classifier=0,3' → {'cfg': [0, 1, 3], 'classifier': [0, 3]}."""
    out: dict[str, list[float]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, values = part.partition("=")
        out[name.strip()] = [float(v) for v in values.split(",") if v.strip()] or [0.0]
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--per-class", type=int, default=4, help="seeds per class (16 classes; default 4)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sampler", default="euler_ancestral")
    parser.add_argument("--scheduler", default="karras")
    parser.add_argument(
        "--scales", default=None, help="e.g. 'none=0;cfg=0,1,3,5,7;classifier=0,1,3;clip=0,10,30'"
    )
    parser.add_argument(
        "--seed", type=int, default=HELD_OUT_SEED, help="first seed per class (default 777: held out)"
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out-dir", type=Path, default=Path("output/eval"))
    for key, rel in DEFAULT_FILES.items():
        flag = "--" + key.replace("_", "-")
        parser.add_argument(flag, dest=key, type=Path, default=MODELS_DIR / rel, help=f"default models/{rel}")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    import torch

    from families.shapes.evaluation.report import markdown_table, plot, sample_sheet
    from families.shapes.evaluation.run import DEFAULT_SCALES, Judges, Setting, evaluate, held_out
    from families.shapes.training.loop import device_description, pick_device
    from graph_runtime import Executor, Registry
    from graph_runtime.folders import register_folders

    device = pick_device(args.device)
    scales = parse_scales(args.scales) if args.scales else DEFAULT_SCALES
    paths = {k: getattr(args, k) for k in DEFAULT_FILES}
    judges = Judges.load(paths, device)
    # the workflows name the shipped files; --denoiser, --weak-denoiser, --classifier and --clip swap
    # others in for them by name
    folders: dict[str, list[Path]] = {}
    for key, kind in FOLDERS.items():
        folders.setdefault(kind, []).append(paths[key].resolve().parent)
    register_folders(folders)
    files = {k: paths[k].name for k in FOLDERS}
    executor = Executor(Registry.from_entry_points(), device=str(device), dtype=torch.float32)
    header = {
        "command": "guidegraph eval " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["eval"] else sys.argv[1:]),
        "device": device_description(device),
        "torch": torch.__version__,
        "sampler": args.sampler,
        "scheduler": args.scheduler,
        "steps": args.steps,
        "per_class": args.per_class,
        "seed": args.seed,
        "held_out": held_out(args.seed, args.per_class),
        "models": judges.files,
    }
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)

    def write(rows: list[dict[str, Any]], firsts: dict[Setting, torch.Tensor]) -> None:
        # rewritten after every row, so an interrupted run still leaves its finished rows
        (out / "eval.md").write_text(markdown_table(rows, header))
        (out / "eval.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1))
        plot(rows, out / "eval.png")
        sample_sheet(firsts, out / "eval_samples.png")

    evaluate(
        executor,
        judges,
        scales,
        args.per_class,
        args.steps,
        args.sampler,
        args.scheduler,
        files,
        args.seed,
        after_row=write,
    )
    print(f"wrote {out / 'eval.md'}, eval.json, eval.png, eval_samples.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m families.shapes.evaluation", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
