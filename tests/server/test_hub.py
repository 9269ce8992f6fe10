"""The hub's queue policy: merge superseded chatter when behind, keep lifecycle messages, cap bytes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from server.hub import Hub


class HeldSocket:
    """A socket whose sends wait until ``release`` is called; records what it sent."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.open = asyncio.Event()
        self.closed = False

    async def send_str(self, data: str) -> None:
        await self.open.wait()
        self.sent.append(json.loads(data))

    async def send_bytes(self, data: bytes) -> None:
        await self.open.wait()
        self.sent.append(data)

    async def close(self) -> None:
        self.closed = True


async def drained(socket: HeldSocket, count: int) -> None:
    async with asyncio.timeout(5):
        while len(socket.sent) < count:
            await asyncio.sleep(0.001)


async def test_a_client_behind_gets_lifecycle_messages_and_only_the_latest_chatter() -> None:
    hub = Hub(queue_size=4, status_interval_s=0.0)
    socket = HeldSocket()
    client = hub.connect("c", socket)  # type: ignore[arg-type]
    hub.send("execution_start", {"prompt_id": "p"}, "c")
    for node in range(500):
        hub.send("executing", {"node": str(node), "prompt_id": "p"}, "c")
        hub.send("progress_state", {"prompt_id": "p", "nodes": {str(node): {"state": "running"}}}, "c")
        hub.send_preview(b"\xff\xd8jpeg", {"node_id": str(node)}, "c", to_all=True)
    hub.send("executed", {"node": "499", "output": {}, "prompt_id": "p"}, "c")
    hub.send("execution_success", {"prompt_id": "p"}, "c")
    hub.send("executing", {"node": None, "prompt_id": "p"}, "c")
    assert client.live <= 4 + 3  # lifecycle messages are never merged away
    socket.open.set()
    await drained(socket, client.live)
    texts = [m for m in socket.sent if isinstance(m, dict)]
    assert [m["type"] for m in texts if m["type"] not in ("executing", "progress_state")] == [
        "execution_start",
        "executed",
        "execution_success",
    ]
    executing = [m["data"]["node"] for m in texts if m["type"] == "executing"]
    assert executing[-2:] == ["499", None]
    states = [m["data"]["nodes"] for m in texts if m["type"] == "progress_state"]
    assert states[-1] == {"499": {"state": "running"}}
    assert not socket.closed
    await hub.close_all()


async def test_a_client_that_keeps_up_gets_every_message() -> None:
    hub = Hub(queue_size=4, status_interval_s=0.0)
    socket = HeldSocket()
    socket.open.set()
    hub.connect("c", socket)  # type: ignore[arg-type]
    for node in range(50):
        hub.send("executing", {"node": str(node), "prompt_id": "p"}, "c")
        await drained(socket, node + 1)
    assert [m["data"]["node"] for m in socket.sent] == [str(n) for n in range(50)]
    await hub.close_all()


async def test_a_client_that_does_not_read_is_cut_only_past_the_byte_cap() -> None:
    hub = Hub(queue_size=4, status_interval_s=0.0, max_bytes=10_000)
    socket = HeldSocket()
    hub.connect("c", socket)  # type: ignore[arg-type]
    for n in range(50):  # ~50 bytes each, never superseded: under the cap
        hub.send("executed", {"node": str(n), "output": {}, "prompt_id": "p"}, "c")
    await asyncio.sleep(0.01)
    assert not socket.closed and hub.client_count == 1
    for n in range(200):
        hub.send("executed", {"node": str(n), "output": {}, "prompt_id": "p"}, "c")
    await asyncio.sleep(0.01)
    assert socket.closed and hub.client_count == 0
    await hub.close_all()
