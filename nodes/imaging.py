"""Image helpers behind the image nodes: PNG writing with ComfyUI's text chunks, grids, PIL conversion.

IMAGE is ComfyUI's convention: float (B, H, W, C) in [0, 1].
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from graph_runtime.api import Context


def to_pil(image: torch.Tensor) -> Image.Image:
    """(H, W, C) in [0, 1] → an 8-bit RGB (or L) PIL image."""
    # numpy, not torch: torch's CPU round() enters its thread pool even for a tiny image, which costs
    # milliseconds whenever another thread (a server's event loop) holds the other core.
    pixels = (np.clip(image.detach().float().cpu().numpy(), 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels[..., :3])


def _split_prefix(root: Path, prefix: str) -> tuple[Path, str, str]:
    """'runs/cfg' → (root/runs, 'runs', 'cfg'); refuses prefixes that leave ``root``."""
    real_root = os.path.realpath(root)
    folder = os.path.realpath(os.path.join(real_root, os.path.dirname(prefix)))
    if folder != real_root and not folder.startswith(real_root + os.sep):
        raise ValueError(f"filename_prefix {prefix!r} points outside the output folder")
    name = os.path.basename(prefix) or "image"
    return Path(folder), os.path.relpath(folder, real_root).replace(os.sep, "/").strip("."), name


_NEXT_COUNTER: dict[tuple[Path, str], int] = {}  # (folder, stem) -> the next number to try
_COUNTER_LOCK = threading.Lock()


def write_png_atomic(image: Image.Image, folder: Path, stem: str, info: PngInfo | None) -> str:
    """Write to a temporary file, then link it under the first free name ``{stem}_{n:05}_.png``.

    ``os.link`` never replaces an existing file, so concurrent writers cannot clobber each other and
    a reader never sees a half-written PNG. The folder is listed once per (folder, stem) and process;
    later saves start from the number after the last one (a full listing per save would make a
    server slower with every image it has written).
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".save-", suffix=".png.part")
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG", pnginfo=info, compress_level=4)
        with _COUNTER_LOCK:
            counter = _NEXT_COUNTER.get((folder, stem)) or 1 + _highest_counter(folder, stem)
            while True:
                name = f"{stem}_{counter:05}_.png"
                counter += 1
                try:
                    os.link(tmp, folder / name)
                except FileExistsError:
                    continue
                if len(_NEXT_COUNTER) >= 4096 and (folder, stem) not in _NEXT_COUNTER:
                    _NEXT_COUNTER.clear()  # a memo, not a record: bounded, re-listed when needed
                _NEXT_COUNTER[(folder, stem)] = counter
                return name
    finally:
        os.unlink(tmp)


def _highest_counter(folder: Path, stem: str) -> int:
    prefix = f"{stem}_"
    with os.scandir(folder) as entries:
        numbers = [
            e.name[len(prefix) : -5]
            for e in entries
            if e.name.startswith(prefix) and e.name.endswith("_.png")
        ]
    return max((int(n) for n in numbers if n.isdigit()), default=0)


def save_images(
    ctx: Context, images: torch.Tensor, root: Path, prefix: str, kind: str
) -> list[dict[str, str]]:
    """Save a batch as PNGs with ComfyUI's text chunks ``prompt`` (API prompt) and the extra_pnginfo keys."""
    info = PngInfo()
    if ctx.prompt:
        info.add_text("prompt", json.dumps(ctx.prompt))
    for key, value in (ctx.extra_pnginfo or {}).items():
        info.add_text(key, json.dumps(value))
    folder, subfolder, stem = _split_prefix(root, prefix)
    return [
        {"filename": write_png_atomic(to_pil(img), folder, stem, info), "subfolder": subfolder, "type": kind}
        for img in images
    ]


def label_list(text: str) -> list[str]:
    """Comma- or newline-separated labels."""
    return [s.strip() for s in text.replace("\n", ",").split(",")] if text.strip() else []


def image_grid(
    images: torch.Tensor, columns: int, scale: int, padding: int, rows_text: list[str], cols_text: list[str]
) -> torch.Tensor:
    """(B, H, W, C) → (1, H', W', 3): cells in row-major order on a white sheet, labels in black."""
    b, h, w = images.shape[:3]
    cols = columns or max(1, int(np.ceil(np.sqrt(b))))
    rows = -(-b // cols)
    font: Any = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = int(max((probe.textbbox((0, 0), t, font=font)[2] for t in rows_text), default=0))
    text_h = int(max((probe.textbbox((0, 0), t, font=font)[3] for t in [*rows_text, *cols_text]), default=0))
    left = text_w + 2 * padding if rows_text else 0
    top = text_h + 2 * padding if cols_text else 0
    cw, ch = w * scale, h * scale
    sheet = Image.new(
        "RGB", (left + cols * (cw + padding) + padding, top + rows * (ch + padding) + padding), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for i in range(b):
        r, c = divmod(i, cols)
        cell = to_pil(images[i]).convert("RGB").resize((cw, ch), Image.Resampling.NEAREST)
        sheet.paste(cell, (left + padding + c * (cw + padding), top + padding + r * (ch + padding)))
    for c, text in enumerate(cols_text[:cols]):
        draw.text((left + padding + c * (cw + padding), padding), text, fill="black", font=font)
    for r, text in enumerate(rows_text[:rows]):
        draw.text(
            (padding, top + padding + r * (ch + padding) + ch // 2 - text_h // 2),
            text,
            fill="black",
            font=font,
        )
    return torch.from_numpy(np.asarray(sheet, dtype=np.float32) / 255.0)[None]  # (1, H', W', 3)
