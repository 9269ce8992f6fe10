"""ComfyUI's latent and image nodes: upscaling, masks, inpainting encode, tiled decode, inversion,
a blank image.

Latents are (B, C, h, w) at 1/8 of the pixels for Stable Diffusion; images (B, H, W, C) in [0, 1];
masks (B, H, W) in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from graph_runtime.api import Combo, Context, Float, FolderFiles, Footprint, Int, Node, Output, Socket

if TYPE_CHECKING:
    import torch

    from nodes.diffusion.types import VAE, Latent

MAX_RESOLUTION = 16384
LATENT_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
IMAGE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CROPS = ("disabled", "center")


def resize(samples: torch.Tensor, width: int, height: int, method: str, crop: str) -> torch.Tensor:
    """(B, C, H, W) → (B, C, height, width); ``crop`` 'center' first cuts to the target aspect ratio."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    if crop == "center":
        h, w = samples.shape[-2:]
        target, now = width / height, w / h
        if now > target:  # too wide: cut the sides
            keep = round(h * target)
            x0 = (w - keep) // 2
            samples = samples[..., x0 : x0 + keep]
        elif now < target:
            keep = round(w / target)
            y0 = (h - keep) // 2
            samples = samples[..., y0 : y0 + keep, :]
    if method == "bislerp":
        raise ValueError("upscale_method: 'bislerp' is not supported by guidegraph; choose another method")
    if method == "lanczos":
        out = []
        for image in samples.float().cpu():
            pixels = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()  # (H, W, C)
            resized = Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).resize(
                (width, height), Image.Resampling.LANCZOS
            )
            array = np.asarray(resized, dtype=np.float32) / 255.0
            out.append(torch.from_numpy(array.reshape(height, width, -1)).permute(2, 0, 1))
        return torch.stack(out).to(samples.dtype)
    aligned = {"bilinear": False, "bicubic": False}.get(method)
    return F.interpolate(samples, size=(height, width), mode=method, align_corners=aligned)


def _target(width: int, height: int, h: int, w: int, unit: int) -> tuple[int, int]:
    """ComfyUI's 0 = keep the aspect ratio (both 0: unchanged), in units of ``unit`` pixels."""
    if width == 0 and height == 0:
        return w, h
    if width == 0:
        return max(1, round(w * height / unit / h)), height // unit
    if height == 0:
        return width // unit, max(1, round(h * width / unit / w))
    return width // unit, height // unit


class LatentUpscale(Node):
    """Resize latents to ``width`` × ``height`` pixels (0 keeps the aspect ratio)."""

    display_name = "Upscale Latent"
    category = "latent"
    inputs = (
        Socket(name="samples", type="LATENT", tooltip="the latent to resize"),
        Combo(
            name="upscale_method",
            options=LATENT_METHODS,
            default="nearest-exact",
            tooltip="the interpolation",
        ),
        Int(
            name="width",
            default=512,
            min=0,
            max=MAX_RESOLUTION,
            step=8,
            tooltip="the new width in pixels (0: keep the aspect ratio from height)",
        ),
        Int(
            name="height",
            default=512,
            min=0,
            max=MAX_RESOLUTION,
            step=8,
            tooltip="the new height in pixels (0: keep the aspect ratio from width)",
        ),
        Combo(
            name="crop",
            options=CROPS,
            default="disabled",
            tooltip="center: crop to the new aspect ratio first; disabled: stretch",
        ),
    )
    outputs = (Output("LATENT", "LATENT"),)

    @staticmethod
    def run(
        ctx: Context, samples: Latent, upscale_method: str, width: int, height: int, crop: str
    ) -> tuple[Latent]:
        from nodes.diffusion.types import Latent

        h, w = samples.samples.shape[-2:]
        tw, th = _target(width, height, h, w, 8)
        out = resize(samples.samples, tw, th, upscale_method, crop)
        return (Latent(out, None, samples.batch_index),)


class LatentUpscaleBy(Node):
    """Resize latents by a factor."""

    display_name = "Upscale Latent By"
    category = "latent"
    inputs = (
        Socket(name="samples", type="LATENT", tooltip="the latent to resize"),
        Combo(
            name="upscale_method",
            options=LATENT_METHODS,
            default="nearest-exact",
            tooltip="the interpolation",
        ),
        Float(
            name="scale_by", default=1.5, min=0.01, max=8.0, step=0.01, tooltip="the factor for both sides"
        ),
    )
    outputs = (Output("LATENT", "LATENT"),)

    @staticmethod
    def run(ctx: Context, samples: Latent, upscale_method: str, scale_by: float) -> tuple[Latent]:
        from nodes.diffusion.types import Latent

        h, w = samples.samples.shape[-2:]
        out = resize(samples.samples, round(w * scale_by), round(h * scale_by), upscale_method, "disabled")
        return (Latent(out, None, samples.batch_index),)


class ImageScale(Node):
    """Resize images to ``width`` × ``height`` (0 keeps the aspect ratio)."""

    display_name = "Upscale Image"
    category = "image/upscaling"
    inputs = (
        Socket(name="image", type="IMAGE", tooltip="the image to resize"),
        Combo(
            name="upscale_method", options=IMAGE_METHODS, default="nearest-exact", tooltip="the interpolation"
        ),
        Int(
            name="width",
            default=512,
            min=0,
            max=MAX_RESOLUTION,
            step=1,
            tooltip="the new width (0: keep the aspect ratio from height)",
        ),
        Int(
            name="height",
            default=512,
            min=0,
            max=MAX_RESOLUTION,
            step=1,
            tooltip="the new height (0: keep the aspect ratio from width)",
        ),
        Combo(
            name="crop",
            options=CROPS,
            default="disabled",
            tooltip="center: crop to the new aspect ratio first; disabled: stretch",
        ),
    )
    outputs = (Output("IMAGE", "IMAGE"),)

    @staticmethod
    def run(
        ctx: Context, image: torch.Tensor, upscale_method: str, width: int, height: int, crop: str
    ) -> tuple[torch.Tensor]:
        h, w = image.shape[1:3]
        tw, th = _target(width, height, h, w, 1)
        out = resize(image.movedim(-1, 1), tw, th, upscale_method, crop)
        return (out.movedim(1, -1).clamp(0, 1),)


class ImageScaleBy(Node):
    """Resize images by a factor."""

    display_name = "Upscale Image By"
    category = "image/upscaling"
    inputs = (
        Socket(name="image", type="IMAGE", tooltip="the image to resize"),
        Combo(
            name="upscale_method", options=IMAGE_METHODS, default="nearest-exact", tooltip="the interpolation"
        ),
        Float(
            name="scale_by", default=1.0, min=0.01, max=8.0, step=0.01, tooltip="the factor for both sides"
        ),
    )
    outputs = (Output("IMAGE", "IMAGE"),)

    @staticmethod
    def run(ctx: Context, image: torch.Tensor, upscale_method: str, scale_by: float) -> tuple[torch.Tensor]:
        h, w = image.shape[1:3]
        out = resize(
            image.movedim(-1, 1), round(w * scale_by), round(h * scale_by), upscale_method, "disabled"
        )
        return (out.movedim(1, -1).clamp(0, 1),)


class ImageInvert(Node):
    """1 − image."""

    display_name = "Invert Image"
    category = "image"
    inputs = (Socket(name="image", type="IMAGE", tooltip="the image to invert (1 − value)"),)
    outputs = (Output("IMAGE", "IMAGE"),)

    @staticmethod
    def run(ctx: Context, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - image,)


class EmptyImage(Node):
    """A batch of images of one colour (``color`` as 0xRRGGBB)."""

    category = "image"
    inputs = (
        Int(name="width", default=512, min=1, max=MAX_RESOLUTION, step=1, tooltip="the width in pixels"),
        Int(name="height", default=512, min=1, max=MAX_RESOLUTION, step=1, tooltip="the height in pixels"),
        Int(name="batch_size", default=1, min=1, max=4096, tooltip="how many images"),
        Int(name="color", default=0, min=0, max=0xFFFFFF, step=1, tooltip="the colour, 0xRRGGBB"),
    )
    outputs = (Output("IMAGE", "IMAGE"),)

    @staticmethod
    def run(ctx: Context, width: int, height: int, batch_size: int, color: int) -> tuple[torch.Tensor]:
        import torch

        rgb = torch.tensor([(color >> shift & 0xFF) / 0xFF for shift in (16, 8, 0)])
        return (rgb.expand(batch_size, height, width, 3).contiguous(),)

    @staticmethod
    def footprint(inputs: Mapping[str, Any]) -> Footprint:
        batch, height, width = inputs.get("batch_size"), inputs.get("height"), inputs.get("width")
        if type(batch) is not int or type(height) is not int or type(width) is not int:
            return Footprint(outputs=(None,))
        return Footprint(outputs=((batch, height, width, 3),))


class SetLatentNoiseMask(Node):
    """Regenerate the latent only where the mask is 1 (inpainting with any model)."""

    category = "latent/inpaint"
    inputs = (
        Socket(name="samples", type="LATENT", tooltip="the latent to inpaint"),
        Socket(
            name="mask", type="MASK", tooltip="1 where the sampler regenerates, 0 where it keeps the latent"
        ),
    )
    outputs = (Output("LATENT", "LATENT"),)

    @staticmethod
    def run(ctx: Context, samples: Latent, mask: torch.Tensor) -> tuple[Latent]:
        from nodes.sampling_nodes import SetNoiseMask

        return SetNoiseMask.run(ctx, samples, mask)


class VAEEncodeForInpaint(Node):
    """Encode for inpainting: masked pixels become grey before encoding, and the latent carries the
    mask grown by ``grow_mask_by`` pixels as its noise mask (the image is cropped to a multiple of 8)."""

    display_name = "VAE Encode (for Inpainting)"
    category = "latent/inpaint"
    inputs = (
        Socket(name="pixels", type="IMAGE", tooltip="the image to inpaint"),
        Socket(name="vae", type="VAE", tooltip="the VAE that turns pixels into latents"),
        Socket(
            name="mask",
            type="MASK",
            tooltip="1 where to regenerate; those pixels are greyed out before encoding",
        ),
        Int(
            name="grow_mask_by",
            default=6,
            min=0,
            max=64,
            step=1,
            tooltip="pixels to grow the mask by before encoding",
        ),
    )
    outputs = (Output("LATENT", "LATENT"),)

    @staticmethod
    def run(
        ctx: Context, pixels: torch.Tensor, vae: VAE, mask: torch.Tensor, grow_mask_by: int
    ) -> tuple[Latent]:
        import torch
        import torch.nn.functional as F

        from nodes.diffusion.types import Latent
        from nodes.diffusion.vae import encode_pixels

        f = vae.downscale
        h, w = (pixels.shape[1] // f) * f, (pixels.shape[2] // f) * f
        m = F.interpolate(
            mask.reshape(-1, 1, *mask.shape[-2:]).float(), size=pixels.shape[1:3], mode="bilinear"
        )
        pixels, m = pixels[:, :h, :w, :3].clone(), m[..., :h, :w]  # (B, H, W, 3), (B, 1, H, W)
        if grow_mask_by > 0:
            kernel = torch.ones(1, 1, grow_mask_by, grow_mask_by)
            grown = F.conv2d(m.round(), kernel, padding=grow_mask_by // 2)[..., :h, :w].clamp(0, 1)
        else:
            grown = m
        keep = (1 - m.round()).movedim(1, -1)  # (B, H, W, 1)
        pixels = (pixels - 0.5) * keep + 0.5
        latents = encode_pixels(vae, pixels.movedim(-1, 1) * 2 - 1, ctx.device).float().cpu()
        return (Latent(latents, grown),)


class VAEDecodeTiled(Node):
    """Decode in overlapping tiles of ``tile_size`` pixels (bounded memory for large images)."""

    display_name = "VAE Decode (Tiled)"
    category = "_for_testing"
    inputs = (
        Socket(name="samples", type="LATENT", tooltip="the latent to decode"),
        Socket(name="vae", type="VAE", tooltip="the VAE that turns latents into pixels"),
        Int(name="tile_size", default=512, min=64, max=4096, step=32, tooltip="tile side in pixels"),
        Int(
            name="overlap",
            default=64,
            min=0,
            max=4096,
            step=32,
            tooltip="overlap between tiles in pixels, blended",
        ),
        Int(
            name="temporal_size",
            default=64,
            min=8,
            max=4096,
            step=4,
            tooltip="frames per tile for video VAEs (ignored for images)",
        ),
        Int(
            name="temporal_overlap",
            default=8,
            min=4,
            max=4096,
            step=4,
            tooltip="overlapping frames for video VAEs (ignored for images)",
        ),
    )
    outputs = (Output("IMAGE", "IMAGE"),)

    @staticmethod
    def run(
        ctx: Context,
        samples: Latent,
        vae: VAE,
        tile_size: int,
        overlap: int,
        temporal_size: int = 64,
        temporal_overlap: int = 8,
    ) -> tuple[torch.Tensor]:
        from nodes.diffusion.vae import decode_latents

        pixels = decode_latents(vae, samples.samples, ctx.device, tile_size, overlap)
        return (((pixels.float().cpu() + 1) / 2).clamp(0, 1).movedim(1, -1).contiguous(),)


class LoadImageMask(Node):
    """Load one channel of an image from the input folder as a MASK (alpha: 1 where transparent)."""

    display_name = "Load Image (as Mask)"
    category = "mask"
    inputs = (
        Combo(
            name="image",
            options=FolderFiles("input", (".png", ".jpg", ".jpeg", ".webp", ".bmp")),
            upload="image",
            tooltip="a picture in the input folder (the button uploads one)",
        ),
        Combo(
            name="channel",
            options=("alpha", "red", "green", "blue"),
            default="alpha",
            tooltip="the channel to use as the mask (alpha: 1 where transparent)",
        ),
    )
    outputs = (Output("MASK", "MASK"),)

    @staticmethod
    def run(ctx: Context, image: str, channel: str) -> tuple[torch.Tensor]:
        from nodes.image_nodes import LoadImage

        pixels, alpha_mask = LoadImage.run(ctx, image)
        if channel == "alpha":
            return (alpha_mask,)
        return (pixels[..., ("red", "green", "blue").index(channel)],)


NODES: list[type[Node]] = [
    LatentUpscale,
    LatentUpscaleBy,
    ImageScale,
    ImageScaleBy,
    ImageInvert,
    EmptyImage,
    SetLatentNoiseMask,
    VAEEncodeForInpaint,
    VAEDecodeTiled,
    LoadImageMask,
]
