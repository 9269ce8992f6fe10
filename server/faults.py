"""Storage faults as clean answers: a full, read-only or replaced folder becomes a 507 naming the folder.

Disk faults are not the client's fault and not a bug either: the answer says which of the server's
folders (output, input, temp, or the data folder holding the database) cannot be written and why, and
the same line is logged for the operator. Paths are shown as :func:`server.redact.redact` shortens them.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from server.config import ServerConfig
from server.jsonio import BadRequest
from server.redact import redact

INSUFFICIENT_STORAGE = 507
DISK_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}
    | {errno.EEXIST, errno.EISDIR, errno.EIO}
)
_DATABASE_FAULTS = ("full", "readonly", "read-only", "disk i/o", "unable to open")


def storage_fault(exc: BaseException, config: ServerConfig) -> BadRequest | None:
    """The 507 for ``exc`` when it is a storage fault, else None (a real bug stays a 500)."""
    if isinstance(exc, sqlite3.Error):
        text = str(exc).lower()
        if not any(mark in text for mark in _DATABASE_FAULTS):
            return None
        return _answer("data", config.data_dir, str(exc))
    if not isinstance(exc, OSError) or exc.errno not in DISK_ERRNOS:
        return None
    kind, root = _folder_of(exc.filename, config)
    return _answer(kind, root, exc.strerror or str(exc))


def _folder_of(filename: object, config: ServerConfig) -> tuple[str, Path | None]:
    """Which configured folder ``filename`` lies in (the innermost), or ('storage', None)."""
    if not isinstance(filename, (str, os.PathLike)):
        return "storage", None
    path = Path(os.path.abspath(filename))
    folders = [("output", config.output), ("input", config.input), ("temp", config.temp)]
    folders.append(("data", config.data_dir))
    found = [
        (kind, Path(os.path.abspath(root)))
        for kind, root in folders
        if path == Path(os.path.abspath(root)) or path.is_relative_to(os.path.abspath(root))
    ]
    if not found:
        return "storage", path
    return max(found, key=lambda item: len(item[1].parts))


def _answer(kind: str, root: Path | None, reason: str) -> BadRequest:
    where = f" ({redact(str(root))})" if root is not None else ""
    return BadRequest(
        f"the {kind} folder{where} cannot be written: {reason}",
        type="insufficient_storage",
        status=INSUFFICIENT_STORAGE,
        details=f"folder: {kind}",
    )
