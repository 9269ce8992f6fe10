"""Client-side workloads for any server that speaks ComfyUI's protocol (guidegraph or ComfyUI itself).

Each workload takes the server's URL and a function ``make_prompt(i)`` that returns the i-th API
prompt, so the same client code measures both servers. Times are wall-clock seconds on the client.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

PromptFn = Callable[[int], dict[str, Any]]
END = ("execution_success", "execution_error", "execution_interrupted")


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` and its children (ComfyUI runs as one process too)."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for one in pids:
        for line in Path(f"/proc/{one}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def fsync_ms(folder: Path, samples: int = 50) -> float:
    """Median milliseconds of appending 1 KiB to a file in ``folder`` and fsyncing it: the floor of a
    durable commit there. ``clients`` posters that each wait for their answer cannot be acknowledged
    faster than ``clients / fsync`` per second by any server that commits before answering."""
    times = []
    with tempfile.NamedTemporaryFile(dir=folder) as handle:
        for _ in range(samples):
            began = time.perf_counter()
            handle.write(b"x" * 1024)
            handle.flush()
            os.fsync(handle.fileno())
            times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server at {url} exited with {proc.returncode}")
            try:
                async with session.get(f"{url}/prompt") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} did not come up in {timeout:.0f} s")


async def wait_idle(session: aiohttp.ClientSession, url: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with session.get(f"{url}/prompt") as response:
            if (await response.json())["exec_info"]["queue_remaining"] == 0:
                return
        await asyncio.sleep(0.02)
    raise TimeoutError("queue did not drain")


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> str:
    async with session.post(f"{url}/prompt", json=body) as response:
        answer = await response.json()
        if response.status != 200:
            raise RuntimeError(f"POST /prompt answered {response.status}: {json.dumps(answer)[:300]}")
        return str(answer["prompt_id"])


async def wait_end(ws: aiohttp.ClientWebSocketResponse, prompt_id: str, timeout: float) -> tuple[str, int]:
    """Read until this prompt's outcome; return (its type, the bytes read meanwhile)."""
    received = 0
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                received += len(msg.data)
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"the WebSocket closed: {msg.type.name}")
            received += len(msg.data)
            data = json.loads(msg.data)
            if data["type"] in END and data["data"].get("prompt_id") == prompt_id:
                return data["type"], received


async def closed_loop(
    url: str, make_prompt: PromptFn, clients: int, seconds: float, first: int
) -> dict[str, float]:
    """``clients`` users, each posting a prompt and waiting for its end on its WebSocket, ``seconds`` long."""
    counter = itertools.count(first)
    latencies: list[float] = []
    failed = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = [await session.ws_connect(f"{url}/ws?clientId=loop{first}x{i}") for i in range(clients)]
        start = time.perf_counter()
        deadline = start + seconds

        async def user(index: int) -> None:
            nonlocal failed
            ws, sid = sockets[index], f"loop{first}x{index}"
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                prompt_id = await post(session, url, {"prompt": make_prompt(next(counter)), "client_id": sid})
                outcome, _ = await wait_end(ws, prompt_id, 120)
                latencies.append(time.perf_counter() - began)
                failed += outcome != "execution_success"

        await asyncio.gather(*(user(i) for i in range(clients)))
        elapsed = time.perf_counter() - start
        for ws in sockets:
            await ws.close()
    if failed:
        raise RuntimeError(f"{failed} prompts failed")
    return {
        "completed": len(latencies),
        "completed_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * pct(latencies, 0.95),
    }


async def burst(url: str, make_prompt: PromptFn, clients: int, total: int, first: int) -> dict[str, float]:
    """``clients`` tasks POST ``total`` prompts back to back; then wait until the queue is empty."""
    counter = itertools.count(first)
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def client() -> None:
            while (i := next(counter)) < first + total:
                began = time.perf_counter()
                await post(session, url, {"prompt": make_prompt(i)})
                latencies.append(time.perf_counter() - began)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        accepted = time.perf_counter() - start
        await wait_idle(session, url)
        finished = time.perf_counter() - start
    return {
        "prompts": total,
        "accepted_per_s": total / accepted,
        "completed_per_s": total / finished,
        "post_p50_ms": 1000 * statistics.median(latencies),
        "post_p95_ms": 1000 * pct(latencies, 0.95),
    }


async def one_big_prompt(
    url: str, prompt: dict[str, Any], sid: str, timeout: float = 600
) -> dict[str, float]:
    """Post one (large) prompt from a WebSocket client and wait for its end, polling ``GET /queue``
    meanwhile: seconds from POST to outcome, WebSocket bytes the submitter read, slowest /queue."""
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{url}/ws?clientId={sid}") as ws:
        await ws.receive(timeout=10)
        queue_times: list[float] = []
        done = asyncio.Event()

        async def poll_queue() -> None:
            while not done.is_set():
                began = time.perf_counter()
                async with session.get(f"{url}/queue") as response:
                    await response.read()
                queue_times.append(time.perf_counter() - began)
                await asyncio.sleep(0.1)

        poller = asyncio.create_task(poll_queue())
        began = time.perf_counter()
        prompt_id = await post(session, url, {"prompt": prompt, "client_id": sid})
        outcome, received = await wait_end(ws, prompt_id, timeout)
        seconds = time.perf_counter() - began
        done.set()
        await poller
        connected = not ws.closed
    if outcome != "execution_success":
        raise RuntimeError(f"the prompt ended with {outcome}")
    return {
        "seconds": seconds,
        "ws_bytes": received,
        "queue_max_ms": 1000 * max(queue_times, default=0.0),
        "connected": float(connected),
    }
