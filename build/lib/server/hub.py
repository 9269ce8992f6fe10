"""WebSocket fan-out: one bounded send queue and one sender task per client.

The worker thread never touches a socket: it hands messages to the event loop, which appends them to
each addressed client's queue without waiting. A client whose queue is full loses preview frames
first; when a JSON message does not fit either, the client is disconnected (it can reconnect and catch
up from ``/jobs`` and ``/history``). A slow or dead client therefore never blocks execution or the
other clients.

``status`` (the queue length) is coalesced: ``send_status`` only records the latest value and schedules
one broadcast for the next event-loop tick, at most once per ``status_interval_s``. The broadcast reads
the value when it runs, so a client sees the latest queue length after every message that was handed
to the hub before that value was set (``status`` 0 arrives after the last prompt's
``execution_success``), and a burst of queue changes costs every client one frame instead of one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
JPEG = 1


@dataclass(eq=False)
class Client:
    """One connected socket."""

    sid: str
    ws: web.WebSocketResponse
    queue: asyncio.Queue[str | bytes]
    supports_preview_metadata: bool = False
    sender: asyncio.Task[None] | None = None
    dropped: int = field(default=0)


class Hub:
    """Who is connected, and how messages reach them."""

    def __init__(
        self, queue_size: int = 256, send_timeout_s: float = 10.0, status_interval_s: float = 0.02
    ) -> None:
        self._queue_size = queue_size
        self._send_timeout_s = send_timeout_s
        self._status_interval_s = status_interval_s
        self._clients: dict[str, list[Client]] = {}
        self._status = 0
        self._status_flush: asyncio.Handle | None = None
        self._status_sent_at = -math.inf
        self.status_broadcasts = 0

    @property
    def client_count(self) -> int:
        return sum(len(c) for c in self._clients.values())

    def connect(self, sid: str, ws: web.WebSocketResponse) -> Client:
        client = Client(sid=sid, ws=ws, queue=asyncio.Queue(self._queue_size))
        client.sender = asyncio.get_running_loop().create_task(self._send_loop(client))
        self._clients.setdefault(sid, []).append(client)
        return client

    async def disconnect(self, client: Client) -> None:
        peers = self._clients.get(client.sid, [])
        if client in peers:
            peers.remove(client)
            if not peers:
                del self._clients[client.sid]
        if client.sender is not None and client.sender is not asyncio.current_task():
            client.sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await client.sender
        with contextlib.suppress(Exception):
            await client.ws.close()

    async def close_all(self) -> None:
        if self._status_flush is not None:
            self._status_flush.cancel()
            self._status_flush = None
        for peers in list(self._clients.values()):
            for client in list(peers):
                await self.disconnect(client)

    # -- sending (event loop only; never awaits a socket) ----------------------------------------

    def send(self, type: str, data: dict[str, Any], sid: str | None = None) -> None:
        """A JSON message to the clients with ``sid``, or to everyone when ``sid`` is None."""
        frame = json.dumps({"type": type, "data": data}, separators=(",", ":"), default=str)
        for client in self._targets(sid):
            self._offer(client, frame, droppable=False)

    def send_status(self, queue_remaining: int) -> None:
        """Tell everyone the queue length, coalesced with other changes in this tick (or interval)."""
        self._status = queue_remaining
        if self._status_flush is not None:
            return  # the pending broadcast has not run yet; it will send this value
        loop = asyncio.get_running_loop()
        wait = self._status_sent_at + self._status_interval_s - loop.time()
        if wait > 0:
            self._status_flush = loop.call_later(wait, self._flush_status)
        else:
            self._status_flush = loop.call_soon(self._flush_status)

    def _flush_status(self) -> None:
        self._status_flush = None
        self._status_sent_at = asyncio.get_running_loop().time()
        self.status_broadcasts += 1
        self.send("status", status_payload(self._status))

    def send_to(self, client: Client, type: str, data: dict[str, Any]) -> None:
        self._offer(client, json.dumps({"type": type, "data": data}, default=str), droppable=False)

    def send_preview(self, image: bytes, meta: dict[str, Any], sid: str | None) -> None:
        """A binary preview: type 4 with metadata for clients that asked for it, else type 1."""
        plain = struct.pack(">II", PREVIEW_IMAGE, JPEG) + image
        meta_json = json.dumps(meta, separators=(",", ":")).encode()
        rich = struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta_json)) + meta_json + image
        for client in self._targets(sid):
            self._offer(client, rich if client.supports_preview_metadata else plain, droppable=True)

    def _targets(self, sid: str | None) -> list[Client]:
        if sid is None:
            return [c for peers in self._clients.values() for c in peers]
        return list(self._clients.get(sid, ()))

    def _offer(self, client: Client, frame: str | bytes, droppable: bool) -> None:
        if client.queue.full() and not droppable:
            # Make room by discarding queued previews; a client that is still full is too slow.
            kept = [f for f in _drain(client.queue) if isinstance(f, str)]
            for f in kept:
                client.queue.put_nowait(f)
        try:
            client.queue.put_nowait(frame)
        except asyncio.QueueFull:
            client.dropped += 1
            if not droppable:
                log.warning("disconnecting slow websocket client %s", client.sid)
                asyncio.get_running_loop().create_task(self.disconnect(client))

    async def _send_loop(self, client: Client) -> None:
        try:
            while True:
                frame = await client.queue.get()
                # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancel that lands as the send
                # completes, and this task then waits on the queue forever (and shutdown with it).
                async with asyncio.timeout(self._send_timeout_s):
                    if isinstance(frame, str):
                        await client.ws.send_str(frame)
                    else:
                        await client.ws.send_bytes(frame)
        except asyncio.CancelledError:
            raise
        except Exception:  # a dead or stuck socket: drop this client only
            log.info("websocket client %s went away", client.sid)
            asyncio.get_running_loop().create_task(self.disconnect(client))


def status_payload(queue_remaining: int, sid: str | None = None) -> dict[str, Any]:
    """``{status: {exec_info: {queue_remaining}}, sid?}``; ``sid`` only in a client's first message."""
    data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": queue_remaining}}}
    if sid is not None:
        data["sid"] = sid
    return data


def _drain(queue: asyncio.Queue[str | bytes]) -> list[str | bytes]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
