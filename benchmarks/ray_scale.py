"""``serve --ray`` scale-out: throughput with 1, 2 and 4 Ray workers, and dispatch overhead per prompt.

Run: ``.venv/bin/python -m benchmarks.ray_scale [--prompts 16] [--steps 10] [--delay 0.05]``.

The server runs in this process (``create_app`` over the test nodes, on a real port) against one
local Ray cluster of CPU workers. Every measurement goes through the whole path: HTTP ``POST
/prompt``, the SQLite queue, a lane, the actor, the events streamed back, the history commit.

* Scaling: a queue of ``--prompts`` sleep-bound prompts (``SlowSteps``: ``--steps`` × ``--delay`` s
  of sleep, with progress), so the work itself is the same on any machine and does not compete for
  the 2 cores; throughput with N workers ÷ with 1 worker should be ~N.
* Overhead: a queue of prompts that do no work (one zero-delay step), one at a time, with the
  in-process worker thread (no Ray) and with one Ray worker, measured in the same run; the
  difference per prompt is what dispatching through Ray costs.

Workers are started and warm before the clock starts. Results are printed as Markdown for
``benchmarks/results/ray_scale.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import ray
from aiohttp import web

from graph_runtime.registry import Registry
from server import state
from server.app import create_app
from server.ray_pool import RayPool, RaySettings
from tests.server.conftest import make_config, slow_prompt
from tests.server.test_restart import free_port
from tests.server.testnodes import NODES


async def serve(root: Path, workers: int | None) -> tuple[web.AppRunner, str]:
    """The server on a free port; ``workers`` None: the in-process worker thread (no Ray)."""
    settings = (
        None
        if workers is None
        else RaySettings(workers=workers, make_registry=functools.partial(Registry, NODES))
    )
    app = create_app(make_config(root), registry=Registry(NODES), ray=settings)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    pool = app[state.WORKER]
    if isinstance(pool, RayPool):  # warm: every worker up before the clock starts
        while not all(w["ready"] for w in pool.workers()):
            await asyncio.sleep(0.05)
    return runner, f"http://127.0.0.1:{port}"


async def drain(session: aiohttp.ClientSession, url: str, prompts: list[dict[str, Any]]) -> float:
    """Queue every prompt, wait until all are in the history; seconds from the first POST."""
    started = time.perf_counter()
    ids = []
    for prompt in prompts:
        async with session.post(f"{url}/prompt", json={"prompt": prompt}) as response:
            ids.append((await response.json())["prompt_id"])
    while True:
        async with session.get(f"{url}/history", params={"max_items": str(len(ids) + 10)}) as response:
            done = await response.json()
        if all(i in done for i in ids):
            break
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    failed = [i for i in ids if done[i]["status"]["status_str"] != "success"]
    assert not failed, f"{len(failed)} prompts failed"
    return elapsed


async def measure(workers: int | None, prompts: list[dict[str, Any]], repeats: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        runner, url = await serve(Path(tmp), workers)
        try:
            async with aiohttp.ClientSession() as session:
                await drain(session, url, prompts[:2])  # warm the path
                return [await drain(session, url, prompts) for _ in range(repeats)]
        finally:
            await runner.cleanup()


async def main_async(args: argparse.Namespace) -> None:
    sleepy = [slow_prompt(steps=args.steps, delay=args.delay) for _ in range(args.prompts)]
    work = args.steps * args.delay
    lines = [
        "## Ray scale-out (`python -m benchmarks.ray_scale`)",
        "",
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; ray {ray.__version__}; "
        f"a local Ray cluster of CPU workers. {args.prompts} sleep-bound prompts of {work:.2f} s each "
        f"({args.steps} steps with progress events); medians of {args.repeats}.",
        "",
        "| workers | wall (s) | prompts/s | speedup vs 1 worker | ideal |",
        "|---|---|---|---|---|",
    ]
    base = None
    for workers in (1, 2, 4):
        wall = statistics.median(await measure(workers, sleepy, args.repeats))
        base = base or wall
        lines.append(
            f"| {workers} | {wall:.2f} | {args.prompts / wall:.2f} | {base / wall:.2f}× | {workers}× |"
        )
        print(lines[-1], flush=True)
    empty = [slow_prompt(steps=1, delay=0.0) for _ in range(args.overhead_prompts)]
    local, remote = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine
        local += await measure(None, empty, 1)
        remote += await measure(1, empty, 1)
    per_local = statistics.median(local) / len(empty) * 1000
    per_ray = statistics.median(remote) / len(empty) * 1000
    lines += [
        "",
        f"Dispatch overhead: {args.overhead_prompts} prompts that do no work, queued at once, one worker.",
        "",
        "| worker | ms per prompt (queue → history) |",
        "|---|---|",
        f"| in-process thread (no Ray) | {per_local:.1f} |",
        f"| one Ray worker | {per_ray:.1f} |",
        f"| **Ray's cost per prompt** | **{per_ray - per_local:.1f}** |",
    ]
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--overhead-prompts", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        asyncio.run(main_async(args))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
