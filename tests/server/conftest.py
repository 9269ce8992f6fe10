"""Fixtures: an in-process server over the test nodes, with its state in a temporary folder."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from graph_runtime.registry import Registry
from server.app import create_app
from server.config import ServerConfig
from tests.server.testnodes import NODES

UI_WORKFLOW = {
    "id": "00000000-0000-4000-8000-000000000001",
    "revision": 0,
    "last_node_id": 2,
    "last_link_id": 1,
    "nodes": [
        {
            "id": 1,
            "type": "Number",
            "pos": [50, 100],
            "size": [270, 60],
            "flags": {},
            "order": 0,
            "mode": 0,
            "inputs": [],
            "outputs": [{"name": "value", "type": "SHADE", "links": [1], "slot_index": 0}],
            "properties": {},
            "widgets_values": [200],
        },
        {
            "id": 2,
            "type": "SaveSquare",
            "pos": [400, 100],
            "size": [270, 100],
            "flags": {},
            "order": 1,
            "mode": 0,
            "inputs": [{"name": "value", "type": "SHADE", "link": 1}],
            "outputs": [],
            "properties": {},
            "widgets_values": [64, "square"],
        },
    ],
    "links": [[1, 1, 0, 2, 0, "SHADE"]],
    "groups": [],
    "config": {},
    "extra": {"ds": {"scale": 1, "offset": [0, 0]}},
    "version": 0.4,
}


def square_prompt(value: int = 7, size: int = 8, prefix: str = "sq") -> dict[str, Any]:
    return {
        "1": {"class_type": "Number", "inputs": {"value": value}},
        "2": {"class_type": "SaveSquare", "inputs": {"value": ["1", 0], "size": size, "prefix": prefix}},
    }


def chain_prompt(length: int, value: int = 5) -> dict[str, Any]:
    """Number -> Relay x ``length`` -> SaveSquare: ``length`` + 2 trivial nodes in one line."""
    prompt: dict[str, Any] = {"0": {"class_type": "Number", "inputs": {"value": value}}}
    for i in range(1, length + 1):
        prompt[str(i)] = {"class_type": "Relay", "inputs": {"value": [str(i - 1), 0]}}
    save = {"value": [str(length), 0], "size": 1, "prefix": "chain"}
    prompt["out"] = {"class_type": "SaveSquare", "inputs": save}
    return prompt


def slow_prompt(steps: int = 5, delay: float = 0.05) -> dict[str, Any]:
    return {"1": {"class_type": "SlowSteps", "inputs": {"steps": steps, "delay": delay}}}


def failing_prompt() -> dict[str, Any]:
    return {
        "1": {"class_type": "Number", "inputs": {"value": 3}},
        "2": {"class_type": "Explode", "inputs": {"value": ["1", 0]}},
    }


def make_config(root: Path, **overrides: Any) -> ServerConfig:
    workflows = root / "workflows"
    workflows.mkdir(parents=True, exist_ok=True)
    (workflows / "squares.ui.json").write_text(json.dumps(UI_WORKFLOW))
    return ServerConfig(data_dir=root / "user", workflows_dir=workflows, **overrides)


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return make_config(tmp_path)


ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_client(aiohttp_client: Any, tmp_path: Path) -> ClientFactory:
    async def make(config: ServerConfig | None = None, **overrides: Any) -> TestClient:
        app = create_app(config or make_config(tmp_path, **overrides), registry=Registry(NODES))
        return await aiohttp_client(app)

    return make


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient:
    return await make_client()


async def queue(client: TestClient, prompt: dict[str, Any], **body: Any) -> dict[str, Any]:
    response = await client.post("/prompt", json={"prompt": prompt, **body})
    assert response.status == 200, await response.text()
    return await response.json()


async def wait_done(client: TestClient, prompt_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll /history/{id} until the prompt is finished; return its entry."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        found = await (await client.get(f"/history/{prompt_id}")).json()
        if found:
            return found[prompt_id]
        await asyncio.sleep(0.02)
    raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s")


async def wait_running(client: TestClient, prompt_id: str, timeout: float = 10.0) -> None:
    """Poll /queue until ``prompt_id`` runs (posts are answered once stored, maybe before it starts)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        running = (await (await client.get("/queue")).json())["queue_running"]
        if any(item[1] == prompt_id for item in running):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"prompt {prompt_id} did not start in {timeout} s")


@pytest.fixture(scope="session")
def ray_cluster() -> Any:
    """One local Ray cluster for the whole session (4 logical CPUs: up to 4 CPU workers at once)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@contextlib.asynccontextmanager
async def served(app: web.Application, **runner_kwargs: Any) -> AsyncIterator[int]:
    """Run ``app`` as ``guidegraph serve`` does (``run_app``'s runner defaults); yields the port."""
    runner = web.AppRunner(app, handler_cancellation=False, **runner_kwargs)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()
