"""``guidegraph make-checkpoint`` and ``guidegraph convert-checkpoint`` (entry-point group
``guidegraph.commands``). Both print one clear line for bad input, never a traceback.

Exit codes: 0 written, 1 the input could not be read or the output written, 2 a bad command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from families.sd.components import VARIANTS

DTYPES = ("float32", "float16", "bfloat16")


def register_make(subparsers: Any) -> None:
    """``guidegraph make-checkpoint``."""
    make = subparsers.add_parser(
        "make-checkpoint",
        help="write a random-weight SD checkpoint of a named architecture (tests, benchmarks, setup checks)",
    )
    make.add_argument(
        "variant",
        choices=(*VARIANTS, "clip"),
        help="the architecture; 'clip' writes an OpenAI-layout CLIP for CLIP guidance (full: ViT-B/32)",
    )
    make.add_argument(
        "--size", choices=("tiny", "full"), default="tiny", help="tiny test size or the real one"
    )
    make.add_argument(
        "--format",
        choices=("single", "diffusers"),
        default="single",
        help="one LDM-layout .safetensors file (as ComfyUI/A1111 load) or a diffusers folder",
    )
    make.add_argument("--seed", type=int, default=0, help="weights are a function of the seed")
    make.add_argument("--dtype", choices=DTYPES, default="float32", help="weight dtype on disk")
    make.add_argument("-o", "--output", type=Path, default=None, help="file or folder to write")
    make.add_argument("--overwrite", action="store_true", help="replace an existing output")
    make.set_defaults(func=cmd_make_checkpoint)


def register_convert(subparsers: Any) -> None:
    """``guidegraph convert-checkpoint``."""
    convert = subparsers.add_parser(
        "convert-checkpoint",
        help="convert a pickled .ckpt/.pt/.bin state dict to .safetensors (reads tensors only)",
    )
    convert.add_argument("input", type=Path, help="the pickled checkpoint")
    convert.add_argument("output", type=Path, nargs="?", default=None, help="default: INPUT.safetensors")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output")
    convert.set_defaults(func=cmd_convert_checkpoint)


def _fail(command: str, message: str, code: int = 1) -> int:
    print(f"guidegraph {command}: {message}", file=sys.stderr)
    return code


def cmd_make_checkpoint(args: argparse.Namespace) -> int:
    import torch
    from transformers.utils.logging import disable_progress_bar

    from families.sd.make import make_checkpoint

    disable_progress_bar()  # transformers' "Writing model shards" bar for a folder of three files

    suffix = ".safetensors" if args.format == "single" else ""
    folder = Path("models/clip" if args.variant == "clip" else "models/checkpoints")
    out: Path = args.output or folder / f"random_{args.variant}_{args.size}{suffix}"
    if args.variant == "clip" and args.format != "single":
        return _fail("make-checkpoint", "a CLIP is written as one .safetensors file (--format single)", 2)
    if args.format == "single" and out.suffix != ".safetensors":
        return _fail("make-checkpoint", f"{out}: a single-file checkpoint is written as .safetensors", 2)
    if out.exists() and not args.overwrite:
        return _fail("make-checkpoint", f"{out} exists; pass --overwrite to replace it", 2)
    try:
        if args.variant == "clip":
            from families.clip import write_random_clip

            written = write_random_clip(out, "tiny" if args.size == "tiny" else "vit-b-32", args.seed)
        else:
            written = make_checkpoint(
                args.variant, out, args.size, args.format, args.seed, getattr(torch, args.dtype)
            )
    except OSError as exc:
        return _fail("make-checkpoint", f"could not write {out}: {exc}")
    what = f"{args.size} {args.variant} checkpoint ({args.format}, {args.dtype})"
    print(f"wrote a random-weight {what} to {written}")
    return 0


def cmd_convert_checkpoint(args: argparse.Namespace) -> int:
    from families.base import CheckpointError
    from families.sd.convert import convert_pickle

    out: Path = args.output or args.input.with_suffix(".safetensors")
    if out.exists() and not args.overwrite:
        return _fail("convert-checkpoint", f"{out} exists; pass --overwrite to replace it", 2)
    try:
        count = convert_pickle(args.input, out)
    except CheckpointError as exc:
        return _fail("convert-checkpoint", str(exc))
    print(f"wrote {count} tensors from {args.input.name} to {out}")
    return 0
