"""What the server knows about itself: node definitions, system, features, models."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import struct
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from aiohttp import web

from graph_runtime import folders
from graph_runtime.memory import ram
from server import state
from server.files import FOLDER_TYPES
from server.handlers.editor import placeholder_thumbnail
from server.jsonio import fail, json_response
from server.redact import redact

EDITOR_VERSION = "1.58.1"
MODEL_EXTENSIONS = (".safetensors", ".sft")  # weights are safetensors only; pickles are refused
PREVIEW_EXTENSIONS = (".webp", ".png", ".jpg", ".jpeg")
MAX_HEADER_BYTES = 100 * 1024 * 1024


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
        total, free = ram()
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


def system_stats_payload(device: str | None, argv: Sequence[str]) -> dict[str, Any]:
    import torch

    total, free = ram()
    return {
        "system": {
            "os": os.name,
            "ram_total": total,
            "ram_free": free,
            # The editor labels this "ComfyUI <version>" (About, bug reports): say what answers instead.
            "comfyui_version": f"compatible (guidegraph {_version()})",
            "guidegraph_version": _version(),
            "required_frontend_version": EDITOR_VERSION,
            "installed_templates_version": None,
            "required_templates_version": None,
            "python_version": sys.version,
            "pytorch_version": torch.__version__,
            "embedded_python": False,
            "platform": platform.system(),
            # The real command line with token values and absolute paths redacted. (ComfyUI's release
            # notes stay unfetched through the Comfy.Notification.ShowVersionUpdates default instead.)
            "argv": list(argv),
        },
        "devices": _devices(device),
    }


async def system_stats(request: web.Request) -> web.Response:
    config = request.app[state.CONFIG]
    return json_response(await asyncio.to_thread(system_stats_payload, config.device, config.argv))


async def features(request: web.Request) -> web.Response:
    return json_response(server_features(request.app))


def server_features(app: web.Application) -> dict[str, Any]:
    return {"supports_preview_metadata": True, "max_upload_size": app[state.CONFIG].max_upload_bytes}


async def embeddings(request: web.Request) -> web.Response:
    return json_response([])


async def models(request: web.Request) -> web.Response:
    return json_response(model_kinds())


def model_kinds() -> list[str]:
    """Folder kinds that hold models (``input`` is a folder kind for LoadImage, not a model folder)."""
    return [kind for kind in folders.folder_kinds() if kind not in FOLDER_TYPES]


def _model_kind(request: web.Request) -> str:
    kind = request.match_info["folder"]
    if kind not in model_kinds():
        fail(f"no model folder {kind!r}", type="not_found", status=404)
    return kind


async def models_in_folder(request: web.Request) -> web.Response:
    kind = _model_kind(request)
    return json_response(await asyncio.to_thread(folders.list_files, kind, MODEL_EXTENSIONS))


async def experiment_models(request: web.Request) -> web.Response:
    """Model folder kinds with their directories, shown relative (never as absolute paths)."""
    return json_response(
        [
            {"name": kind, "folders": [redact(str(path)) for path in folders.folder_paths(kind)]}
            for kind in model_kinds()
        ]
    )


async def experiment_models_in_folder(request: web.Request) -> web.Response:
    return json_response(await asyncio.to_thread(_model_entries, _model_kind(request)))


def _model_entries(kind: str) -> list[dict[str, Any]]:
    """The weight files of one kind (model cards, pictures and the like are not models)."""
    entries = []
    for index, root in enumerate(folders.folder_paths(kind)):
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if (
                path.is_file()
                and path.name.lower().endswith(MODEL_EXTENSIONS)
                and not path.name.startswith(".")
            ):
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


async def model_preview(request: web.Request) -> web.StreamResponse:
    """``/experiment/models/preview/{folder}/{index}/{name}.webp``: the picture beside a model (same
    stem, any of webp, png, jpg), else a neutral placeholder, so the library never shows a broken image."""
    kind = _model_kind(request)
    roots = folders.folder_paths(kind)
    try:
        root = roots[int(request.match_info["index"])]
    except (ValueError, IndexError):
        fail("no such model folder index", type="not_found", status=404)
    stem = Path(request.match_info["file"]).with_suffix("")
    for ext in PREVIEW_EXTENSIONS:
        candidate = (root / f"{stem}{ext}").resolve()
        if candidate.is_relative_to(root) and candidate.is_file():
            return web.FileResponse(candidate, headers={"Cache-Control": "no-cache"})
    return web.Response(body=placeholder_thumbnail(), content_type="image/jpeg")


async def view_metadata(request: web.Request) -> web.Response:
    """``/view_metadata/{folder}?filename=``: a safetensors header's ``__metadata__`` (``{}`` if none)."""
    kind = _model_kind(request)
    name = request.query.get("filename", "")
    try:
        path = folders.resolve_file(kind, name)
    except (FileNotFoundError, ValueError, OSError):
        fail(f"no model {name!r} in {kind}", type="not_found", status=404)
    return json_response(await asyncio.to_thread(safetensors_metadata, path))


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The string map under ``__metadata__`` in a safetensors header, read without loading tensors."""
    if path.suffix.lower() not in MODEL_EXTENSIONS:
        return {}
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > MAX_HEADER_BYTES:
                return {}
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error):
        return {}
    found = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


async def i18n(request: web.Request) -> web.Response:
    return json_response({})
