"""Model families: one room per family of networks, and the one place a family plugs in.

A family says three things (:class:`Family`):

1. how to recognise its files: ``detect(source)`` looks at a checkpoint's header (keys, tensor shapes,
   ``__metadata__``) or a diffusers folder and names the variant it holds, or returns None;
2. how to build its networks: ``load(source, variant, options)`` builds them from configs shipped in
   the package, never from a model hub;
3. how to expose them to the graph: a :class:`Checkpoint` of the σ-space denoiser ``D(x, σ, cond) → x̂0``
   (MODEL), the text encoder(s) (CLIP) and the VAE.

Families are listed explicitly in :data:`FAMILIES` (no scanning for code). Node declarations call
:func:`load_checkpoint` and stay thin. Imports: families use the math in ``nodes.diffusion`` and never
the node declarations, the runtime or the server.
"""

from __future__ import annotations

from families.base import (
    Checkpoint,
    CheckpointError,
    Family,
    LoadOptions,
    Source,
    UnsafeModelFileError,
)
from families.registry import FAMILIES, detect, load_checkpoint

__all__ = [
    "FAMILIES",
    "Checkpoint",
    "CheckpointError",
    "Family",
    "LoadOptions",
    "Source",
    "UnsafeModelFileError",
    "detect",
    "load_checkpoint",
]
