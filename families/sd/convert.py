"""Pickled checkpoints to safetensors, reading with ``torch.load(weights_only=True)`` only.

``weights_only`` unpickles tensors, containers and plain numbers and refuses any other object, so a
file that would run code when loaded is refused here instead. Lightning-style files keep their weights
under ``"state_dict"``; that is unwrapped and the rest (epoch, global step) dropped. The output is
written to a temporary name and renamed, so an interrupted run leaves no half file.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from families.base import CheckpointError


def read_pickled_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a pickled state dict; a CheckpointError for code, corruption or other content."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path.name}: refused: it holds objects other than tensors, which only an unrestricted "
            f"unpickler would rebuild (and could run code): {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path.name}: not a readable torch checkpoint ({exc})") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(
            f"{path.name}: expected a state dict (name → tensor), found {type(obj).__name__}"
        )
    others = [str(k) for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if others:
        shown = ", ".join(others[:5]) + (", …" if len(others) > 5 else "")
        raise CheckpointError(f"{path.name}: entries that are not named tensors: {shown}")
    return obj


def convert_pickle(src: Path, dst: Path) -> int:
    """Write ``src``'s tensors to the safetensors file ``dst``; returns how many."""
    from safetensors.torch import save_file

    state = read_pickled_state(src)
    seen: set[tuple[int, int]] = set()
    tensors: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        t = t.contiguous()
        key = (t.untyped_storage().data_ptr(), int(t.storage_offset()))
        tensors[name] = t.clone() if key in seen or t.untyped_storage().nbytes() != t.nbytes else t
        seen.add(key)
    tmp = dst.with_name(dst.name + ".partial")
    try:
        save_file(tensors, str(tmp))
        tmp.replace(dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write {dst}: {exc}") from exc
    return len(tensors)
