"""A two-machine Ray cluster on this one (``ray.cluster_utils.Cluster``); the machine of a busy worker
is removed mid-prompt. Run as ``python -m tests.server.ray_lost_node``; prints the outcome as JSON.

A subprocess, because the test session already holds its own single-node cluster.
"""

from __future__ import annotations

import asyncio
import functools
import json
import tempfile
from pathlib import Path
from typing import Any

import ray
from aiohttp.test_utils import TestClient, TestServer
from ray.cluster_utils import Cluster

from graph_runtime.registry import Registry
from server import state
from server.app import create_app
from server.ray_pool import RayPool, RaySettings
from tests.server.conftest import make_config, queue, slow_prompt, wait_done
from tests.server.testnodes import NODES


async def scenario(address: str, cluster: Cluster, second: Any, root: Path) -> dict[str, Any]:
    settings = RaySettings(address=address, workers=2, make_registry=functools.partial(Registry, NODES))
    app = create_app(make_config(root), registry=Registry(NODES), ray=settings)
    async with TestClient(TestServer(app)) as client:
        pool = app[state.WORKER]
        assert isinstance(pool, RayPool)
        async with asyncio.timeout(120):
            while not all(w["ready"] for w in pool.workers()):
                await asyncio.sleep(0.05)
        doomed = next(w["name"] for w in pool.workers() if w["node"] == second.node_id)
        ids = [(await queue(client, slow_prompt(steps=30, delay=0.03)))["prompt_id"] for _ in range(4)]
        async with asyncio.timeout(60):  # the worker on the second machine is in the middle of a prompt
            while True:
                running = (await (await client.get("/queue")).json()).get("workers", {})
                busy = [p for p, w in running.items() if w == doomed]
                if busy and any(r.prompt_id == busy[0] and r.node for r in pool.running_all()):
                    break
                await asyncio.sleep(0.02)
        cluster.remove_node(second)
        entries = {i: await wait_done(client, i, timeout=120) for i in ids}
        return {
            "doomed": doomed,
            "victim": busy[0],
            "status": {i: e["status"]["status_str"] for i, e in entries.items()},
            "worker": {i: e["worker"] for i, e in entries.items()},
        }


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    second = cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(asyncio.run(scenario(cluster.address, cluster, second, Path(tmp)))))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
