"""``/internal/*``: what the editor's panels read: the log (Console), input files (Assets → Imported),
model folder paths.

ComfyUI marks these routes as the frontend's own; they answer in the shapes its editor expects.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from aiohttp import web

from graph_runtime import folders
from server import state
from server.files import FOLDER_TYPES, folder
from server.jsonio import fail, json_response, read_json
from server.logs import terminal_size
from server.redact import redact

MAX_LISTED = 10_000


async def logs(request: web.Request) -> web.Response:
    """The recent log as one text."""
    entries = request.app[state.LOGS].entries()
    return json_response("".join(entry["m"] for entry in entries))


async def logs_raw(request: web.Request) -> web.Response:
    """``{entries: [{t, m}], size: {cols, rows}}``, what the Console panel starts from."""
    return json_response({"entries": request.app[state.LOGS].entries(), "size": terminal_size()})


async def logs_subscribe(request: web.Request) -> web.Response:
    """``{enabled, clientId}``: push new lines to that WebSocket client as ``logs`` messages."""
    config = request.app[state.CONFIG]
    body = await read_json(request, config.max_json_bytes, config.max_json_depth)
    client_id, enabled = body.get("clientId"), body.get("enabled")
    if not isinstance(client_id, str) or not 0 < len(client_id) <= 128 or not isinstance(enabled, bool):
        fail(
            "the body must be {enabled: true|false, clientId: <websocket client id>}", type="invalid_request"
        )
    request.app[state.LOGS].subscribe(client_id, enabled)
    return json_response({})


async def files(request: web.Request) -> web.Response:
    """The names of the files directly in the input, output or temp folder, newest first."""
    kind = request.match_info["directory_type"]
    if kind not in FOLDER_TYPES:
        fail(f"the folder must be one of {', '.join(FOLDER_TYPES)}", type="invalid_type")
    root = folder(request.app[state.CONFIG], kind)
    return json_response(await asyncio.to_thread(_newest_first, root))


def _newest_first(root: Path) -> list[str]:
    found = []
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.is_file() and not entry.name.startswith("."):
                found.append((entry.stat().st_mtime, entry.name))
    return [name for _, name in sorted(found, reverse=True)[:MAX_LISTED]]


async def folder_paths(request: web.Request) -> web.Response:
    """Model folder kinds with their directories (shortened: this machine's layout stays private)."""
    return json_response(
        {kind: [redact(str(path)) for path in folders.folder_paths(kind)] for kind in folders.folder_kinds()}
    )
