"""Between pixels and latents: whole or tiled VAE decoding, and encoding with its shape checks.

Pixels are (B, 3, H, W) in [-1, 1]; latents (B, C, H/f, W/f) with f the VAE's ``downscale``. Tiled
decoding cuts the latent into overlapping tiles, decodes each alone and blends the overlaps with
linear ramps, so peak memory follows the tile, not the image (the approach of diffusers'
``AutoencoderKL.tiled_decode`` and ComfyUI's VAEDecodeTiled, written for any VAE).
"""

from __future__ import annotations

import torch

from nodes.diffusion.types import VAE


def encode_pixels(vae: VAE, pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] → latents; H and W must be multiples of the downscale factor."""
    f = vae.downscale
    h, w = pixels.shape[-2:]
    if h % f or w % f:
        raise ValueError(
            f"image {w}×{h} is not a multiple of the VAE's downscale {f}; scale or crop it first"
        )
    with torch.no_grad():
        return vae.encode(pixels.to(device))


def decode_latents(
    vae: VAE, latents: torch.Tensor, device: torch.device, tile_size: int = 0, overlap: int = -1
) -> torch.Tensor:
    """Latents → pixels (B, 3, H·f, W·f); ``tile_size`` > 0 decodes in tiles of that many pixels,
    overlapping by ``overlap`` pixels (−1: a quarter of the tile)."""
    if latents.shape[1] != vae.latent_channels:
        raise ValueError(
            f"latents have {latents.shape[1]} channels but the VAE {vae.name!r} takes "
            f"{vae.latent_channels}: this VAE does not belong to the model that made them"
        )
    latents = latents.to(device)
    tile = max(tile_size // vae.downscale, 0)
    with torch.no_grad():
        if tile == 0 or (latents.shape[-2] <= tile and latents.shape[-1] <= tile):
            return vae.decode(latents)
        lap = tile // 4 if overlap < 0 else overlap // vae.downscale
        return _decode_tiled(vae, latents, tile, overlap=min(max(lap, 1), tile - 1))


def _ramp(n: int, overlap: int, first: bool, last: bool) -> torch.Tensor:
    """Blend weights along one axis of a tile: rising over the leading overlap, falling over the trailing."""
    w = torch.ones(n)
    k = min(overlap, n)
    ramp = torch.linspace(0, 1, k + 2)[1:-1]
    if not first:
        w[:k] = ramp
    if not last:
        w[n - k :] = ramp.flip(0)
    return w


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    stride = max(tile - overlap, 1)
    starts = list(range(0, max(size - tile, 0) + 1, stride))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def _decode_tiled(vae: VAE, latents: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    f = vae.downscale
    b, _, h, w = latents.shape
    out: torch.Tensor | None = None
    weight = torch.zeros(1, 1, h * f, w * f, device=latents.device)
    ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
    for y in ys:
        for x in xs:
            part = vae.decode(latents[..., y : y + tile, x : x + tile])  # (B, 3, th·f, tw·f)
            if out is None:
                out = torch.zeros(b, part.shape[1], h * f, w * f, device=part.device, dtype=part.dtype)
            th, tw = part.shape[-2:]
            wy = _ramp(th, overlap * f, y == ys[0], y == ys[-1]).to(part.device)
            wx = _ramp(tw, overlap * f, x == xs[0], x == xs[-1]).to(part.device)
            mask = (wy[:, None] * wx[None, :]).to(part.dtype)  # (th, tw)
            out[..., y * f : y * f + th, x * f : x * f + tw] += part * mask
            weight[..., y * f : y * f + th, x * f : x * f + tw] += mask
    assert out is not None
    return out / weight.clamp(min=1e-8).to(out.dtype)
