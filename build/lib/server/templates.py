"""Shipped workflows as editor templates: ``workflows/<name>.ui.json`` (+ ``<name>.jpg`` thumbnail).

They are listed under the module ``guidegraph`` by ``/workflow_templates`` and served from
``/workflow_templates/guidegraph/<name>.json``; the default one is opened when the editor would
otherwise show its stock graph (which uses nodes we do not have).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MODULE = "guidegraph"
UI_SUFFIX = ".ui.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,127}$")


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
