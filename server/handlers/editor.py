"""The editor: static files from the ``comfyui-frontend-package`` wheel, our templates, our extension."""

from __future__ import annotations

import asyncio
import functools
import io
import json
from pathlib import Path

from aiohttp import web

from graph_runtime.docs import help_markdown
from server import state
from server.jsonio import json_response
from server.templates import MODULE

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
EXTENSIONS = {"default_workflow.js": WEB_DIR / "default_workflow.js"}
NO_CACHE = {"Cache-Control": "no-cache"}


def editor_root() -> Path:
    """The static folder of the installed editor wheel."""
    import comfyui_frontend_package

    return Path(comfyui_frontend_package.__file__).resolve().parent / "static"


async def index(request: web.Request) -> web.StreamResponse:
    root: Path = request.app[state.STATIC_ROOT]  # type: ignore[assignment]
    return web.FileResponse(root / "index.html", headers=NO_CACHE)


async def static_file(request: web.Request) -> web.StreamResponse:
    """Any other editor file; paths are resolved and must stay inside the static folder."""
    root: Path = request.app[state.STATIC_ROOT]  # type: ignore[assignment]
    tail = request.match_info.get("tail", "")
    try:
        path = (root / tail).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        raise web.HTTPNotFound() from None
    if not path.is_relative_to(root) or not path.is_file():
        raise web.HTTPNotFound()
    hashed = path.parent.name == "assets" and "-" in path.stem
    headers = {"Cache-Control": "public, max-age=31536000, immutable"} if hashed else NO_CACHE
    return web.FileResponse(path, headers=headers)


async def extensions(request: web.Request) -> web.Response:
    return json_response([f"/extensions/guidegraph/{name}" for name in EXTENSIONS])


async def extension_file(request: web.Request) -> web.StreamResponse:
    path = EXTENSIONS.get(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={**NO_CACHE, "Content-Type": "text/javascript"})


async def node_help(request: web.Request) -> web.Response:
    """``/extensions/<pack>/docs/<Node>.md`` (or ``.../<Node>/<locale>.md``): the node's help page."""
    registry = request.app[state.REGISTRY]
    name = request.match_info["node"]
    cls = registry.get(name)
    if cls is None or registry.pack(name) != request.match_info["pack"]:
        raise web.HTTPNotFound()
    return web.Response(text=help_markdown(cls), content_type="text/markdown", headers=NO_CACHE)


async def workflow_templates(request: web.Request) -> web.Response:
    """Custom-node templates: none, ours are the editor's own (``/templates/index.json``) with titles."""
    return json_response({})


async def templates_index(request: web.Request) -> web.Response:
    """The shipped workflows as the editor's own templates: one category, a card per workflow."""
    info = await asyncio.to_thread(request.app[state.TEMPLATES].info)
    cards = [
        {"name": name, **text, "mediaType": "image", "mediaSubtype": "jpg", "tags": [MODULE]}
        for name, text in info.items()
    ]
    category = {
        "moduleName": "default",
        "title": "Guidance strategies",
        "category": MODULE,
        "type": "image",
        "templates": cards,
    }
    return json_response([category] if cards else [])


async def core_template_file(request: web.Request) -> web.StreamResponse:
    """``/templates/<name>.json`` and its thumbnail ``/templates/<name>-1.jpg``."""
    file = request.match_info["file"]
    if file.endswith(".json"):
        return await _template(request, file)
    stem, dot, ext = file.rpartition(".")
    if not stem.endswith("-1"):
        raise web.HTTPNotFound()
    return await _template(request, f"{stem[:-2]}{dot}{ext}")


async def template_file(request: web.Request) -> web.StreamResponse:
    """``/workflow_templates/guidegraph/<name>.json`` and its ``<name>.jpg`` thumbnail."""
    if request.match_info["module"] != MODULE:
        raise web.HTTPNotFound()
    return await _template(request, request.match_info["file"])


async def _template(request: web.Request, file: str) -> web.StreamResponse:
    templates = request.app[state.TEMPLATES]
    name, _, ext = file.rpartition(".")
    if ext == "json":
        found = templates.workflow(name)
    elif ext in ("jpg", "jpeg", "webp", "png"):
        found = templates.thumbnail(name)
        if found is None and templates.workflow(name) is not None:
            # The template browser always asks for a thumbnail; a plain card beats a console error.
            return web.Response(body=placeholder_thumbnail(), content_type="image/jpeg", headers=NO_CACHE)
    else:
        found = None
    if found is None:
        raise web.HTTPNotFound()
    return web.FileResponse(found, headers=NO_CACHE)


@functools.cache
def placeholder_thumbnail() -> bytes:
    """A 256 px dark card with a node-graph motif, for workflows shipped without a picture."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (256, 256), (32, 34, 40))
    draw = ImageDraw.Draw(image)
    boxes = [(24, 48, 104, 96), (24, 160, 104, 208), (152, 104, 232, 152)]
    for box in boxes:
        draw.rounded_rectangle(box, radius=8, fill=(58, 62, 74), outline=(110, 150, 220), width=2)
    for y in (72, 184):
        draw.line((104, y, 152, 128), fill=(110, 150, 220), width=3)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


async def default_workflow(request: web.Request) -> web.Response:
    """The workflow the editor opens instead of its stock graph: ``{name, workflow}``."""
    templates = request.app[state.TEMPLATES]
    name = templates.default()
    path = templates.workflow(name) if name else None
    if name is None or path is None:
        return json_response({"name": None, "workflow": None})
    return json_response({"name": name, "workflow": json.loads(path.read_text("utf-8"))})


async def templates_logo(request: web.Request) -> web.Response:
    return json_response({})


async def empty_css(request: web.Request) -> web.Response:
    return web.Response(text="", content_type="text/css", headers=NO_CACHE)


async def global_subgraphs(request: web.Request) -> web.Response:
    return json_response({})
