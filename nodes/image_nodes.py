"""Images in and out: Decode/Encode between LATENT and IMAGE, SaveImage, PreviewImage, LoadImage, ImageGrid.

IMAGE is ComfyUI's convention: float (B, H, W, C) in [0, 1]. Our models work in pixel space with
data in [-1, 1], so Decode/Encode are the affine map and the layout change.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps
from PIL.PngImagePlugin import PngInfo

from graph_runtime.api import Combo, Context, FolderFiles, Int, Node, Output, Result, Socket, String
from graph_runtime.folders import resolve_file
from nodes.diffusion.types import Latent

IMAGE_FILES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class Decode(Node):
    """LATENT → IMAGE: x̂0 (B, C, H, W) in [-1, 1] → (B, H, W, C) in [0, 1] (pixel-space models)."""

    category = "guidegraph/image"
    inputs = (Socket(name="latent", type="LATENT", tooltip="the sampled latent (x̂0 in [-1, 1])"),)
    outputs = (Output("IMAGE", "IMAGE"),)

    @staticmethod
    def run(ctx: Context, latent: Latent) -> tuple[torch.Tensor]:
        return (((latent.samples.float().cpu() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).contiguous(),)


class Encode(Node):
    """IMAGE → LATENT: (B, H, W, C) in [0, 1] → (B, C, H, W) in [-1, 1], for img2img and inpainting."""

    category = "guidegraph/image"
    inputs = (Socket(name="image", type="IMAGE", tooltip="the image to start from (img2img, inpainting)"),)
    outputs = (Output("LATENT", "LATENT"),)

    @staticmethod
    def run(ctx: Context, image: torch.Tensor) -> tuple[Latent]:
        return (Latent(image.float().permute(0, 3, 1, 2).contiguous() * 2 - 1),)


def to_pil(image: torch.Tensor) -> Image.Image:
    """(H, W, C) in [0, 1] → an 8-bit RGB (or L) PIL image."""
    pixels = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels[..., :3])


def _split_prefix(root: Path, prefix: str) -> tuple[Path, str, str]:
    """'runs/cfg' → (root/runs, 'runs', 'cfg'); refuses prefixes that leave ``root``."""
    folder = (root / prefix).parent.resolve()
    if not folder.is_relative_to(root.resolve()):
        raise ValueError(f"filename_prefix {prefix!r} points outside the output folder")
    name = Path(prefix).name or "image"
    return folder, folder.relative_to(root.resolve()).as_posix().strip("."), name


def write_png_atomic(image: Image.Image, folder: Path, stem: str, info: PngInfo | None) -> str:
    """Write to a temporary file, then link it under the first free name ``{stem}_{n:05}_.png``.

    ``os.link`` never replaces an existing file, so concurrent writers cannot clobber each other and
    a reader never sees a half-written PNG.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".save-", suffix=".png.part")
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG", pnginfo=info, compress_level=4)
        taken = [p.name for p in folder.glob(f"{stem}_*_.png")]
        counter = 1 + max(
            (int(n[len(stem) + 1 : -5]) for n in taken if n[len(stem) + 1 : -5].isdigit()), default=0
        )
        while True:
            name = f"{stem}_{counter:05}_.png"
            try:
                os.link(tmp, folder / name)
                return name
            except FileExistsError:
                counter += 1
    finally:
        os.unlink(tmp)


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


class SaveImage(Node):
    """Save images as PNG in the output folder, with the API prompt and the editor workflow embedded
    (text chunks ``prompt`` and ``workflow``, as ComfyUI writes them). Names never collide."""

    category = "guidegraph/image"
    output_node = True
    inputs = (
        Socket(name="images", type="IMAGE", tooltip="the images to save"),
        String(
            name="filename_prefix",
            default="guidegraph",
            tooltip="file name prefix; may name a subfolder, e.g. runs/cfg",
        ),
    )
    outputs = ()

    @staticmethod
    def run(ctx: Context, images: torch.Tensor, filename_prefix: str) -> Result:
        saved = save_images(ctx, images, Path(ctx.paths.output), filename_prefix, "output")
        return Result(outputs=(), ui={"images": saved})


class PreviewImage(Node):
    """Show images in the editor (written to the temp folder, not kept as outputs)."""

    category = "guidegraph/image"
    output_node = True
    deterministic = False  # temp files may be cleared; always write them again
    inputs = (
        Socket(
            name="images",
            type="IMAGE",
            tooltip="the images to show in the editor (written to temp, not kept)",
        ),
    )
    outputs = ()

    @staticmethod
    def run(ctx: Context, images: torch.Tensor) -> Result:
        saved = save_images(ctx, images, Path(ctx.paths.temp), "preview", "temp")
        return Result(outputs=(), ui={"images": saved})


class LoadImage(Node):
    """Load an image from the input folder → IMAGE (1, H, W, 3) and MASK (1, H, W): 1 where transparent."""

    category = "guidegraph/image"
    inputs = (
        Combo(
            name="image",
            options=FolderFiles("input", IMAGE_FILES),
            upload="image",
            tooltip="a picture in the input folder (the button uploads one)",
        ),
    )
    outputs = (Output("IMAGE", "IMAGE"), Output("MASK", "MASK"))

    @staticmethod
    def run(ctx: Context, image: str) -> tuple[torch.Tensor, torch.Tensor]:
        local = (Path(ctx.paths.input) / image).resolve()
        inside = local.is_relative_to(Path(ctx.paths.input).resolve()) and local.is_file()
        path = local if inside else resolve_file("input", image)
        with Image.open(path) as opened:
            upright = ImageOps.exif_transpose(opened)
            rgba = np.asarray(upright.convert("RGBA"), dtype=np.float32) / 255.0  # (H, W, 4)
        pixels = torch.from_numpy(rgba.copy())
        return pixels[None, ..., :3], (1 - pixels[None, ..., 3])


def _labels(text: str) -> list[str]:
    lines = [s.strip() for s in text.replace("\n", ",").split(",")] if text.strip() else []
    return lines


class ImageGrid(Node):
    """Tile a batch into a grid for comparisons, with optional row and column labels.

    Labels are comma- or newline-separated, drawn with PIL's default font; ``columns`` 0 picks a
    near-square grid; ``scale`` enlarges each cell (nearest neighbour) so small images stay legible.
    """

    category = "guidegraph/image"
    inputs = (
        Socket(name="images", type="IMAGE", tooltip="the batch to tile"),
        Int(
            name="columns",
            default=0,
            min=0,
            max=256,
            tooltip="cells per row (0: chosen for a square-ish grid)",
        ),
        Int(
            name="scale",
            default=2,
            min=1,
            max=16,
            tooltip="each cell is enlarged this many times (nearest neighbour)",
        ),
        Int(name="padding", default=2, min=0, max=64, tooltip="pixels between cells"),
        String(
            name="row_labels", default="", tooltip="labels down the left side, comma- or newline-separated"
        ),
        String(name="column_labels", default="", tooltip="labels along the top, comma- or newline-separated"),
    )
    outputs = (Output("IMAGE", "IMAGE"),)

    @staticmethod
    def run(
        ctx: Context,
        images: torch.Tensor,
        columns: int,
        scale: int,
        padding: int,
        row_labels: str,
        column_labels: str,
    ) -> tuple[torch.Tensor]:
        return (image_grid(images, columns, scale, padding, _labels(row_labels), _labels(column_labels)),)


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


NODES: list[type[Node]] = [Decode, Encode, SaveImage, PreviewImage, LoadImage, ImageGrid]
