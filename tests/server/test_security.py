"""Cross-site requests, foreign Hosts and the access token."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from aiohttp import WSServerHandshakeError

from graph_runtime.registry import Registry
from server.app import create_app
from server.config import ServerConfig
from server.security import TOKEN_COOKIE, AccessLog
from tests.server.conftest import make_config, served, square_prompt
from tests.server.testnodes import NODES

TOKEN = "correct-horse-battery-staple"


async def test_refuses_foreign_and_null_origins_on_mutating_routes(client) -> None:
    for origin in ("http://evil.example", "null", "http://127.0.0.1.evil.example", "file://"):
        for path in ("/prompt", "/api/queue", "/interrupt", "/api/settings/x", "/upload/image"):
            response = await client.post(path, json={"prompt": square_prompt()}, headers={"Origin": origin})
            assert response.status == 403, (origin, path)
    cross = await client.post(
        "/prompt", json={"prompt": square_prompt()}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross.status == 403
    assert (await (await client.get("/queue")).json())["queue_pending"] == []


async def test_accepts_same_origin_and_originless_clients(client) -> None:
    host = f"{client.server.host}:{client.server.port}"
    same = await client.post(
        "/prompt", json={"prompt": square_prompt()}, headers={"Origin": f"http://{host}"}
    )
    assert same.status == 200
    assert (await client.post("/prompt", json={"prompt": square_prompt()})).status == 200


async def test_refuses_a_host_that_is_not_ours(client) -> None:
    for host in ("evil.example", "evil.example:8188", "10.0.0.1"):
        response = await client.get("/history", headers={"Host": host})
        assert response.status == 403
    assert (await client.get("/history", headers={"Host": "localhost:8188"})).status == 200


async def test_refuses_cross_site_websocket_upgrades(client) -> None:
    with pytest.raises(WSServerHandshakeError) as caught:
        await client.ws_connect("/ws", headers={"Origin": "http://evil.example"})
    assert caught.value.status == 403
    with pytest.raises(WSServerHandshakeError):
        await client.ws_connect("/ws", headers={"Origin": "null"})
    ws = await client.ws_connect("/ws")
    await ws.close()


def test_binding_beyond_loopback_needs_a_token(tmp_path) -> None:
    with pytest.raises(ValueError, match="token"):
        ServerConfig(listen="0.0.0.0").check()
    with pytest.raises(ValueError, match="16"):
        ServerConfig(listen="0.0.0.0", token="short").check()
    ServerConfig(listen="0.0.0.0", token=TOKEN).check()


async def test_token_as_bearer_query_or_cookie(make_client, tmp_path) -> None:
    client = await make_client(make_config(tmp_path, listen="0.0.0.0", token=TOKEN))
    assert (await client.get("/system_stats")).status == 401
    assert (await client.get("/")).status == 401
    assert (await client.get("/system_stats", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await client.get("/system_stats", headers={"Authorization": f"Bearer {TOKEN}"})).status == 200
    page = await client.get("/", params={"token": TOKEN})
    assert page.status == 200 and page.cookies[TOKEN_COOKIE].value == TOKEN
    assert page.cookies[TOKEN_COOKIE]["httponly"]
    assert (await client.get("/api/object_info")).status == 200  # the cookie now travels along
    ws = await client.ws_connect("/ws")
    await ws.close()


async def test_no_route_echoes_absolute_paths(client, config: ServerConfig) -> None:
    roots = [str(config.data_dir.resolve().parent), "/root", "/home", "/work"]
    for path in (
        "/system_stats",
        "/experiment/models",
        "/models",
        "/features",
        "/queue",
        "/history",
        "/object_info",
        "/api/jobs",
    ):
        text = await (await client.get(path)).text()
        for root in roots:
            assert root not in text, (path, root)
    settings = await (await client.get("/api/settings")).json()
    assert settings["Comfy.Notification.ShowVersionUpdates"] is False  # no release-news fetch to Comfy


async def test_unknown_routes_and_methods_answer_json(client) -> None:
    missing = await client.get("/api/nothing-here")
    assert missing.status == 404 and (await missing.json())["error"]["type"] == "not_found"
    wrong = await client.put("/prompt", json={})
    assert wrong.status in (404, 405)
    assert "error" in await wrong.json()


async def test_a_token_in_the_query_or_referer_never_reaches_the_access_log(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_config(tmp_path, token=TOKEN), registry=Registry(NODES))
    async with served(app, access_log_class=AccessLog) as port, aiohttp.ClientSession() as session:
        with caplog.at_level(logging.INFO, logger="aiohttp.access"):
            url = f"http://127.0.0.1:{port}/prompt?x=1&token={TOKEN}"
            async with session.get(url, headers={"Referer": f"http://127.0.0.1/?token={TOKEN}"}) as response:
                assert response.status == 200
    assert TOKEN not in caplog.text
    assert "GET /prompt?x=1&token=<redacted> HTTP/1.1" in caplog.text and "/?token=<redacted>" in caplog.text
