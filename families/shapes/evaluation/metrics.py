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
