"""``/ws?clientId=``: status with ``sid`` on connect, the feature_flags handshake, then server pushes."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

from aiohttp import WSMsgType, web

from server import state
from server.handlers.info import server_features
from server.hub import status_payload

_SID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


async def websocket(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    requested = request.query.get("clientId", "")
    sid = requested if _SID.match(requested) else uuid.uuid4().hex
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=64 * 1024)
    await ws.prepare(request)
    hub = app[state.HUB]
    remaining = await asyncio.to_thread(app[state.STORE].queue_remaining)
    client = hub.connect(sid, ws)  # after the await: our status with sid is this client's first message
    try:
        hub.send_to(client, "status", status_payload(remaining, sid))
        for running in app[state.WORKER].running_all():
            if running.client_id == sid and running.node is not None:
                hub.send_to(
                    client,
                    "executing",
                    {"node": running.node, "display_node": running.node, "prompt_id": running.prompt_id},
                )
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                payload = json.loads(message.data)
            except ValueError:
                continue
            if isinstance(payload, dict) and payload.get("type") == "feature_flags":
                flags = payload.get("data")
                client.supports_preview_metadata = isinstance(flags, dict) and bool(
                    flags.get("supports_preview_metadata")
                )
                hub.send_to(client, "feature_flags", server_features(app))
    finally:
        await hub.disconnect(client)
    return ws
