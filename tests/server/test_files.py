"""/view and /upload/image: only the three folders, real paths, images only, never HTML inline."""

from __future__ import annotations

import io
import os

import aiohttp
from PIL import Image

from server.config import ServerConfig


def png_bytes(size: int = 4) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (size, size), (10, 20, 30, 128)).save(buffer, "PNG")
    return buffer.getvalue()


def form(data: bytes, filename: str = "cat.png", **fields: str) -> aiohttp.FormData:
    payload = aiohttp.FormData()
    payload.add_field("image", data, filename=filename, content_type="image/png")
    for name, value in fields.items():
        payload.add_field(name, value)
    return payload


async def test_upload_then_view_round_trip(client, config: ServerConfig) -> None:
    response = await client.post("/upload/image", data=form(png_bytes()))
    assert response.status == 200
    body = await response.json()
    assert body == {"name": "cat.png", "subfolder": "", "type": "input"}
    view = await client.get("/view", params={"filename": "cat.png", "type": "input"})
    assert view.status == 200 and await view.read() == png_bytes()
    annotated = await client.get("/api/view", params={"filename": "cat.png [input]"})
    assert annotated.status == 200


async def test_upload_names_are_sanitised_and_deduplicated(client, config: ServerConfig) -> None:
    first = await (await client.post("/upload/image", data=form(png_bytes(), "../../evil.png"))).json()
    assert first["name"] == "evil.png"
    same = await (await client.post("/upload/image", data=form(png_bytes(), "evil.png"))).json()
    assert same["name"] == "evil.png"  # identical content reuses the file
    other = await (await client.post("/upload/image", data=form(png_bytes(6), "evil.png"))).json()
    assert other["name"] == "evil (1).png"
    renamed = await (await client.post("/upload/image", data=form(png_bytes(), ".hidden<x>.txt"))).json()
    assert renamed["name"] == "hidden_x_.txt.png"
    sub = await client.post("/upload/image", data=form(png_bytes(), "a.png", subfolder="../../x"))
    assert sub.status == 400
    nested = await (
        await client.post("/upload/image", data=form(png_bytes(), "a.png", subfolder="masks"))
    ).json()
    assert nested["subfolder"] == "masks" and (config.input / "masks" / "a.png").is_file()
    overwritten = await client.post(
        "/upload/image", data=form(png_bytes(8), "a.png", subfolder="masks", overwrite="true")
    )
    assert (await overwritten.json())["name"] == "a.png"


async def test_upload_refuses_what_is_not_an_image(client, config: ServerConfig) -> None:
    html = await client.post("/upload/image", data=form(b"<html><script>alert(1)</script></html>", "x.png"))
    assert html.status == 415
    svg = await client.post("/upload/image", data=form(b'<svg xmlns="http://www.w3.org/2000/svg"/>', "x.svg"))
    assert svg.status == 415
    bad_type = await client.post("/upload/image", data=form(png_bytes(), "x.png", type="models"))
    assert bad_type.status == 400
    no_file = aiohttp.FormData()
    no_file.add_field("type", "input")
    assert (await client.post("/upload/image", data=no_file)).status == 400
    not_multipart = await client.post("/upload/image", data=b"raw", headers={"Content-Type": "image/png"})
    assert not_multipart.status == 400
    broken = await client.post(
        "/upload/image",
        data=b"--zzz\r\ngarbage",
        headers={"Content-Type": "multipart/form-data; boundary=zzz"},
    )
    assert 400 <= broken.status < 500
    assert [p.name for p in config.input.iterdir()] == ["example.png"]  # only the seeded picture


async def test_upload_refuses_files_over_the_cap(make_client) -> None:
    client = await make_client(max_upload_bytes=1000)
    response = await client.post("/upload/image", data=form(b"\x89PNG" + b"0" * 5000))
    assert response.status == 413


async def test_view_refuses_paths_that_leave_the_folders(client, config: ServerConfig, tmp_path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    config.output.mkdir(parents=True, exist_ok=True)
    os.symlink(secret, config.output / "link.png")
    os.symlink(tmp_path, config.output / "linkdir")
    attempts = [
        {"filename": "../secret.png", "type": "output"},
        {"filename": "secret.png", "subfolder": "..", "type": "output"},
        {"filename": "secret.png", "subfolder": "/tmp", "type": "output"},
        {"filename": "/etc/passwd", "type": "output"},
        {"filename": "link.png", "type": "output"},
        {"filename": "secret.png", "subfolder": "linkdir", "type": "output"},
        {"filename": "x.png", "type": "models"},
        {"filename": "", "type": "output"},
        {"filename": "a\x00.png", "type": "output"},
    ]
    for params in attempts:
        response = await client.get("/view", params=params)
        assert response.status in (400, 404), params
        assert (await response.json())["error"]
    assert (await client.get("/view", params={"filename": "none.png"})).status == 404


async def test_view_never_serves_html_js_or_svg_inline(client, config: ServerConfig) -> None:
    config.output.mkdir(parents=True, exist_ok=True)
    for name in ("page.html", "code.js", "pic.svg", "page.xhtml"):
        (config.output / name).write_text("<script>alert(1)</script>")
        response = await client.get("/view", params={"filename": name})
        assert response.status == 200
        assert response.content_type == "application/octet-stream"
        assert response.headers["Content-Disposition"].startswith("attachment")
        assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_view_can_reencode_a_preview_and_pick_channels(client, config: ServerConfig) -> None:
    config.output.mkdir(parents=True, exist_ok=True)
    (config.output / "a.png").write_bytes(png_bytes(16))
    webp = await client.get("/view", params={"filename": "a.png", "preview": "webp;50"})
    assert webp.status == 200 and webp.content_type == "image/webp"
    jpeg = await client.get("/view", params={"filename": "a.png", "preview": "jpeg;80", "channel": "rgb"})
    assert jpeg.content_type == "image/jpeg"
    alpha = await client.get("/view", params={"filename": "a.png", "channel": "a"})
    with Image.open(io.BytesIO(await alpha.read())) as image:
        assert image.mode == "RGBA" and image.getchannel("A").getextrema() == (128, 128)


async def test_an_empty_input_folder_gets_an_example_picture_for_load_image(
    client, config: ServerConfig
) -> None:
    [example] = config.input.iterdir()
    assert example.name == "example.png"
    view = await client.get("/view", params={"filename": "example.png", "type": "input"})
    assert view.status == 200 and view.content_type == "image/png"
