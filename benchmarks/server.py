"""Server load over the tiny test nodes: steady throughput, bursts, long chains, fan-out, memory.

Run: ``.venv/bin/python -m benchmarks.server [--runs 10] [--seconds 10] [--chains 100,1000,5000,10000]
[--chain-repeats 10]``. The server runs as a subprocess over the test nodes (``Number``, ``Relay``, a
1x1 PNG writer), so the numbers measure the server (HTTP, validation, SQLite commits, the worker, the
WebSocket path), not the diffusion nodes. Results are printed as Markdown for
``benchmarks/results/server.md``. The side-by-side comparison with ComfyUI is ``benchmarks/vs_comfyui.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
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

from benchmarks.load import burst, closed_loop, one_big_prompt, pct, rss_mib, wait_until_up
from server.config import ServerConfig
from tests.server.conftest import chain_prompt, make_config
from tests.server.test_restart import ROOT, free_port


def prompt(value: int) -> dict[str, Any]:
    """Two trivial nodes; a distinct value per prompt so the cache cannot skip the work."""
    return {
        "1": {"class_type": "Number", "inputs": {"value": value % 1000}},
        "2": {"class_type": "SaveSquare", "inputs": {"value": ["1", 0], "size": 1, "prefix": f"b{value}"}},
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
            await wait_until_up(url, proc)
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
    print(f"## Server benchmark ({platform.machine()}, Python {platform.python_version()}, CPU only)\n")
    print(
        f"Machine load at the start (1-minute load average, {os.cpu_count()} CPUs): "
        f"{os.getloadavg()[0]:.1f}\n"
    )
    async with serving(ServerConfig.ws_status_interval_s) as (url, pid):
        print(f"Server RSS at start: {rss_mib(pid):.0f} MiB\n")
        print(f"### {args.runs} consecutive runs on one server: 20 clients, each posting and waiting for")
        print(f"completion over its WebSocket, {args.seconds:g} s each\n")
        print("| run | completed | prompts/s | p50 | p95 | history rows before |")
        print("|---|---|---|---|---|---|")
        history = 0
        rates = []
        for run in range(args.runs):
            loop = await closed_loop(url, prompt, 20, args.seconds, first=1_000_000 * (run + 1))
            rates.append(loop["completed_per_s"])
            print(
                f"| {run + 1} | {loop['completed']:.0f} | {loop['completed_per_s']:.0f} | "
                f"{loop['p50_ms']:.0f} ms | {loop['p95_ms']:.0f} ms | {history} |",
                flush=True,
            )
            history += int(loop["completed"])
        print(f"\nLast run ÷ first run: {rates[-1] / rates[0]:.2f}\n")
        load = await burst(url, prompt, 20, 500, first=50_000_000)
        print("### 500 prompts posted back to back by 20 clients\n")
        print(
            f"accepted {load['accepted_per_s']:.0f}/s (POST p50 {load['post_p50_ms']:.1f} ms, "
            f"p95 {load['post_p95_ms']:.1f} ms), completed {load['completed_per_s']:.0f}/s\n"
        )
        print("### A chain of N trivial nodes (Number → Relay × N → SaveSquare), one WebSocket client\n")
        print("| N | POST → execution_success | WebSocket bytes to the submitter | slowest GET /queue |")
        print("|---|---|---|---|")
        for n in args.chains:
            chain = await one_big_prompt(url, chain_prompt(n, value=n % 1000), f"chain{n}")
            assert chain["connected"], "the submitter was disconnected"
            print(
                f"| {n:,} | {chain['seconds']:.2f} s | {chain['ws_bytes'] / 1e6:.2f} MB | "
                f"{chain['queue_max_ms']:.0f} ms |",
                flush=True,
            )
        biggest = max(args.chains)
        print(f"\n### RSS over {args.chain_repeats} runs of the {biggest:,}-node chain\n")
        baseline = rss_mib(pid)
        seconds = []
        for i in range(args.chain_repeats):
            chain = await one_big_prompt(url, chain_prompt(biggest, value=(i + 1) % 1000), "rss")
            seconds.append(chain["seconds"])
        after = rss_mib(pid)
        print(
            f"after the warm-up runs above: {baseline:.0f} MiB; {args.chain_repeats} runs later: "
            f"{after:.0f} MiB "
            f"({after - baseline:+.0f} MiB); each run {statistics.median(seconds):.2f} s (median), "
            f"{max(seconds):.2f} s (slowest)\n"
        )
        fan = await websocket_fanout(url, 200, 20, args.ws_prompts_per_client)
    print("### 200 idle + 20 active WebSocket clients, POST → execution_success\n")
    print("| status interval | prompts | prompts/s | p50 | p95 | status frames per idle client | idle open |")
    print("|---|---|---|---|---|---|---|")
    print(fan_row(f"{1000 * ServerConfig.ws_status_interval_s:g} ms (default)", fan))
    print(f"\nMachine load at the end: {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10, help="consecutive closed-loop runs (default 10)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run (default 10)")
    parser.add_argument(
        "--chains",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[100, 1000, 5000, 10_000],
        help="chain lengths (default 100,1000,5000,10000)",
    )
    parser.add_argument("--chain-repeats", type=int, default=10)
    parser.add_argument("--ws-prompts-per-client", type=int, default=5)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
