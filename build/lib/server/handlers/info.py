"""What the server knows about itself: node definitions, system, features, models."""

from __future__ import annotations

import asyncio
import os
import platform
import sys
from importlib import metadata
from typing import Any

from aiohttp import web

from graph_runtime import folders
from server import state
from server.jsonio import fail, json_response
from server.redact import redact

EDITOR_VERSION = "1.58.1"


async def object_info(request: web.Request) -> web.Response:
    registry = request.app[state.REGISTRY]
    return json_response(await asyncio.to_thread(registry.object_info))


async def object_info_one(request: web.Request) -> web.Response:
    """``{class: nodeDef}``, or ``{}`` for an unknown class (as ComfyUI answers)."""
    registry = request.app[state.REGISTRY]
    name = request.match_info["node_class"]
    if name not in registry.classes:
        return json_response({})
    return json_response(await asyncio.to_thread(registry.object_info_one, name))


def _version() -> str:
    try:
        return metadata.version("guidegraph")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _memory() -> tuple[int, int]:
    """(total, available) bytes of RAM."""
    try:
        with open("/proc/meminfo") as handle:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle if ":" in line}
        return info["MemTotal"], info.get("MemAvailable", info.get("MemFree", 0))
    except (OSError, KeyError, ValueError, IndexError):
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
        except (ValueError, OSError, AttributeError):
            return 0, 0


def _devices(preferred: str | None) -> list[dict[str, Any]]:
    import torch

    out: list[dict[str, Any]] = []
    if torch.cuda.is_available() and (preferred is None or preferred.startswith("cuda")):
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            out.append(
                {
                    "name": f"cuda:{index} {torch.cuda.get_device_name(index)}",
                    "type": "cuda",
                    "index": index,
                    "vram_total": total,
                    "vram_free": free,
                    "torch_vram_total": torch.cuda.memory_reserved(index),
                    "torch_vram_free": torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index),
                }
            )
    if not out:
        kind = preferred or ("mps" if torch.backends.mps.is_available() else "cpu")
        total, free = _memory()
        out.append(
            {
                "name": kind,
                "type": kind.split(":")[0],
                "index": None,
                "vram_total": total,
                "vram_free": free,
                "torch_vram_total": 0,
                "torch_vram_free": 0,
            }
        )
    return out


def system_stats_payload(device: str | None) -> dict[str, Any]:
    import torch

    total, free = _memory()
    return {
        "system": {
            "os": os.name,
            "ram_total": total,
            "ram_free": free,
            "comfyui_version": _version(),
            "guidegraph_version": _version(),
            "required_frontend_version": EDITOR_VERSION,
            "installed_templates_version": None,
            "required_templates_version": None,
            "python_version": sys.version,
            "pytorch_version": torch.__version__,
            "embedded_python": False,
            "platform": platform.system(),
            # Never the real argv (it holds paths and tokens). --disable-api-nodes keeps the editor
            # from fetching release notes from Comfy's servers.
            "argv": ["guidegraph", "serve", "--disable-api-nodes"],
        },
        "devices": _devices(device),
    }


async def system_stats(request: web.Request) -> web.Response:
    device = request.app[state.CONFIG].device
    return json_response(await asyncio.to_thread(system_stats_payload, device))


async def features(request: web.Request) -> web.Response:
    return json_response(server_features(request.app))


def server_features(app: web.Application) -> dict[str, Any]:
    return {"supports_preview_metadata": True, "max_upload_size": app[state.CONFIG].max_upload_bytes}


async def embeddings(request: web.Request) -> web.Response:
    return json_response([])


async def models(request: web.Request) -> web.Response:
    return json_response(folders.folder_kinds())


async def models_in_folder(request: web.Request) -> web.Response:
    kind = request.match_info["folder"]
    if kind not in folders.folder_kinds():
        fail(f"no model folder {kind!r}", type="not_found", status=404)
    return json_response(await asyncio.to_thread(folders.list_files, kind))


async def experiment_models(request: web.Request) -> web.Response:
    """Model folder kinds with their directories, shown relative (never as absolute paths)."""
    return json_response(
        [
            {"name": kind, "folders": [redact(str(path)) for path in folders.folder_paths(kind)]}
            for kind in folders.folder_kinds()
        ]
    )


async def experiment_models_in_folder(request: web.Request) -> web.Response:
    kind = request.match_info["folder"]
    if kind not in folders.folder_kinds():
        fail(f"no model folder {kind!r}", type="not_found", status=404)
    return json_response(await asyncio.to_thread(_model_entries, kind))


def _model_entries(kind: str) -> list[dict[str, Any]]:
    entries = []
    for index, root in enumerate(folders.folder_paths(kind)):
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                stat = path.stat()
                entries.append(
                    {
                        "name": path.relative_to(root).as_posix(),
                        "pathIndex": index,
                        "modified": stat.st_mtime,
                        "size": stat.st_size,
                    }
                )
    return entries


async def i18n(request: web.Request) -> web.Response:
    return json_response({})
