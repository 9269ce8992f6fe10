"""The explicit list of families, detection across them, and one cache of loaded checkpoints.

Each file is loaded once per (path, modification time, options) and shared by every node and prompt
that names it, for as long as anything (the node cache, a running prompt) holds it: the table holds
checkpoints weakly, so evicting them from the node cache or the server's ``/free`` releases the memory.
"""

from __future__ import annotations

import importlib
import threading
import weakref
from pathlib import Path

from families.base import Checkpoint, CheckpointError, Family, LoadOptions, Source

# Module paths, imported on first use: the SD family pulls in diffusers and transformers (seconds).
FAMILY_MODULES: tuple[str, ...] = ("families.shapes.family", "families.sd.family")

_families: list[Family] = []
_loaded: weakref.WeakValueDictionary[tuple[object, ...], Checkpoint] = weakref.WeakValueDictionary()
_lock = threading.Lock()


def FAMILIES() -> list[Family]:
    """Every family, in detection order."""
    if not _families:
        _families.extend(importlib.import_module(m).FAMILY for m in FAMILY_MODULES)
    return _families


def detect(source: Source) -> tuple[Family, str]:
    """The family and variant of ``source``; fails saying what was found and what is supported."""
    for family in FAMILIES():
        variant = family.detect(source)
        if variant is not None:
            return family, variant
    supported = "; ".join(f"{f.name}: {', '.join(f.variants)}" for f in FAMILIES())
    raise CheckpointError(
        f"{source.name}: not a checkpoint layout guidegraph knows. Found {source.summary()}. "
        f"Supported: {supported}"
    )


def load_checkpoint(
    path: str | Path, options: LoadOptions | None = None, variant: str = "auto"
) -> Checkpoint:
    """Detect and load ``path`` (a safetensors file or a diffusers folder), once per file and options."""
    options = options or LoadOptions()
    path = Path(path).resolve()
    source = Source.open(path)  # the header only: cheap
    family, found = detect(source)
    if variant != "auto":
        if variant not in family.variants:
            raise CheckpointError(
                f"{path.name}: variant {variant!r} is not one of the {family.name} family's "
                f"{list(family.variants)}"
            )
        found = variant
    key = (
        str(path),
        path.stat().st_mtime_ns,
        str(options.device),
        str(options.dtype),
        options.prediction,
        found,
    )
    with _lock:
        cached = _loaded.get(key)
        if cached is None:
            cached = _loaded[key] = family.load(source, found, options)
        return cached
