"""Coloured shapes on varied backgrounds, rendered by vectorised torch from a seed.

Every picture is one shape (circle, square, triangle, cross) in one colour (red, green, blue, yellow)
at a random position, size and rotation, on a desaturated background with a random tint and gradient.
The 16 classes are "<colour> <shape>", captioned "a <colour> <shape>".

Reproducibility: the random parameters of batch ``index`` come from a CPU ``torch.Generator`` seeded
with ``(seed, index)``, so a batch is the same on every device and in every run; rendering from the
parameters is deterministic and runs on any device (the GPU trainer renders on the GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

IMAGE_SIZE = 32
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
CLASS_NAMES: tuple[str, ...] = tuple(f"{c} {s}" for s in SHAPES for c in COLOURS)
VOCAB: tuple[str, ...] = COLOURS + SHAPES  # the words a caption can carry; others are ignored

# Base RGB in [0, 1]; each picture jitters it a little.
_RGB = {
    "red": (0.86, 0.13, 0.12),
    "green": (0.13, 0.70, 0.22),
    "blue": (0.16, 0.30, 0.92),
    "yellow": (0.93, 0.84, 0.12),
}


def class_index(shape: str, colour: str) -> int:
    """Class index of (shape, colour): ``shape_index * len(COLOURS) + colour_index``."""
    return SHAPES.index(shape) * len(COLOURS) + COLOURS.index(colour)


def class_parts(index: int) -> tuple[str, str]:
    """(shape, colour) of a class index."""
    return SHAPES[index // len(COLOURS)], COLOURS[index % len(COLOURS)]


def class_name(index: int) -> str:
    """'red circle' for the class index of a red circle."""
    shape, colour = class_parts(index)
    return f"{colour} {shape}"


def caption_for(index: int) -> str:
    """The full caption of a class: 'a red circle'."""
    return f"a {class_name(index)}"


def prompt_words(prompt: str) -> list[str]:
    """The vocabulary words of a prompt, in order (lower-cased; other words such as 'a' are dropped)."""
    words = "".join(ch if ch.isalpha() else " " for ch in prompt.lower()).split()
    return [w for w in words if w in VOCAB]


def label_multi_hot(labels: torch.Tensor) -> torch.Tensor:
    """(B,) class indices → (B, len(VOCAB)) with the colour word and the shape word set."""
    out = torch.zeros(labels.shape[0], len(VOCAB), device=labels.device)
    rows = torch.arange(labels.shape[0], device=labels.device)
    out[rows, labels % len(COLOURS)] = 1.0
    out[rows, len(COLOURS) + labels // len(COLOURS)] = 1.0
    return out


def random_prompt_multi_hot(
    labels: torch.Tensor, generator: torch.Generator, null_prob: float, shape_only: float, colour_only: float
) -> torch.Tensor:
    """Caption variety as word sets: null (no word), shape only, colour only, or both. (B, V)."""
    u = torch.rand(labels.shape[0], generator=generator).to(labels.device)
    full = label_multi_hot(labels)
    shape_region = (u >= null_prob) & (u < null_prob + shape_only)
    colour_region = (u >= null_prob + shape_only) & (u < null_prob + shape_only + colour_only)
    keep_shape = (u >= null_prob) & ~colour_region
    keep_colour = (u >= null_prob) & ~shape_region
    n_col = len(COLOURS)
    full[:, :n_col] *= keep_colour[:, None].float()
    full[:, n_col:] *= keep_shape[:, None].float()
    return full


_TEMPLATES_FULL = ("a {c} {s}", "{c} {s}", "a picture of a {c} {s}")
_TEMPLATES_SHAPE = ("a {s}", "{s}", "a {s} of some colour")
_TEMPLATES_COLOUR = ("{c}", "a {c} shape", "something {c}")


def random_prompts(
    labels: torch.Tensor,
    generator: torch.Generator,
    null_prob: float = 0.1,
    shape_only: float = 0.15,
    colour_only: float = 0.15,
) -> list[str]:
    """Caption variety as strings ('' is the null prompt): full, shape-only or colour-only captions."""
    u = torch.rand(labels.shape[0], generator=generator).tolist()
    pick = torch.randint(0, 3, (labels.shape[0],), generator=generator).tolist()
    out = []
    for label, ui, k in zip(labels.tolist(), u, pick, strict=True):
        shape, colour = class_parts(int(label))
        if ui < null_prob:
            out.append("")
        elif ui < null_prob + shape_only:
            out.append(_TEMPLATES_SHAPE[k].format(s=shape))
        elif ui < null_prob + shape_only + colour_only:
            out.append(_TEMPLATES_COLOUR[k].format(c=colour))
        else:
            out.append(_TEMPLATES_FULL[k].format(c=colour, s=shape))
    return out


def sample_shape_params(
    n: int, generator: torch.Generator, labels: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Random picture parameters on the CPU (labels uniform over the classes unless given)."""
    g = generator
    if labels is None:
        labels = torch.randint(0, len(CLASS_NAMES), (n,), generator=g)
    labels = labels.cpu().long()
    radius = 5.0 + 4.0 * torch.rand(n, generator=g)  # (n,) pixels
    margin = 1.2 * radius + 1.0
    centre = margin[:, None] + (IMAGE_SIZE - 2 * margin[:, None]) * torch.rand(n, 2, generator=g)
    theta = 2 * math.pi * torch.rand(n, generator=g)
    base = torch.tensor([_RGB[c] for c in COLOURS])[labels % len(COLOURS)]  # (n, 3)
    fg = (base + 0.07 * (2 * torch.rand(n, 3, generator=g) - 1)).clamp(0, 1)
    grey = 0.15 + 0.7 * torch.rand(n, 1, generator=g)
    tint = 0.12 * (2 * torch.rand(n, 3, generator=g) - 1)
    bg = (grey + tint).clamp(0, 1)  # desaturated, so no background reads as a shape colour
    gradient = 0.15 * (2 * torch.rand(n, 2, generator=g) - 1)  # brightness slope along x and y
    return {
        "labels": labels,
        "radius": radius,
        "centre": centre,
        "theta": theta,
        "fg": fg,
        "bg": bg,
        "gradient": gradient,
    }


def _shape_distances(u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed distances (pixels, negative inside) of every shape, stacked: (B, 4, H, W)."""
    circle = torch.sqrt(u**2 + v**2) - r
    square = torch.maximum(u.abs(), v.abs()) - 0.8 * r
    # equilateral triangle: inradius 0.6 r, three edge normals 120° apart
    tri = torch.stack(
        [
            u * math.cos(a) + v * math.sin(a)
            for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, -math.pi / 6)
        ]
    )
    triangle = tri.amax(0) - 0.6 * r
    arm, half_width = r, 0.33 * r
    cross = torch.minimum(
        torch.maximum(u.abs() - arm, v.abs() - half_width), torch.maximum(u.abs() - half_width, v.abs() - arm)
    )
    return torch.stack([circle, square, triangle, cross], dim=1)


def render_shapes(params: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> torch.Tensor:
    """Render parameters to images (B, 3, 32, 32) in [-1, 1], anti-aliased over one pixel."""
    p = {k: t.to(device) for k, t in params.items()}
    n = p["labels"].shape[0]
    coords = torch.arange(IMAGE_SIZE, device=device, dtype=torch.float32) + 0.5
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")  # (H, W)
    dx = xs[None] - p["centre"][:, 0, None, None]  # (B, H, W)
    dy = ys[None] - p["centre"][:, 1, None, None]
    cos, sin = p["theta"].cos()[:, None, None], p["theta"].sin()[:, None, None]
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    dist = _shape_distances(u, v, p["radius"][:, None, None])  # (B, 4, H, W)
    shape_idx = (p["labels"] // len(COLOURS)).view(n, 1, 1, 1).expand(n, 1, IMAGE_SIZE, IMAGE_SIZE)
    mask = (0.5 - dist.gather(1, shape_idx)).clamp(0, 1)  # (B, 1, H, W)
    ramp = (coords - IMAGE_SIZE / 2) / (IMAGE_SIZE / 2)  # [-1, 1]
    shade = (
        p["gradient"][:, 0, None, None] * ramp[None, None, :]
        + p["gradient"][:, 1, None, None] * ramp[None, :, None]
    )  # (B, H, W)
    background = (p["bg"][:, :, None, None] + shade[:, None]).clamp(0, 1)  # (B, 3, H, W)
    image = mask * p["fg"][:, :, None, None] + (1 - mask) * background
    return image * 2 - 1


@dataclass(frozen=True)
class ShapesBatch:
    """One batch: images (B, 3, 32, 32) in [-1, 1], class labels (B,), and their full captions."""

    images: torch.Tensor
    labels: torch.Tensor

    @property
    def captions(self) -> list[str]:
        return [caption_for(int(i)) for i in self.labels.tolist()]

    @property
    def shapes(self) -> torch.Tensor:
        return self.labels // len(COLOURS)

    @property
    def colours(self) -> torch.Tensor:
        return self.labels % len(COLOURS)


@dataclass(frozen=True)
class ShapesDataset:
    """An endless dataset: batch ``index`` of a given size is a pure function of (seed, index)."""

    seed: int = 0

    def generator(self, index: int) -> torch.Generator:
        """The CPU generator of batch ``index`` (also used for per-batch extras such as caption choice)."""
        return torch.Generator().manual_seed((self.seed * 1_000_003 + index) % (2**63))

    def batch(
        self,
        index: int,
        batch_size: int,
        device: torch.device | str = "cpu",
        labels: torch.Tensor | None = None,
    ) -> ShapesBatch:
        params = sample_shape_params(batch_size, self.generator(index), labels)
        images = render_shapes(params, device)
        return ShapesBatch(images=images, labels=params["labels"].to(device))
