"""Named model folders (``checkpoints``, ``classifiers``, ...) and the COMBO sources that list them.

Node packs contribute folders through :class:`graph_runtime.api.NodePack`; users add more with the
``GUIDEGRAPH_MODEL_DIRS`` environment variable (``kind=path`` pairs separated by ``os.pathsep``).
Listings are read from disk every time they are asked for, so a newly copied file shows up.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_FOLDERS: dict[str, list[Path]] = {}


def register_folders(folders: Mapping[str, Sequence[Path]]) -> None:
    """Add search directories per folder kind (later registrations are searched after earlier ones)."""
    for kind, paths in folders.items():
        known = _FOLDERS.setdefault(kind, [])
        for path in paths:
            resolved = Path(path).resolve()
            if resolved not in known:
                known.append(resolved)


def _env_folders() -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for item in filter(None, os.environ.get("GUIDEGRAPH_MODEL_DIRS", "").split(os.pathsep)):
        kind, _, path = item.partition("=")
        if path:
            out.setdefault(kind.strip(), []).append(Path(path).expanduser().resolve())
    return out


def folder_paths(kind: str) -> list[Path]:
    """Directories searched for ``kind``: the environment's first, then the node packs'."""
    return _env_folders().get(kind, []) + _FOLDERS.get(kind, [])


def folder_kinds() -> list[str]:
    return sorted(set(_FOLDERS) | set(_env_folders()))


def list_files(kind: str, extensions: Iterable[str] = (), bundle_marker: str = "") -> list[str]:
    """Relative names (forward slashes) of the files under every directory of ``kind``, sorted.

    With ``bundle_marker``, a folder holding a file of that name is one entry (its folder name) and
    its contents are not listed (a diffusers pipeline folder with ``model_index.json``).
    """
    exts = tuple(e.lower() for e in extensions)
    names: set[str] = set()
    for root in folder_paths(kind):
        if not root.is_dir():
            continue
        bundles = {m.parent for m in root.rglob(bundle_marker)} if bundle_marker else set()
        names.update(b.relative_to(root).as_posix() for b in bundles if b != root)
        for path in root.rglob("*"):
            if not (path.is_file() and (not exts or path.name.lower().endswith(exts))):
                continue
            if bundles and any(b in path.parents for b in bundles):
                continue
            names.add(path.relative_to(root).as_posix())
    return sorted(names)


def resolve_file(kind: str, name: str) -> Path:
    """The real path of ``name`` inside a folder of ``kind`` (a file, or a bundle folder); refuses
    names that escape the folder."""
    for root in folder_paths(kind):
        candidate = (root / name).resolve()
        if candidate.is_relative_to(root) and candidate != root and candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"no file {name!r} in the {kind!r} model folders {[str(p) for p in folder_paths(kind)]}"
    )


@dataclass(frozen=True)
class FolderFiles:
    """A COMBO option source: the files of one model folder kind, re-listed on every call.

    ``bundle_marker`` lists folders that hold that file as single entries (see :func:`list_files`).
    """

    kind: str
    extensions: tuple[str, ...] = ()
    bundle_marker: str = ""

    def __call__(self) -> list[str]:
        return list_files(self.kind, self.extensions, self.bundle_marker)
