"""The editor's panels: Console (/internal/logs*), Assets → Imported (/internal/files), the model library."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import time
from pathlib import Path

import pytest

from graph_runtime.folders import register_folders
from server import state
from server.config import ServerConfig
from tests.server.test_files import form, png_bytes


async def test_console_reads_the_recent_log_and_follows_it_over_the_websocket(client) -> None:
    logging.getLogger("guidegraph.test").warning("before the console opened")
    raw = await (await client.get("/internal/logs/raw")).json()
    assert set(raw["size"]) == {"cols", "rows"}
    assert any("before the console opened" in entry["m"] for entry in raw["entries"])
    assert all(entry["m"].endswith("\n") and "T" in entry["t"] for entry in raw["entries"])
    assert "before the console opened" in await (await client.get("/api/internal/logs")).json()

    ws = await client.ws_connect("/ws?clientId=console")
    await ws.receive_json()  # status
    answer = await client.patch("/internal/logs/subscribe", json={"enabled": True, "clientId": "console"})
    assert answer.status == 200
    logging.getLogger("guidegraph.test").warning("while it is open at %s", Path.cwd())
    message = await asyncio.wait_for(ws.receive_json(), 5)
    assert message["type"] == "logs"
    [entry] = message["data"]["entries"]
    assert "while it is open at" in entry["m"] and str(Path.cwd()) not in entry["m"]
    await client.patch("/internal/logs/subscribe", json={"enabled": False, "clientId": "console"})
    logging.getLogger("guidegraph.test").warning("after unsubscribing")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(ws.receive_json(), 0.3)
    await ws.close()
    assert (await client.patch("/internal/logs/subscribe", json={"enabled": "yes"})).status == 400


async def test_imported_assets_list_input_files_newest_first(client, config: ServerConfig) -> None:
    for index, name in enumerate(("old.png", "new.png")):
        assert (await client.post("/upload/image", data=form(png_bytes(4 + index), name))).status == 200
        os.utime(config.input / name, (time.time() + 10 + index * 10,) * 2)
    (config.input / ".upload-partial.part").write_bytes(b"x")
    names = await (await client.get("/internal/files/input")).json()
    assert names[:2] == ["new.png", "old.png"] and ".upload-partial.part" not in names
    assert await (await client.get("/api/internal/files/output")).json() == []
    assert (await client.get("/internal/files/etc")).status == 400


def _safetensors(path: Path, metadata: dict[str, str]) -> None:
    header = json.dumps({"__metadata__": metadata}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)


async def test_model_library_lists_weights_only_and_answers_its_previews_and_metadata(
    client, tmp_path: Path
) -> None:
    models = tmp_path / "library"
    models.mkdir()
    _safetensors(models / "tiny.safetensors", {"architecture": "unet"})
    (models / "tiny.md").write_text("# model card")
    register_folders({"library_test": [models]})
    assert "input" not in await (await client.get("/models")).json()
    assert "input" not in [e["name"] for e in await (await client.get("/experiment/models")).json()]
    assert (await client.get("/experiment/models/input")).status == 404
    assert await (await client.get("/models/library_test")).json() == ["tiny.safetensors"]
    [entry] = await (await client.get("/api/experiment/models/library_test")).json()
    assert entry["name"] == "tiny.safetensors" and entry["pathIndex"] == 0
    preview = await client.get("/api/experiment/models/preview/library_test/0/tiny.webp")
    assert preview.status == 200 and preview.content_type.startswith("image/")
    meta = await client.get("/api/view_metadata/library_test", params={"filename": "tiny.safetensors"})
    assert await meta.json() == {"architecture": "unet"}
    missing = await client.get("/api/view_metadata/library_test", params={"filename": "../x.safetensors"})
    assert missing.status == 404


async def test_logs_stop_being_collected_when_the_server_stops(make_client) -> None:
    client = await make_client()
    buffer = client.app[state.LOGS]
    assert buffer in logging.getLogger().handlers
    await client.close()
    assert buffer not in logging.getLogger().handlers
