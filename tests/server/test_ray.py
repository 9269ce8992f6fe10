"""``serve --ray``: prompts run on Ray actors; nothing acknowledged is lost when one dies.

A local cluster of CPU workers (one per test session); the prompts sleep, so the signal is dispatch.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from graph_runtime.folders import register_folders
from graph_runtime.registry import Registry
from server import state
from server.app import create_app
from server.ray_pool import RayPool, RaySettings
from tests.server.conftest import make_config, queue, slow_prompt, wait_done
from tests.server.ray_testnodes import RAY_NODES, BlobRegistry, SlowFirstRegistry, blob_prompt
from tests.server.test_restart import free_port


@pytest.fixture
async def make_ray_client(aiohttp_client: Any, tmp_path: Path, ray_cluster: Any) -> Any:
    async def make(workers: int = 2, make_registry: Any = None, **overrides: Any) -> TestClient:
        settings = RaySettings(workers=workers, make_registry=make_registry or BlobRegistry())
        app = create_app(make_config(tmp_path, **overrides), registry=Registry(RAY_NODES), ray=settings)
        return await aiohttp_client(app)

    return make


def pool_of(client: TestClient) -> RayPool:
    pool = client.app[state.WORKER]
    assert isinstance(pool, RayPool)
    return pool


async def all_ready(client: TestClient, timeout: float = 60.0) -> list[dict[str, Any]]:
    async with asyncio.timeout(timeout):
        while True:
            workers = pool_of(client).workers()
            if all(w["ready"] for w in workers):
                return workers
            await asyncio.sleep(0.05)


def blobs(root: Path, *names: str) -> Path:
    folder = root / "blobs"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(name.encode() * 100)
    register_folders({"blobs": [folder]})  # the server validates names against its own folders
    return folder


async def test_prompts_run_on_every_worker_and_queue_and_history_name_it(make_ray_client) -> None:
    client = await make_ray_client(workers=2)
    workers = await all_ready(client)
    assert len({w["pid"] for w in workers}) == 2 and os.getpid() not in {w["pid"] for w in workers}
    ids = [(await queue(client, slow_prompt(steps=10, delay=0.03)))["prompt_id"] for _ in range(4)]
    async with asyncio.timeout(10):
        while len((running := await (await client.get("/queue")).json())["queue_running"]) < 2:
            await asyncio.sleep(0.02)
    assert set(running["workers"].values()) == {"worker-1", "worker-2"}
    entries = [await wait_done(client, i) for i in ids]
    assert all(e["status"]["status_str"] == "success" for e in entries)
    assert {e["worker"] for e in entries} == {"worker-1", "worker-2"}
    job = await (await client.get(f"/jobs/{ids[0]}")).json()
    assert job["worker"] in ("worker-1", "worker-2")


async def test_a_worker_slow_to_start_does_not_hold_up_the_others(make_ray_client, tmp_path: Path) -> None:
    client = await make_ray_client(workers=2, make_registry=SlowFirstRegistry(tmp_path, delay=60))
    ids = [(await queue(client, slow_prompt(steps=2, delay=0.01)))["prompt_id"] for _ in range(4)]
    entries = [await wait_done(client, i, timeout=30) for i in ids]
    assert [e["status"]["status_str"] for e in entries] == ["success"] * 4
    workers = pool_of(client).workers()
    assert sorted(w["ready"] for w in workers) == [False, True]
    assert {e["worker"] for e in entries} == {next(w["name"] for w in workers if w["ready"])}


async def test_kill_9_of_a_worker_mid_prompt_loses_nothing_three_times(make_ray_client) -> None:
    client = await make_ray_client(workers=2)
    await all_ready(client)
    ws = await client.ws_connect("/ws?clientId=watcher")
    pool = pool_of(client)
    ids: list[str] = []
    for _ in range(3):
        batch = [
            (await queue(client, slow_prompt(steps=20, delay=0.03), client_id="watcher"))["prompt_id"]
            for _ in range(3)
        ]
        ids += batch
        async with asyncio.timeout(30):  # a prompt of this batch is running on some worker: kill it
            while not (running := [r for r in pool.running_all() if r.prompt_id in batch and r.node]):
                await asyncio.sleep(0.02)
        victim = running[0].prompt_id
        worker = (await (await client.get("/queue")).json())["workers"][victim]
        pid = next(w["pid"] for w in pool.workers() if w["name"] == worker)
        os.kill(pid, signal.SIGKILL)
        async with asyncio.timeout(30):  # the client is told, and the prompt runs again
            while True:
                frame = await ws.receive()
                message = json.loads(frame.data) if frame.type == WSMsgType.TEXT else {}
                if message.get("type") == "prompt_requeued" and message["data"]["prompt_id"] == victim:
                    break
        await wait_done(client, victim, timeout=60)
    entries = [await wait_done(client, i, timeout=60) for i in ids]
    assert [e["status"]["status_str"] for e in entries] == ["success"] * len(ids)
    await ws.close()


def test_a_lost_machine_costs_its_prompt_a_restart_on_another(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tests.server.ray_lost_node"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result["status"].values()) == {"success"} and len(result["status"]) == 4
    assert result["worker"][result["victim"]] != result["doomed"]  # it finished on the surviving machine


async def test_a_prompt_that_kills_every_worker_it_meets_fails_after_three_and_the_rest_run(
    make_ray_client,
) -> None:
    client = await make_ray_client(workers=2)
    await all_ready(client)
    poison = (await queue(client, {"1": {"class_type": "KillWorker", "inputs": {"value": 1}}}))["prompt_id"]
    fine = (await queue(client, slow_prompt(steps=3, delay=0.01)))["prompt_id"]
    assert (await wait_done(client, fine, timeout=60))["status"]["status_str"] == "success"
    entry = await wait_done(client, poison, timeout=60)
    error = next(d for t, d in entry["status"]["messages"] if t == "execution_error")
    assert "lost 3 workers on this prompt" in error["exception_message"]


async def test_prompts_alternating_two_models_load_each_at_most_once_per_worker(
    make_ray_client, tmp_path: Path
) -> None:
    folder = blobs(tmp_path, "a.bin", "b.bin")
    client = await make_ray_client(workers=2, make_registry=BlobRegistry(folders=(folder,)))
    await all_ready(client)
    ids = [
        (await queue(client, blob_prompt(name, seed=i, steps=3, delay=0.03)))["prompt_id"]
        for i, name in enumerate(["a.bin", "b.bin"] * 4)
    ]
    loads: dict[tuple[str, str], int] = {}
    for prompt_id, name in zip(ids, ["a.bin", "b.bin"] * 4, strict=True):
        entry = await wait_done(client, prompt_id, timeout=30)
        assert entry["status"]["status_str"] == "success"
        cached = next(d["nodes"] for t, d in entry["status"]["messages"] if t == "execution_cached")
        if "1" not in cached:  # the loader ran
            loads[(entry["worker"], name)] = loads.get((entry["worker"], name), 0) + 1
    assert max(loads.values()) == 1, loads
    assert len(loads) < 4 or sum(loads.values()) <= 4  # never more than once per worker and file
    held = {w["name"]: w["models"] for w in pool_of(client).workers()}
    assert sorted(m for models in held.values() for m in models) >= ["blobs/a.bin", "blobs/b.bin"]


async def test_interrupt_and_cancel_reach_the_worker_running_the_prompt(make_ray_client) -> None:
    client = await make_ray_client(workers=2)
    await all_ready(client)
    long, other = (await queue(client, slow_prompt(steps=400, delay=0.02)))["prompt_id"], None
    other = (await queue(client, slow_prompt(steps=20, delay=0.02)))["prompt_id"]
    async with asyncio.timeout(20):
        while len(pool_of(client).running_all()) < 2:
            await asyncio.sleep(0.02)
    answer = await (await client.post("/interrupt", json={"prompt_id": long})).json()
    assert answer == {"interrupted": True}
    stopped = await wait_done(client, long, timeout=10)
    assert stopped["status"]["messages"][-1][0] == "execution_interrupted"
    assert (await wait_done(client, other, timeout=20))["status"]["status_str"] == "success"
    third = (await queue(client, slow_prompt(steps=400, delay=0.02)))["prompt_id"]
    async with asyncio.timeout(20):
        while not any(r.prompt_id == third and r.node for r in pool_of(client).running_all()):
            await asyncio.sleep(0.02)
    cancelled = await (await client.post(f"/jobs/{third}/cancel")).json()
    assert cancelled == {"cancelled": [], "interrupted": [third]}
    assert (await wait_done(client, third, timeout=10))["status"]["completed"] is False


async def test_a_file_missing_on_one_worker_sends_its_prompts_to_the_one_that_has_it(
    make_ray_client, tmp_path: Path
) -> None:
    has, lacks = blobs(tmp_path, "only-here.bin"), tmp_path / "empty"
    lacks.mkdir()
    (tmp_path / "claims").mkdir()
    registry = BlobRegistry(per_worker=(has, lacks), claims=tmp_path / "claims")
    client = await make_ray_client(workers=2, make_registry=registry)
    await all_ready(client)
    prompts = [blob_prompt("only-here.bin", seed=i, steps=10, delay=0.03) for i in range(4)]
    ids = [(await queue(client, prompt))["prompt_id"] for prompt in prompts]
    entries = [await wait_done(client, i, timeout=30) for i in ids]
    assert [e["status"]["status_str"] for e in entries] == ["success"] * 4
    assert len({e["worker"] for e in entries}) == 1
    workers = pool_of(client).workers()
    lacking = [w["missing"] for w in workers if w["name"] != entries[0]["worker"]]
    assert lacking == [["blobs/only-here.bin"]]  # it was offered one, said so, and was offered no more


async def test_a_file_no_worker_has_fails_its_prompt_naming_node_input_and_file(
    make_ray_client, tmp_path: Path
) -> None:
    blobs(tmp_path, "server-only.bin")  # the server lists it; the workers search no folder at all
    client = await make_ray_client(workers=2)
    await all_ready(client)
    prompt_id = (await queue(client, blob_prompt("server-only.bin")))["prompt_id"]
    entry = await wait_done(client, prompt_id, timeout=30)
    error = next(d for t, d in entry["status"]["messages"] if t == "execution_error")
    assert error["node_id"] == "1" and error["node_type"] == "LoadBlob"
    assert "input 'name'" in error["exception_message"]
    assert "blobs/server-only.bin" in error["exception_message"]


def test_serve_without_ray_never_imports_ray(tmp_path: Path) -> None:
    code = (
        "import sys, server.cli, server.app\n"
        "from server.config import ServerConfig\n"
        f"server.app.create_app(ServerConfig(data_dir={str(tmp_path)!r}))\n"
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_address_where_no_cluster_answers_is_one_clear_line(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    args = ["serve", "--ray", address, "--data-dir", str(tmp_path / "user"), "--port", str(free_port())]
    out = subprocess.run([sys.executable, "-m", "graph_runtime.cli", *args], capture_output=True, text=True)
    assert out.returncode == 2
    assert f"guidegraph serve: no Ray cluster answers at {address}" in out.stderr
    assert "Traceback" not in out.stderr


def test_workers_without_ray_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from graph_runtime.cli import main

    assert main(["serve", "--workers", "2"]) == 2
    assert "--workers needs --ray" in capsys.readouterr().err
