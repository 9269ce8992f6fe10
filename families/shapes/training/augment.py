"""Image augmentations for training the classifiers and CLIP: blur, fade toward the mean, pixel noise."""

from __future__ import annotations

from collections.abc import Callable

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


def adversarial_l2(
    x: torch.Tensor, loss_of: Callable[[torch.Tensor], torch.Tensor], eps: torch.Tensor
) -> torch.Tensor:
    """One L2 gradient-ascent step per image: ``x + εᵢ·∇ₓℓ/‖∇ₓℓ‖`` (FGM; Madry et al. 2018 with one step).

    ``loss_of`` maps images (B, C, H, W) to a scalar loss to increase; ``eps`` (B,) the L2 radius of each
    image's perturbation (in [-1, 1] pixel units, over all C·H·W values). Returns detached images.
    """
    with torch.enable_grad():
        probe = x.detach().requires_grad_()
        (grad,) = torch.autograd.grad(loss_of(probe), probe)
    norm = grad.flatten(1).norm(dim=1).clamp(min=1e-12)  # (B,)
    return (x + (eps / norm)[:, None, None, None] * grad).detach()
