"""WebSocket fan-out: one send queue and one sender task per client.

The worker thread never touches a socket: it hands messages to the event loop, which appends them to
each addressed client's queue without waiting. A slow or dead client therefore never blocks execution
or the other clients, and a client is never cut off because its own prompt was large:

- Up to ``queue_size`` unsent frames a client gets every message. Beyond that, chatter is merged:
  a ``progress_state``, ``progress`` or per-node ``executing`` (and a ``status``) replaces the unsent
  one it supersedes (the editor only ever shows the latest), and preview frames are dropped. Lifecycle
  messages (``execution_*``, ``executed``, ``executing`` with ``node: null``) are always kept.
- Only a client whose unsent frames exceed ``max_bytes`` is disconnected (it can reconnect and catch
  up from ``/jobs`` and ``/history``), as is one whose socket does not take the frames it is sent
  (at most ``SEND_BATCH`` at a time) within ``send_timeout_s``.

``status`` (the queue length) is coalesced: ``send_status`` only says "the queue changed" and makes
sure one broadcast follows, at most once per ``status_interval_s``. The broadcast reads the length
from ``status_source`` (the store) when it runs, never a value captured earlier, so a client sees the
current queue length after every message that was handed to the hub before the change (``status`` 0
arrives after the last prompt's ``execution_success``), no stale length can come last, and a burst of
queue changes costs every client one frame instead of one each.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
JPEG = 1
SEND_BATCH = 64  # frames sent to one client under one send timeout

MergeKey = tuple[str, ...]
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)  # one, not one per message (-35%)


@dataclass(eq=False)
class Frame:
    """One unsent message; ``dead`` once a later frame with the same ``key`` superseded it."""

    data: str | bytes
    key: MergeKey | None
    dead: bool = False


@dataclass(eq=False)
class Client:
    """One connected socket and its unsent frames."""

    sid: str
    ws: web.WebSocketResponse
    frames: collections.deque[Frame] = field(default_factory=collections.deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    live: int = 0  # frames queued and not superseded
    unsent_bytes: int = 0
    latest: dict[MergeKey, Frame] = field(default_factory=dict)
    supports_preview_metadata: bool = False
    sender: asyncio.Task[None] | None = None
    dropped: int = 0  # previews dropped and chatter merged away


class Hub:
    """Who is connected, and how messages reach them."""

    def __init__(
        self,
        queue_size: int = 256,
        send_timeout_s: float = 10.0,
        status_interval_s: float = 0.02,
        max_bytes: int = 64 << 20,
    ) -> None:
        self._queue_size = queue_size
        self._max_bytes = max_bytes
        self._send_timeout_s = send_timeout_s
        self._status_interval_s = status_interval_s
        self._clients: dict[str, list[Client]] = {}
        self.status_source: Callable[[], int] = lambda: 0  # the queue length (blocking: run in a thread)
        self._status_changed = False
        self._status_task: asyncio.Task[None] | None = None
        self._status_sent_at = -math.inf
        self.status_broadcasts = 0

    @property
    def client_count(self) -> int:
        return sum(len(c) for c in self._clients.values())

    def connected(self, sid: str) -> bool:
        return sid in self._clients

    def connect(self, sid: str, ws: web.WebSocketResponse) -> Client:
        client = Client(sid=sid, ws=ws)
        client.sender = asyncio.get_running_loop().create_task(self._send_loop(client))
        self._clients.setdefault(sid, []).append(client)
        return client

    def shows_previews(self, sid: str | None) -> bool:
        """Whether a client ``sid`` that declared ``supports_preview_metadata`` (the editor) is connected.

        Read from the worker thread: a snapshot of the list, so a concurrent connect cannot break it.
        """
        return sid is not None and any(c.supports_preview_metadata for c in tuple(self._clients.get(sid, ())))

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
        if self._status_task is not None:
            self._status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._status_task
            self._status_task = None
        for peers in list(self._clients.values()):
            for client in list(peers):
                await self.disconnect(client)

    # -- sending (event loop only; never awaits a socket) ----------------------------------------

    def send(self, type: str, data: dict[str, Any], sid: str | None = None) -> None:
        """A JSON message to the clients with ``sid``, or to everyone when ``sid`` is None."""
        targets = self._targets(sid)
        if not targets:
            return
        frame = _ENCODER.encode({"type": type, "data": data})
        key = merge_key(type, data)
        for client in targets:
            self._offer(client, frame, key)

    def send_status(self) -> None:
        """The queue changed: everyone gets its length, read after this call, coalesced."""
        self._status_changed = True
        if self._status_task is None:
            self._status_task = asyncio.get_running_loop().create_task(self._broadcast_status())

    async def _broadcast_status(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._status_changed:
                # the rest of this tick's changes join this broadcast; then keep the interval
                await asyncio.sleep(max(0.0, self._status_sent_at + self._status_interval_s - loop.time()))
                self._status_changed = False
                if not self._clients:  # nobody to tell; a client that connects reads it then
                    continue
                try:
                    remaining = await asyncio.to_thread(self.status_source)
                except Exception:
                    log.warning("could not read the queue length", exc_info=True)
                    continue
                self._status_sent_at = loop.time()
                self.status_broadcasts += 1
                self.send("status", status_payload(remaining))
        finally:
            self._status_task = None

    def send_to(self, client: Client, type: str, data: dict[str, Any]) -> None:
        self._offer(client, json.dumps({"type": type, "data": data}, default=str), None)

    def send_preview(self, image: bytes, meta: dict[str, Any], sid: str | None, to_all: bool = False) -> None:
        """A binary preview: type 4 with metadata to clients that declared ``supports_preview_metadata``;
        type 1 to the others only with ``to_all`` (their prompt named a ``preview_method``)."""
        plain = struct.pack(">II", PREVIEW_IMAGE, JPEG) + image
        meta_json = json.dumps(meta, separators=(",", ":")).encode()
        rich = struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta_json)) + meta_json + image
        for client in self._targets(sid):
            if not (client.supports_preview_metadata or to_all):
                continue
            if client.live >= self._queue_size:
                client.dropped += 1  # behind: a newer preview will follow
                continue
            self._offer(client, rich if client.supports_preview_metadata else plain, None)

    def _targets(self, sid: str | None) -> list[Client]:
        if sid is None:
            return [c for peers in self._clients.values() for c in peers]
        return list(self._clients.get(sid, ()))

    def _offer(self, client: Client, data: str | bytes, key: MergeKey | None) -> None:
        if key is not None:
            previous = client.latest.get(key)
            if previous is not None and client.live >= self._queue_size:
                previous.dead = True  # superseded while still unsent
                client.live -= 1
                client.unsent_bytes -= len(previous.data)
                client.dropped += 1
        frame = Frame(data, key)
        client.frames.append(frame)
        client.live += 1
        client.unsent_bytes += len(data)
        if key is not None:
            client.latest[key] = frame
        client.ready.set()
        if client.unsent_bytes > self._max_bytes:
            log.warning("disconnecting websocket client %s: %d bytes unsent", client.sid, client.unsent_bytes)
            client.frames.clear()
            client.latest.clear()
            client.live = client.unsent_bytes = 0
            asyncio.get_running_loop().create_task(self.disconnect(client))

    async def _send_loop(self, client: Client) -> None:
        try:
            while True:
                if not client.frames:
                    client.ready.clear()
                    await client.ready.wait()
                    continue
                # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancel that lands as the send
                # completes, and this task then waits on the queue forever (and shutdown with it).
                # One timeout covers up to SEND_BATCH frames (one per frame cost 8% of a long prompt's
                # event loop): a socket that takes none of them in send_timeout_s is stuck.
                async with asyncio.timeout(self._send_timeout_s):
                    for _ in range(SEND_BATCH):
                        if not client.frames:
                            break
                        await self._send_one(client, client.frames.popleft())
        except asyncio.CancelledError:
            raise
        except Exception:  # a dead or stuck socket: drop this client only
            log.info("websocket client %s went away", client.sid)
            asyncio.get_running_loop().create_task(self.disconnect(client))

    @staticmethod
    async def _send_one(client: Client, frame: Frame) -> None:
        if frame.dead:
            return
        client.live -= 1
        client.unsent_bytes -= len(frame.data)
        if frame.key is not None and client.latest.get(frame.key) is frame:
            del client.latest[frame.key]
        if isinstance(frame.data, str):
            await client.ws.send_str(frame.data)
        else:
            await client.ws.send_bytes(frame.data)


def merge_key(type: str, data: dict[str, Any]) -> MergeKey | None:
    """Messages that only say "where things stand now": a later one with the same key makes it moot."""
    if type == "status":
        return ("status",)
    prompt_id = str(data.get("prompt_id"))
    if type == "progress_state":
        return (type, prompt_id)
    if type == "progress":
        return (type, prompt_id, str(data.get("node")))
    if type == "executing" and data.get("node") is not None:
        return (type, prompt_id)
    return None


def status_payload(queue_remaining: int, sid: str | None = None) -> dict[str, Any]:
    """``{status: {exec_info: {queue_remaining}}, sid?}``; ``sid`` only in a client's first message."""
    data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": queue_remaining}}}
    if sid is not None:
        data["sid"] = sid
    return data
