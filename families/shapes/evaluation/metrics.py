"""Scores of a set of samples: evaluator accuracy, within-class diversity, CLIP score."""

from __future__ import annotations

import torch

from families.shapes.data.shapes import COLOURS


def accuracies(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Share of samples whose evaluator class, shape and colour equal the requested ones."""
    pred = logits.argmax(-1)
    n_col = len(COLOURS)
    return {
        "class": (pred == labels).float().mean().item(),
        "shape": (pred // n_col == labels // n_col).float().mean().item(),
        "colour": (pred % n_col == labels % n_col).float().mean().item(),
    }


def within_class_diversity(images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over classes of the mean pairwise RMS pixel distance within the class ([-1, 1] units)."""
    per_class = []
    for label in labels.unique():
        group = images[labels == label].flatten(1).float()  # (n, D): pixels or features
        if len(group) < 2:
            continue
        dist = torch.cdist(group, group) / group.shape[1] ** 0.5  # (n, n) RMS distances
        n = len(group)
        per_class.append((dist.sum() / (n * (n - 1))).item())
    return sum(per_class) / max(len(per_class), 1)


def clip_score(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> float:
    """Mean cosine between each image and its caption (both unit vectors, (B, E))."""
    return (image_embeddings * text_embeddings).sum(-1).mean().item()


def saturation(images: torch.Tensor) -> torch.Tensor:
    """HSV saturation per pixel of (B, 3, H, W) images in [-1, 1]: (max − min)/max of the RGB in [0, 1]."""
    rgb = ((images.clamp(-1, 1) + 1) / 2).float()
    top, bottom = rgb.max(dim=1).values, rgb.min(dim=1).values  # (B, H, W)
    return torch.where(top > 1e-6, (top - bottom) / top.clamp(min=1e-6), torch.zeros_like(top))


def colour_statistics(samples: torch.Tensor, data: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Saturation and colour against training images of the same classes.

    ``samples`` are the sampler's raw outputs (before clamping), ``data`` training images with the
    same ``labels``. ``clipped``: share of sample values outside [−1, 1] (CFG's overshoot);
    ``saturation`` / ``saturation_data``: mean HSV saturation; ``colour_error``: mean over classes of
    the L1 distance between the mean RGB of the samples and of the data, per channel ([−1, 1] units).
    """
    errors = [
        (samples[labels == k].clamp(-1, 1).mean(dim=(0, 2, 3)) - data[labels == k].mean(dim=(0, 2, 3)))
        .abs()
        .mean()
        .item()
        for k in labels.unique()
    ]
    return {
        "clipped": (samples.abs() > 1).float().mean().item(),
        "saturation": saturation(samples).mean().item(),
        "saturation_data": saturation(data).mean().item(),
        "colour_error": sum(errors) / len(errors),
    }
