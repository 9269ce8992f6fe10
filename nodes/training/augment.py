"""Image augmentations for training the classifiers and CLIP: blur, fade toward the mean, pixel noise."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """Blur each image with its own Gaussian σ (pixels; σ = 0 leaves it unchanged). x (B, C, H, W), σ (B,)."""
    b, c, h, w = x.shape
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)  # (K,)
    s = sigma.to(x.dtype).clamp(min=1e-3)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None] / s) ** 2)  # (B, K)
    kernel = kernel / kernel.sum(-1, keepdim=True)
    kernel = kernel.repeat_interleave(c, dim=0)  # (B*C, K)
    flat = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=b * c)  # along W
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=b * c)  # along H
    return flat.reshape(b, c, h, w)


def augment(
    x: torch.Tensor,
    generator: torch.Generator,
    blur_prob: float,
    blur_max: float,
    fade_prob: float,
    fade_min: float,
    noise_prob: float,
    noise_max: float,
) -> torch.Tensor:
    """Random blur, fade (x ← m + a·(x − m), m the image mean) and Gaussian noise, each with a probability."""
    b = x.shape[0]

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(x.device)

    blur = torch.where(rand(b) < blur_prob, blur_max * rand(b), torch.zeros(b, device=x.device))
    x = gaussian_blur(x, blur)
    fade = torch.where(
        rand(b) < fade_prob, fade_min + (1 - fade_min) * rand(b), torch.ones(b, device=x.device)
    )
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + fade[:, None, None, None] * (x - mean)
    noise = torch.where(rand(b) < noise_prob, noise_max * rand(b), torch.zeros(b, device=x.device))
    return x + noise[:, None, None, None] * torch.randn_like(x)
