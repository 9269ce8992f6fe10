"""One local user's state: ``/users``, ``/settings``, ``/userdata`` (saved workflows and the like).

Everything lives under ``<data_dir>/default/``; every path a client names is resolved with
``realpath`` and must stay inside that folder. Writes are atomic.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from aiohttp import web

from server import state
from server.files import atomic_write
from server.jsonio import fail, json_response, parse_json, query_bool, read_body, read_json

USER = "default"
SETTINGS_FILE = "comfy.settings.json"
# Defaults that differ from the editor's own, until the user changes them. ComfyUI's version updates
# are news about another program, fetched from Comfy's servers: off here.
DEFAULT_SETTINGS: dict[str, Any] = {"Comfy.Notification.ShowVersionUpdates": False}


def user_root(app: web.Application) -> Path:
    root = app[state.CONFIG].data_dir / USER
    root.mkdir(parents=True, exist_ok=True)
    return Path(os.path.realpath(root))


def _inside(root: Path, relative: str) -> Path:
    relative = relative.replace("\\", "/")
    if not relative or "\x00" in relative or relative.startswith("/") or ".." in relative.split("/"):
        fail("the path must stay inside the user folder", type="invalid_path")
    path = Path(os.path.realpath(root / relative))
    if not path.is_relative_to(root) or path == root:
        fail("the path must stay inside the user folder", type="invalid_path")
    return path


# -- users and settings ----------------------------------------------------------------------------


async def get_users(request: web.Request) -> web.Response:
    """Single-user mode (a ``users`` map would switch the editor to its login screen)."""
    return json_response({"storage": "server", "migrated": True})


async def post_users(request: web.Request) -> web.Response:
    fail("this server has a single local user", type="single_user")


def _load_settings(app: web.Application) -> dict[str, Any]:
    path = user_root(app) / SETTINGS_FILE
    try:
        value = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _save_settings(app: web.Application, settings: dict[str, Any]) -> None:
    data = json.dumps(settings, indent=2, allow_nan=False).encode()
    atomic_write(user_root(app) / SETTINGS_FILE, data)


async def get_settings(request: web.Request) -> web.Response:
    return json_response({**DEFAULT_SETTINGS, **await asyncio.to_thread(_load_settings, request.app)})


async def get_setting(request: web.Request) -> web.Response:
    settings = {**DEFAULT_SETTINGS, **await asyncio.to_thread(_load_settings, request.app)}
    return json_response(settings.get(request.match_info["setting_id"]))


async def post_settings(request: web.Request) -> web.Response:
    config = request.app[state.CONFIG]
    body = await read_json(request, config.max_json_bytes, config.max_json_depth)
    async with request.app[state.SETTINGS_LOCK]:
        settings = await asyncio.to_thread(_load_settings, request.app)
        settings.update(body)
        await asyncio.to_thread(_save_settings, request.app, settings)
    return json_response({})


async def post_setting(request: web.Request) -> web.Response:
    config = request.app[state.CONFIG]
    value = await read_json(request, config.max_json_bytes, config.max_json_depth, kind=None)
    setting_id = request.match_info["setting_id"]
    if len(setting_id) > 200:
        fail("the setting id is too long", type="invalid_request")
    async with request.app[state.SETTINGS_LOCK]:
        settings = await asyncio.to_thread(_load_settings, request.app)
        settings[setting_id] = value
        await asyncio.to_thread(_save_settings, request.app, settings)
    return json_response({})


# -- user files -----------------------------------------------------------------------------------


def _info(root: Path, path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {
        "path": path.relative_to(root).as_posix(),
        "size": stat.st_size,
        "modified": int(stat.st_mtime * 1000),
    }


async def list_userdata(request: web.Request) -> web.Response:
    """``?dir=workflows&recurse=&full_info=&split=``: files under one folder, relative to it."""
    root = user_root(request.app)
    directory = _inside(root, request.query.get("dir", ""))
    if not directory.is_dir():  # the editor asks for workflows/ and subgraphs/ before any exist
        return json_response([])
    recurse, full, split = (query_bool(request, n) for n in ("recurse", "full_info", "split"))

    def scan() -> list[Any]:
        found = directory.rglob("*") if recurse else directory.glob("*")
        files = sorted(p for p in found if p.is_file() and Path(os.path.realpath(p)).is_relative_to(root))
        out: list[Any] = []
        for path in files[:10_000]:
            rel = path.relative_to(directory).as_posix()
            if full:
                out.append({**_info(directory, path), "path": rel})
            elif split:
                out.append([rel, *rel.split("/")])
            else:
                out.append(rel)
        return out

    return json_response(await asyncio.to_thread(scan))


async def list_userdata_v2(request: web.Request) -> web.Response:
    """``?path=``: the entries of one folder with their type, size and modification time."""
    root = user_root(request.app)
    raw = request.query.get("path", "").strip("/")
    directory = _inside(root, raw) if raw else root
    if not directory.is_dir():
        fail("no such folder", type="not_found", status=404)

    def scan() -> list[dict[str, Any]]:
        out = []
        for path in sorted(directory.iterdir())[:10_000]:
            stat = path.stat()
            out.append(
                {
                    "name": path.name,
                    "path": path.relative_to(root).as_posix(),
                    "type": "directory" if path.is_dir() else "file",
                    "size": stat.st_size if path.is_file() else None,
                    "modified": int(stat.st_mtime * 1000),
                }
            )
        return out

    return json_response(await asyncio.to_thread(scan))


async def get_userdata(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    path = _inside(user_root(request.app), name)
    if not path.is_file():
        if name == "user.css":
            return web.Response(text="", content_type="text/css")
        if name == "comfy.templates.json":  # the editor's legacy user templates, read at boot
            return json_response([])
        fail("no such file", type="not_found", status=404)
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/octet-stream" if path.suffix != ".json" else "application/json",
            "Cache-Control": "no-cache",
        },
    )


async def post_userdata(request: web.Request) -> web.Response:
    """Write a user file (``?overwrite=false`` refuses to replace, 409). JSON files must parse."""
    config = request.app[state.CONFIG]
    root = user_root(request.app)
    path = _inside(root, request.match_info["file"])
    data = await read_body(request, config.max_upload_bytes)
    if path.suffix == ".json":
        parse_json(data, config.max_json_depth * 4)
    overwrite = query_bool(request, "overwrite", True)
    if path.exists() and (not overwrite or path.is_dir()):
        fail("the file exists", type="conflict", status=409)

    def write() -> dict[str, Any]:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
        return _info(root, path)

    info = await asyncio.to_thread(write)
    return json_response(info if query_bool(request, "full_info") else info["path"])


async def delete_userdata(request: web.Request) -> web.Response:
    path = _inside(user_root(request.app), request.match_info["file"])
    if not path.is_file():
        fail("no such file", type="not_found", status=404)
    await asyncio.to_thread(path.unlink)
    return web.Response(status=204)


async def move_userdata(request: web.Request) -> web.Response:
    root = user_root(request.app)
    source = _inside(root, request.match_info["file"])
    dest = _inside(root, request.match_info["dest"])
    if not source.is_file():
        fail("no such file", type="not_found", status=404)
    if dest.exists() and not query_bool(request, "overwrite", False):
        fail("the destination exists", type="conflict", status=409)

    def move() -> dict[str, Any]:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, dest)
        return _info(root, dest)

    info = await asyncio.to_thread(move)
    return json_response(info if query_bool(request, "full_info") else info["path"])
