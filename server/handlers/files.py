"""``/view`` and ``/upload/image``: files inside the input, output and temp folders only."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import BodyPartReader, web

from server import state
from server.files import (
    INLINE_TYPES,
    check_image,
    contained,
    folder,
    reencode,
    safe_name,
    safe_subfolder,
    split_annotation,
    store_upload,
    with_suffix_for,
)
from server.jsonio import BadRequest, fail, json_response


async def view(request: web.Request) -> web.StreamResponse:
    """``?filename=&type=&subfolder=[&preview=webp;90][&channel=rgb|a|rgba]``."""
    config = request.app[state.CONFIG]
    filename, kind = split_annotation(request.query.get("filename", ""), request.query.get("type", "output"))
    root = folder(config, kind)
    path = contained(root, request.query.get("subfolder", ""), filename)
    if not path.is_file():
        fail("no such file", type="not_found", status=404)
    content_type = INLINE_TYPES.get(path.suffix.lower())
    preview, channel = request.query.get("preview"), request.query.get("channel")
    if content_type and content_type.startswith("image/") and (preview or channel in ("rgb", "a")):
        try:
            data, content_type = await asyncio.to_thread(reencode, path, preview, channel)
        except (OSError, ValueError):
            fail("the file cannot be converted", type="invalid_image", status=415)
        return web.Response(body=data, content_type=content_type)
    headers = {"Cache-Control": "max-age=86400", "Content-Security-Policy": "default-src 'none'; sandbox"}
    if content_type is None:  # never render HTML, JS, SVG or anything else inline
        content_type = "application/octet-stream"
        headers["Content-Disposition"] = f'attachment; filename="{safe_name(path.name)}"'
    headers["Content-Type"] = content_type
    return web.FileResponse(path, headers=headers)


async def upload_image(request: web.Request) -> web.Response:
    """Multipart ``image`` (+ ``type``, ``subfolder``, ``overwrite``) → ``{name, subfolder, type}``."""
    config = request.app[state.CONFIG]
    if not request.content_type.startswith("multipart/"):
        fail("the upload must be multipart/form-data", type="invalid_multipart")
    fields: dict[str, str] = {}
    image: tuple[str, bytes] | None = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                fail("nested multipart is not accepted", type="invalid_multipart")
            if part.name == "image" and part.filename is not None:
                image = (part.filename, await _read_capped(part, config.max_upload_bytes))
            elif part.name in ("type", "subfolder", "overwrite"):
                fields[part.name] = (await _read_capped(part, 4096)).decode("utf-8", "replace")
            else:
                await part.release()
    except (BadRequest, ConnectionResetError):
        raise
    except Exception as exc:  # any parse failure of the client's body is the client's fault
        fail("the multipart body is malformed", type="invalid_multipart", details=type(exc).__name__)
    if image is None:
        fail("the form needs a file field named image", type="invalid_multipart")
    original, data = image
    kind = fields.get("type", "input") or "input"
    root = folder(config, kind)
    subfolder = safe_subfolder(fields.get("subfolder", ""))
    overwrite = fields.get("overwrite", "").lower() in ("true", "1")
    fmt = await asyncio.to_thread(check_image, data)
    name = with_suffix_for(safe_name(original), fmt)
    final = await asyncio.to_thread(store_upload, Path(root), subfolder, name, data, overwrite)
    return json_response({"name": final, "subfolder": subfolder, "type": kind})


async def _read_capped(part: BodyPartReader, cap: int) -> bytes:
    chunks, size = [], 0
    while chunk := await part.read_chunk(64 * 1024):
        size += len(chunk)
        if size > cap:
            fail(f"the upload is larger than {cap} bytes", type="too_large", status=413)
        chunks.append(chunk)
    return b"".join(chunks)
