"""Shipped workflows as editor templates: ``workflows/<name>.ui.json`` (+ ``<name>.jpg`` thumbnail).

The folder is ``--workflows-dir`` when given, else the ``workflows`` package installed with guidegraph
(package data), so the templates are there wherever the server starts.

The editor lists them as its own templates (``/templates/index.json``), with the title and description
that ``templates.json`` in the same folder gives each one, so its cards say more than a file name;
files are served from ``/templates/<name>.json`` and ``/templates/<name>-1.jpg`` (and, as for a
custom-node pack, ``/workflow_templates/guidegraph/<name>.json``). The default one is opened when the
editor would otherwise show its stock graph (which uses nodes we do not have).
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

MODULE = "guidegraph"
UI_SUFFIX = ".ui.json"
INDEX = "templates.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,127}$")


def shipped_workflows() -> Path:
    """The folder of the workflows installed with the package."""
    package = importlib.import_module("workflows")
    return Path(package.__file__ or "").resolve().parent


@dataclass(frozen=True)
class Templates:
    """The template folder, re-read on every call so new workflows show up without a restart."""

    root: Path
    preferred: str | None = None

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name[: -len(UI_SUFFIX)]
            for p in self.root.iterdir()
            if p.is_file() and p.name.endswith(UI_SUFFIX) and _NAME.match(p.name[: -len(UI_SUFFIX)])
        )

    def info(self) -> dict[str, dict[str, str]]:
        """``{name: {title, description}}`` for every workflow (the name and no description where
        ``templates.json`` says nothing)."""
        try:
            index = json.loads((self.root / INDEX).read_text("utf-8"))
        except (OSError, ValueError):
            index = {}
        index = index if isinstance(index, dict) else {}
        out = {}
        for name in self.names():
            found = index.get(name)
            entry: dict[str, object] = found if isinstance(found, dict) else {}
            out[name] = {
                "title": str(entry.get("title") or name),
                "description": str(entry.get("description") or ""),
            }
        return out

    def default(self) -> str | None:
        """The configured default, else ``showcase``, else the first workflow."""
        names = self.names()
        for choice in (self.preferred, "showcase"):
            if choice and choice in names:
                return choice
        return names[0] if names else None

    def workflow(self, name: str) -> Path | None:
        return self._file(name, UI_SUFFIX)

    def thumbnail(self, name: str) -> Path | None:
        for ext in (".jpg", ".webp", ".png"):
            found = self._file(name, ext)
            if found is not None:
                return found
        return None

    def _file(self, name: str, suffix: str) -> Path | None:
        if not _NAME.match(name) or ".." in name:
            return None
        path = self.root / f"{name}{suffix}"
        return path if path.is_file() else None
