"""``guidegraph train <recipe>``: train one of the project's small models on generated data."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from families.shapes.training.recipes import RECIPES
from nodes import MODELS_DIR

RUNS_DIR = Path("runs")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train`` command to the ``guidegraph`` CLI (entry point group ``guidegraph.commands``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "train",
        help="train a shipped model (denoiser, denoiser-small, noisy-classifier, clip, evaluator) from "
        "generated data",
        description="Train one of the project's small models on the procedural shapes data. Writes "
        "resumable checkpoints to --run-dir and the final EMA weights (safetensors, with metadata and a "
        "model card) to --out. Meant for a developer machine with a GPU; CI runs only --smoke.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    names = sorted({*RECIPES, *(n.replace("_", "-") for n in RECIPES)})
    parser.add_argument("recipe", choices=names, help="which model to train")
    parser.add_argument(
        "--steps", type=int, default=100_000, help="stop after this many steps (default 100000)"
    )
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="stop after this much wall-clock time"
    )
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the recipe's)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=None, help="data and initialisation seed")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when present)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the safetensors weights")
    parser.add_argument(
        "--run-dir", type=Path, default=None, help="checkpoint and log folder (runs/<recipe>)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    parser.add_argument("--init", type=Path, default=None, help="start from these weights (safetensors)")
    parser.add_argument("--smoke", action="store_true", help="tiny architecture, for tests")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--checkpoint-every", type=int, default=2_000)
    parser.add_argument("--metric-samples", type=int, default=2_048, help="held-out images for final metrics")
    parser.add_argument("--no-card", action="store_true", help="do not write the model card beside --out")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from families.shapes.training.cards import write_model_card
    from families.shapes.training.loop import TrainOptions, train

    recipe = args.recipe.replace("-", "_")
    out = args.out or MODELS_DIR / RECIPES[recipe].filename
    options = TrainOptions(
        recipe=recipe,
        out=out,
        run_dir=args.run_dir or RUNS_DIR / recipe,
        steps=args.steps,
        max_minutes=args.max_minutes,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        resume=args.resume,
        smoke=args.smoke,
        log_every=args.log_every,
        checkpoint_every=args.checkpoint_every,
        metric_samples=args.metric_samples,
        init=args.init,
    )
    train(options)
    if not args.no_card:
        print(f"model card: {write_model_card(out)}")
    return 0
