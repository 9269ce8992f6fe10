"""Small nodes for the server tests: a number, an image writer, a slow sampler-like node, a failure."""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image, PngImagePlugin

from graph_runtime.api import (
    Context,
    Float,
    Footprint,
    Int,
    Node,
    Output,
    PreviewImage,
    Result,
    Socket,
    String,
)


class Number(Node):
    """Pass an integer on."""

    category = "testing"
    inputs = (Int("value", default=1, min=0, max=1000),)
    outputs = (Output("value", "SHADE"),)

    @staticmethod
    def run(ctx: Context, value: int) -> tuple[int]:
        return (value,)


class Relay(Node):
    """Pass a shade on unchanged (chains of these measure the per-node cost of the server)."""

    category = "testing"
    inputs = (Socket("value", type="SHADE"),)
    outputs = (Output("value", "SHADE"),)

    @staticmethod
    def run(ctx: Context, value: int) -> tuple[int]:
        return (value,)


def write_png(ctx: Context, pixels: torch.Tensor, prefix: str) -> dict[str, str]:
    """Atomically write (H, W, 3) uint8 pixels as a PNG carrying the prompt and the workflow."""
    out_dir = Path(ctx.paths.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(ctx.prompt))
    for key, value in (ctx.extra_pnginfo or {}).items():
        info.add_text(key, json.dumps(value))
    name = f"{prefix}_{uuid.uuid4().hex[:10]}_.png"
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".part")
    with os.fdopen(fd, "wb") as handle:
        Image.fromarray(pixels.numpy(), "RGB").save(handle, "PNG", pnginfo=info)
    os.replace(tmp, out_dir / name)
    return {"filename": name, "subfolder": "", "type": "output"}


class SaveSquare(Node):
    """Write a square grey image whose shade is the input value."""

    category = "testing/image"
    output_node = True
    inputs = (
        Socket("value", type="SHADE"),
        Int("size", default=8, min=1, max=256),
        String("prefix", default="sq"),
    )
    outputs = ()

    @staticmethod
    def run(ctx: Context, value: int, size: int, prefix: str) -> Result:
        pixels = torch.full((size, size, 3), value % 256, dtype=torch.uint8)  # (H, W, 3)
        return Result((), {"images": [write_png(ctx, pixels, prefix)]})


class SlowSteps(Node):
    """Sleep ``steps`` times, reporting progress (with a preview when one is wanted) at each step."""

    category = "testing"
    output_node = True
    deterministic = False
    inputs = (Int("steps", default=5, min=1, max=10_000), Float("delay", default=0.05, min=0.0, max=5.0))
    outputs = ()

    @staticmethod
    def run(ctx: Context, steps: int, delay: float) -> Result:
        for step in range(steps):
            time.sleep(delay)
            shade = int(255 * (step + 1) / steps)
            pixels = torch.full((16, 16, 3), shade, dtype=torch.uint8)  # (H, W, 3)
            ctx.progress(step + 1, steps, PreviewImage(pixels) if ctx.wants_preview else None)
        return Result((), {"text": [f"{steps} steps"]})


class Explode(Node):
    """Always raise."""

    category = "testing"
    output_node = True
    inputs = (Socket("value", type="SHADE"),)
    outputs = ()

    @staticmethod
    def run(ctx: Context, value: int) -> Result:
        raise ValueError(f"exploded on {value} in /very/secret/place/file.txt")


class Allocate(Node):
    """Allocate ``gigabytes`` for real, declaring as much as its memory footprint."""

    category = "testing"
    output_node = True
    inputs = (Int("gigabytes", default=1, min=0, max=1 << 20),)
    outputs = ()

    @staticmethod
    def run(ctx: Context, gigabytes: int) -> Result:
        block = torch.empty(gigabytes << 30, dtype=torch.uint8)
        return Result((), {"text": [f"{block.numel()} bytes"]})

    @staticmethod
    def footprint(inputs: Mapping[str, Any]) -> Footprint:
        return Footprint(working=int(inputs["gigabytes"]) << 30)


NODES = [Number, Relay, SaveSquare, SlowSteps, Explode, Allocate]
