"""Named model folders (``checkpoints``, ``classifiers``, ...) and the COMBO sources that list them.

Node packs contribute folders through :class:`graph_runtime.api.NodePack`; users add more with the
``GUIDEGRAPH_MODEL_DIRS`` environment variable (``kind=path`` pairs separated by ``os.pathsep``).
A listing is kept with the modification time of every directory it read and is read again when one
of them changed, so a newly copied file shows up while validating a prompt costs a few ``stat`` calls
instead of a walk over the folders (every POST /prompt lists the model folders of its nodes).
"""

from __future__ import annotations

import functools
import os
import time
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
    return _parse_env_folders(os.environ.get("GUIDEGRAPH_MODEL_DIRS", ""))


@functools.lru_cache(maxsize=8)
def _parse_env_folders(value: str) -> dict[str, list[Path]]:
    """``GUIDEGRAPH_MODEL_DIRS`` as folders per kind (parsed once per value: every lookup asks)."""
    out: dict[str, list[Path]] = {}
    for item in filter(None, value.split(os.pathsep)):
        kind, _, path = item.partition("=")
        if path:
            out.setdefault(kind.strip(), []).append(Path(path).expanduser().resolve())
    return out


def folder_paths(kind: str) -> list[Path]:
    """Directories searched for ``kind``: the environment's first, then the node packs'."""
    return [*_env_folders().get(kind, ()), *_FOLDERS.get(kind, ())]


def folder_kinds() -> list[str]:
    return sorted(set(_FOLDERS) | set(_env_folders()))


def list_files(kind: str, extensions: Iterable[str] = (), bundle_marker: str = "") -> list[str]:
    """Relative names (forward slashes) of the files under every directory of ``kind``, sorted.

    With ``bundle_marker``, a folder holding a file of that name is one entry (its folder name) and
    its contents are not listed (a diffusers pipeline folder with ``model_index.json``).
    """
    exts = tuple(e.lower() for e in extensions)
    key = (kind, exts, bundle_marker, tuple(folder_paths(kind)))
    cached = _LISTINGS.get(key)
    if cached is not None and all(_mtime(d) == t for d, t in cached.directories):
        return list(cached.names)
    began = time.time_ns()
    names: set[str] = set()
    directories: list[tuple[str, int | None]] = []
    for root in key[3]:
        directories.append((str(root), _mtime(str(root))))
        if root.is_dir() and not (bundle_marker and (root / bundle_marker).is_file()):
            _walk(str(root), "", exts, bundle_marker, names, directories, {os.path.realpath(root)})
    listing = _Listing(tuple(directories), tuple(sorted(names)))
    # a directory changed in the last moments may change again within its clock's granularity
    # without a new modification time (racy git): such a listing is not kept
    if all(t is None or t < began - _RACY_NS for _, t in directories):
        _LISTINGS[key] = listing
    return list(listing.names)


@dataclass(frozen=True)
class _Listing:
    directories: tuple[tuple[str, int | None], ...]  # (path, st_mtime_ns) of every directory read
    names: tuple[str, ...]


_RACY_NS = 2_000_000_000
_LISTINGS: dict[tuple[str, tuple[str, ...], str, tuple[Path, ...]], _Listing] = {}


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _walk(
    directory: str,
    prefix: str,
    exts: tuple[str, ...],
    bundle_marker: str,
    names: set[str],
    directories: list[tuple[str, int | None]],
    seen: set[str],
) -> None:
    """Add the files under ``directory`` (named ``prefix``…) to ``names``; follows links to folders
    once each (``seen``: real paths), so a link loop ends."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        if not entry.is_dir():
            if entry.is_file() and (not exts or entry.name.lower().endswith(exts)):
                names.add(prefix + entry.name)
            continue
        real = os.path.realpath(entry.path)
        if real in seen:
            continue
        seen.add(real)
        if bundle_marker and os.path.isfile(os.path.join(entry.path, bundle_marker)):
            names.add(prefix + entry.name)
            directories.append((entry.path, _mtime(entry.path)))  # the bundle may lose its marker
            continue
        directories.append((entry.path, _mtime(entry.path)))
        _walk(entry.path, f"{prefix}{entry.name}/", exts, bundle_marker, names, directories, seen)


def resolve_file(kind: str, name: str) -> Path:
    """The path of ``name`` inside a folder of ``kind`` (a file, or a bundle folder).

    A name that leaves the folder (``..``, an absolute path) is refused by its spelling; links inside
    the folder are followed wherever they point, as the folder's owner put them there (checkpoints
    linked in from another disk are common)."""
    return Path(find_file(kind, name))


def find_file(kind: str, name: str) -> str:
    """:func:`resolve_file` as a string, for the paths asked on every POST (a ``Path`` costs more than
    the lookup)."""
    roots = folder_paths(kind)
    for root in roots:
        base = str(root)
        candidate = os.path.normpath(os.path.join(base, name))
        if candidate.startswith(base + os.sep) and os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"no file {name!r} in the {kind!r} model folders {[str(p) for p in roots]}")


@dataclass(frozen=True)
class FolderFiles:
    """A COMBO option source: the files of one model folder kind, as they are on disk at each call.

    ``bundle_marker`` lists folders that hold that file as single entries (see :func:`list_files`).
    """

    kind: str
    extensions: tuple[str, ...] = ()
    bundle_marker: str = ""

    def __call__(self) -> list[str]:
        return list_files(self.kind, self.extensions, self.bundle_marker)
