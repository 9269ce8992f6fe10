"""Server load: concurrent API clients, many WebSocket clients, memory after many prompts.

Run: ``.venv/bin/python -m benchmarks.server [--prompts-per-client 25] [--memory-prompts 1000]
[--status-intervals 0,0.02]``; the WebSocket fan-out runs once per ``status`` coalescing interval.
The server runs as a subprocess over the tiny test nodes (a number and a 1x1 PNG writer), so the
numbers measure the server (HTTP, validation, SQLite commits, the worker, WebSocket fan-out), not
the diffusion nodes. Results are printed as Markdown for ``benchmarks/results/server.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from server.config import ServerConfig
from tests.server.conftest import make_config
from tests.server.test_restart import ROOT, free_port


def prompt(value: int) -> dict[str, Any]:
    """Two trivial nodes; a distinct value per prompt so the cache cannot skip the work."""
    return {
        "1": {"class_type": "Number", "inputs": {"value": value % 1000}},
        "2": {"class_type": "SaveSquare", "inputs": {"value": ["1", 0], "size": 1, "prefix": f"b{value}"}},
    }


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_idle(session: aiohttp.ClientSession, url: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with session.get(f"{url}/prompt") as response:
            if (await response.json())["exec_info"]["queue_remaining"] == 0:
                return
        await asyncio.sleep(0.05)
    raise TimeoutError("queue did not drain")


async def concurrent_clients(url: str, clients: int, per_client: int) -> dict[str, float]:
    """``clients`` tasks each POST ``per_client`` prompts back to back; then wait for the queue."""
    latencies: list[float] = []
    counter = iter(range(10**9))
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            for _ in range(per_client):
                start = time.perf_counter()
                async with session.post(f"{url}/prompt", json={"prompt": prompt(next(counter))}) as response:
                    assert response.status == 200, await response.text()
                    await response.read()
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        accepted = time.perf_counter() - start
        await wait_idle(session, url)
        finished = time.perf_counter() - start
    total = clients * per_client
    return {
        "prompts": total,
        "accept_per_s": total / accepted,
        "complete_per_s": total / finished,
        "post_p50_ms": 1000 * statistics.median(latencies),
        "post_p95_ms": 1000 * pct(latencies, 0.95),
    }


async def websocket_fanout(url: str, idle: int, active: int, per_client: int) -> dict[str, float]:
    """``idle`` sockets that only listen, ``active`` ones that queue prompts and wait for their end."""
    end_to_end: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        idle_sockets = [await session.ws_connect(f"{url}/ws?clientId=idle{i}") for i in range(idle)]
        for ws in idle_sockets:
            await ws.receive_json(timeout=10)

        async def active_client(index: int) -> None:
            sid = f"active{index}"
            async with session.ws_connect(f"{url}/ws?clientId={sid}") as ws:
                await ws.receive_json(timeout=10)
                for n in range(per_client):
                    start = time.perf_counter()
                    body = {"prompt": prompt(100_000 + index * 1000 + n), "client_id": sid}
                    async with session.post(f"{url}/prompt", json=body) as response:
                        prompt_id = (await response.json())["prompt_id"]
                    while True:
                        msg = await ws.receive(timeout=120)
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            continue
                        data = json.loads(msg.data)
                        if data["type"] == "execution_success" and data["data"]["prompt_id"] == prompt_id:
                            end_to_end.append(time.perf_counter() - start)
                            break

        start = time.perf_counter()
        await asyncio.gather(*(active_client(i) for i in range(active)))
        elapsed = time.perf_counter() - start
        # every idle client is still connected and saw the status broadcasts
        still_open = sum(not ws.closed for ws in idle_sockets)
        statuses = 0
        for ws in idle_sockets:
            while True:
                try:
                    msg = await ws.receive(timeout=0.01)
                except TimeoutError:
                    break
                statuses += msg.type == aiohttp.WSMsgType.TEXT
            await ws.close()
    return {
        "prompts": active * per_client,
        "complete_per_s": active * per_client / elapsed,
        "e2e_p50_ms": 1000 * statistics.median(end_to_end),
        "e2e_p95_ms": 1000 * pct(end_to_end, 0.95),
        "idle_open": still_open,
        "status_msgs_per_idle": statuses / max(idle, 1),
    }


async def memory_after(url: str, pid: int, prompts: int) -> dict[str, float]:
    before = rss_mib(pid)
    async with aiohttp.ClientSession() as session:
        sem = asyncio.Semaphore(20)

        async def one(n: int) -> None:
            async with sem, session.post(f"{url}/prompt", json={"prompt": prompt(200_000 + n)}) as response:
                assert response.status == 200
                await response.read()

        await asyncio.gather(*(one(n) for n in range(prompts)))
        await wait_idle(session, url)
        async with session.get(f"{url}/history", params={"max_items": 10}) as response:
            await response.read()
    return {"prompts": prompts, "rss_before_mib": before, "rss_after_mib": rss_mib(pid)}


@contextlib.asynccontextmanager
async def serving(status_interval_s: float) -> AsyncIterator[tuple[str, int]]:
    """A fresh server subprocess over the test nodes in a temporary folder: ``(url, pid)``."""
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp))
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.server.serve_testnodes",
                "--port",
                str(port),
                "--data-dir",
                str(config.data_dir),
                "--workflows-dir",
                str(config.workflows_dir),
                "--ws-status-interval",
                str(status_interval_s),
            ],
            cwd=ROOT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(200):
                    try:
                        async with session.get(f"{url}/prompt"):
                            break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
            yield url, proc.pid
        finally:
            proc.terminate()
            proc.wait(10)


def fan_row(label: str, fan: dict[str, float]) -> str:
    return (
        f"| {label} | {fan['prompts']:.0f} | {fan['complete_per_s']:.0f} | {fan['e2e_p50_ms']:.0f} ms | "
        f"{fan['e2e_p95_ms']:.0f} ms | {fan['status_msgs_per_idle']:.0f} | {fan['idle_open']:.0f}/200 |"
    )


async def main_async(args: argparse.Namespace) -> None:
    default = ServerConfig.ws_status_interval_s
    async with serving(default) as (url, pid):
        idle_rss = rss_mib(pid)
        load = await concurrent_clients(url, 20, args.prompts_per_client)
        fans = {default: await websocket_fanout(url, 200, 20, args.ws_prompts_per_client)}
        mem = await memory_after(url, pid, args.memory_prompts)
    for interval in args.status_intervals:
        if interval not in fans:
            async with serving(interval) as (url, _):
                fans[interval] = await websocket_fanout(url, 200, 20, args.ws_prompts_per_client)
    print(f"## Server benchmark ({platform.machine()}, {platform.python_version()}, CPU only)\n")
    print(f"Server RSS at start: {idle_rss:.0f} MiB\n")
    print("| scenario | prompts | throughput (prompts/s) | p50 | p95 |")
    print("|---|---|---|---|---|")
    row = f"| 20 concurrent clients, POST /prompt latency | {load['prompts']} | "
    row += f"accepted {load['accept_per_s']:.0f}, completed {load['complete_per_s']:.0f} | "
    row += f"{load['post_p50_ms']:.1f} ms | {load['post_p95_ms']:.1f} ms |"
    print(row)
    print("\n200 idle + 20 active WebSocket clients, POST→execution_success, by `status` interval:\n")
    print("| status interval | prompts | prompts/s | p50 | p95 | status frames per idle client | idle open |")
    print("|---|---|---|---|---|---|---|")
    for interval, fan in sorted(fans.items()):
        label = "one event-loop tick" if interval == 0 else f"{1000 * interval:g} ms"
        print(fan_row(label + (" (default)" if interval == default else ""), fan))
    print(
        f"\nServer RSS before/after {mem['prompts']} more prompts: {mem['rss_before_mib']:.0f} MiB → "
        f"{mem['rss_after_mib']:.0f} MiB."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts-per-client", type=int, default=25)
    parser.add_argument("--ws-prompts-per-client", type=int, default=5)
    parser.add_argument("--memory-prompts", type=int, default=1000)
    parser.add_argument(
        "--status-intervals",
        type=lambda text: [float(x) for x in text.split(",")],
        default=[0.0, ServerConfig.ws_status_interval_s],
        help="seconds between coalesced status broadcasts to compare (default 0,0.02)",
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
