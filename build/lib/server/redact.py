"""Keep absolute paths of this machine out of anything the server sends or stores.

Tracebacks and exception messages name files by their absolute paths; before they reach a client or
the history, the known roots (the working directory, the Python installation, the home directory) are
replaced by short placeholders, and any other absolute path is cut to its last two components.
"""

from __future__ import annotations

import os
import re
import site
import sys
from functools import cache


@cache
def _roots() -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for path in (*site.getsitepackages(), site.getusersitepackages()):
        pairs.append((path, "<site-packages>"))
    pairs += [
        (os.getcwd(), "."),
        (sys.prefix, "<python>"),
        (sys.base_prefix, "<python>"),
        (os.path.expanduser("~"), "~"),
    ]
    out = []
    for path, mark in pairs:
        for form in {path, os.path.realpath(path)}:
            if form and form != os.sep:
                out.append((form.rstrip(os.sep), mark))
    return sorted(out, key=lambda p: -len(p[0]))


_ABSOLUTE = re.compile(r"(?<![\w.~<>:/])(/[^\s\"':,;()\[\]]+)")


def redact(text: str) -> str:
    """``text`` with absolute paths made relative or shortened."""
    for root, mark in _roots():
        text = text.replace(root + os.sep, mark + os.sep).replace(root, mark)
    return _ABSOLUTE.sub(_shorten, text)


def _shorten(match: re.Match[str]) -> str:
    parts = [p for p in match.group(1).split("/") if p]
    if len(parts) <= 2:
        return match.group(1) if len(parts) <= 1 else "…/" + "/".join(parts[-1:])
    return "…/" + "/".join(parts[-2:])
