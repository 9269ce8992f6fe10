"""Durability: a killed server comes back with its queue; the prompt it was running is recorded."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.store import INTERRUPTED, PENDING, SUCCESS, PromptStore
from tests.server.conftest import make_config, slow_prompt, square_prompt

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server subprocess over the test nodes, talking plain HTTP like any API client."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = make_config(self.root)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.server.serve_testnodes",
                "--port",
                str(self.port),
                "--data-dir",
                str(config.data_dir),
                "--workflows-dir",
                str(config.workflows_dir),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.get("/prompt")
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    yield srv
    srv.stop()


def test_killed_server_resumes_its_queue_in_order_with_the_same_ids(server: Server, tmp_path: Path) -> None:
    server.start()
    running = server.post("/prompt", {"prompt": slow_prompt(steps=400, delay=0.02), "prompt_id": "slow"})
    ids = [f"queued-{i}" for i in range(3)]
    for i, prompt_id in enumerate(ids):
        server.post("/prompt", {"prompt": square_prompt(value=40 + i), "prompt_id": prompt_id})
    deadline = time.monotonic() + 10
    while not server.get("/queue")["queue_running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [item[1] for item in server.get("/queue")["queue_running"]] == [running["prompt_id"]]
    server.kill()

    server.start()
    deadline = time.monotonic() + 20
    while server.get("/prompt")["exec_info"]["queue_remaining"] and time.monotonic() < deadline:
        time.sleep(0.05)
    history = server.get("/history")
    assert history["slow"]["status"]["status_str"] == "error"
    assert history["slow"]["status"]["messages"][0][0] == "execution_interrupted"
    assert [k for k in history if k != "slow"] == ids  # ran in their order, with their ids
    output = tmp_path / "output"
    for prompt_id in ids:
        entry = history[prompt_id]
        assert entry["status"]["completed"] is True
        for image in entry["outputs"]["2"]["images"]:
            assert (output / image["filename"]).is_file()


def test_store_recovers_a_running_prompt_and_keeps_pending_ones(tmp_path: Path) -> None:
    store = PromptStore(tmp_path / "db.sqlite3")
    for prompt_id in ("a", "b", "c"):
        store.add(prompt_id, {"1": {}}, {}, ["1"])
    claimed = store.claim_next()
    assert claimed is not None and claimed.id == "a"
    store.close()  # as if the process died here

    store = PromptStore(tmp_path / "db.sqlite3")
    assert store.recover() == ["a"]
    row = store.get("a")
    assert row is not None and row.status == INTERRUPTED
    assert [r.id for r in store.queue()[1]] == ["b", "c"] and store.get("b").status == PENDING  # type: ignore[union-attr]
    nxt = store.claim_next()
    assert nxt is not None and nxt.id == "b"
    store.finish("b", SUCCESS, {}, [])
    assert [r.id for r in store.history(10)] == ["a", "b"]
    store.close()
