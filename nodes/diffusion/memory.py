"""What sampling costs in memory, for the estimate a server makes before it runs a prompt.

The loader (Model) declares a :class:`LatentCost` for its MODEL output when it can tell the network
from the checkpoint's header, without loading it; EmptyLatent turns it into the latent's shape, and
the Sampler into its working set (see :mod:`graph_runtime.memory`). A network the table below does
not know declares nothing, and prompts over it are not estimated. Torch-free.
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from graph_runtime.api import Shape


@dataclass(frozen=True)
class LatentCost:
    """A model's latent space and the working memory of one forward of its network.

    Per batch row of a forward: ``bytes_per_pixel`` per latent pixel (activations of the
    convolutions), plus float32 self-attention maps (scores and softmax) of ``attention_heads`` heads
    at ``1/attention_downscale`` of the latent resolution (0: no attention).
    """

    channels: int
    downscale: int
    bytes_per_pixel: int
    attention_downscale: int
    attention_heads: int

    def latent(self, batch: int, height: int, width: int) -> Shape:
        """The shape (B, C, h, w) of an empty latent for an image of ``height`` × ``width`` pixels."""
        return (batch, self.channels, height // self.downscale, width // self.downscale)

    def sampling_bytes(self, latent: Shape, rows: int) -> int:
        """Working memory of one forward over ``rows`` rows of a latent of this shape."""
        _, _, h, w = latent
        attention = 0
        if self.attention_downscale:
            tokens = (h // self.attention_downscale) * (w // self.attention_downscale)
            attention = self.attention_heads * tokens * tokens * 4 * 2
        return rows * (h * w * self.bytes_per_pixel + attention)


@dataclass(frozen=True)
class LatentSize:
    """A latent of known shape from a model of known cost: what EmptyLatent tells the Sampler."""

    shape: Shape
    cost: LatentCost

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * 4  # float32


# The shipped shapes UNet (pixel space; attention at 1/4 and 1/8 of the resolution, 4 heads),
# calibrated on a CPU from peak RSS: 0.2 GB at 64² × 8, 0.83 GB at 128² × 8, 10 GB at 256² × 8
# (estimated 0.24, 1.3 and 11 GB); the shipped workflows estimate at 27-52 MB.
SHAPES_UNET = LatentCost(
    channels=3, downscale=1, bytes_per_pixel=3200, attention_downscale=4, attention_heads=4
)
# Keyed by architecture: the weak autoguidance model shapes_unet_small is a shapes_unet of half the width
# and depth and gets this calibration too, an over-estimate of its forwards (the good model's dominate).
KNOWN = {"shapes_unet": SHAPES_UNET}


CHECKPOINT_COST_MAX_AGE_S = 1.0
_CHECKPOINT_COSTS: dict[str, tuple[float, LatentCost | None]] = {}


def checkpoint_cost(name: str) -> LatentCost | None:
    """:func:`latent_cost` of the checkpoint ``name`` in the checkpoints folders (None when it is not
    there), found and read again once the last answer is older than ``CHECKPOINT_COST_MAX_AGE_S``:
    every POST /prompt of a model asks, and a burst of them should not stat the file once each."""
    now = time.monotonic()
    read_at, cost = _CHECKPOINT_COSTS.get(name, (-CHECKPOINT_COST_MAX_AGE_S, None))
    if now - read_at >= CHECKPOINT_COST_MAX_AGE_S:
        from graph_runtime.folders import find_file

        try:
            cost = latent_cost(find_file("checkpoints", name))
        except (FileNotFoundError, ValueError, OSError):
            cost = None
        _CHECKPOINT_COSTS[name] = (now, cost)
    return cost


def latent_cost(checkpoint: str) -> LatentCost | None:
    """The cost of the denoiser in ``checkpoint`` when its header names a known architecture.

    Read once per version of the file (path, size, modification time): every POST /prompt asks, and
    a large checkpoint's header is megabytes of JSON."""
    try:
        stat = os.stat(checkpoint)
    except OSError:
        return None
    return _latent_cost(checkpoint, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _latent_cost(checkpoint: str, size: int, mtime_ns: int) -> LatentCost | None:
    from families.base import decode_metadata, read_header

    try:
        header = read_header(Path(checkpoint))
    except (OSError, ValueError):
        return None
    metadata = decode_metadata(header.get("__metadata__") or {})
    return KNOWN.get(str(metadata.get("architecture"))) if metadata.get("kind") == "denoiser" else None
