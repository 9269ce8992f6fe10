"""Images in and out: Decode/Encode between LATENT and IMAGE, SaveImage, PreviewImage, LoadImage, ImageGrid.

IMAGE is ComfyUI's convention: float (B, H, W, C) in [0, 1]. Our models work in pixel space with
data in [-1, 1], so Decode/Encode are the affine map and the layout change.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from graph_runtime.api import Combo, Context, FolderFiles, Int, Node, Output, Result, Socket, String

if TYPE_CHECKING:
    import torch

    from nodes.diffusion.types import VAE, Latent

IMAGE_FILES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class Decode(Node):
    """LATENT → IMAGE through the VAE: latents → pixels in [-1, 1] → (B, H, W, C) in [0, 1].

    ``tile_size`` > 0 decodes in overlapping tiles of that many pixels (blended at the seams), which
    bounds the memory of large images; 0 decodes in one piece.
    """

    category = "guidegraph/image"
    inputs = (
        Socket(name="latent", type="LATENT", tooltip="the sampled latent"),
        Socket(
            name="vae",
            type="VAE",
            tooltip="the VAE that turns latents into pixels (pixel-space models: an identity)",
        ),
        Int(
            name="tile_size",
            default=0,
            min=0,
            max=4096,
            step=64,
            optional=True,
            tooltip="decode in overlapping tiles of this many pixels (0: all at once)",
        ),
    )
    outputs = (Output("IMAGE", "IMAGE"),)

    @staticmethod
    def run(ctx: Context, latent: Latent, vae: VAE, tile_size: int = 0) -> tuple[torch.Tensor]:
        from nodes.diffusion.vae import decode_latents

        pixels = decode_latents(vae, latent.samples, ctx.device, tile_size)  # (B, 3, H, W) in [-1, 1]
        return (((pixels.float().cpu() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).contiguous(),)


class Encode(Node):
    """IMAGE → LATENT through the VAE: (B, H, W, C) in [0, 1] → pixels in [-1, 1] → latents, for
    img2img and inpainting. Width and height must be multiples of the VAE's downscale factor."""

    category = "guidegraph/image"
    inputs = (
        Socket(name="image", type="IMAGE", tooltip="the image to start from (img2img, inpainting)"),
        Socket(name="vae", type="VAE", tooltip="the VAE that turns pixels into latents"),
    )
    outputs = (Output("LATENT", "LATENT"),)

    @staticmethod
    def run(ctx: Context, image: torch.Tensor, vae: VAE) -> tuple[Latent]:
        from nodes.diffusion.types import Latent
        from nodes.diffusion.vae import encode_pixels

        pixels = image[..., :3].float().permute(0, 3, 1, 2).contiguous() * 2 - 1  # (B, 3, H, W)
        return (Latent(encode_pixels(vae, pixels, ctx.device).float().cpu()),)


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
        from nodes.imaging import save_images

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
        from nodes.imaging import save_images

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
        import numpy as np
        import torch
        from PIL import Image, ImageOps

        from graph_runtime.folders import resolve_file

        local = (Path(ctx.paths.input) / image).resolve()
        inside = local.is_relative_to(Path(ctx.paths.input).resolve()) and local.is_file()
        path = local if inside else resolve_file("input", image)
        with Image.open(path) as opened:
            upright = ImageOps.exif_transpose(opened)
            rgba = np.asarray(upright.convert("RGBA"), dtype=np.float32) / 255.0  # (H, W, 4)
        pixels = torch.from_numpy(rgba.copy())
        return pixels[None, ..., :3], (1 - pixels[None, ..., 3])


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
        from nodes.imaging import image_grid, label_list

        return (
            image_grid(images, columns, scale, padding, label_list(row_labels), label_list(column_labels)),
        )


NODES: list[type[Node]] = [Decode, Encode, SaveImage, PreviewImage, LoadImage, ImageGrid]
