"""The worker thread's scheduling: a burst of posts is answered before the worker takes more prompts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from server.hub import Hub
from server.store import NewPrompt, PromptStore
from server.worker import DEFER_BACKLOG, DEFER_MAX_S, PromptWorker
from tests.server.conftest import square_prompt


class InstantExecutor:
    """Runs every prompt at once and records when."""

    def __init__(self) -> None:
        self.ran: list[float] = []

    def run(self, prompt: Any, **_: Any) -> Any:
        self.ran.append(time.monotonic())
        return SimpleNamespace(status="success", ui={})

    def free(self) -> None:
        pass


@pytest.mark.parametrize("defers", [True, False])
async def test_while_posts_keep_coming_a_long_queue_waits_and_drains_after(
    tmp_path: Path, defers: bool
) -> None:
    store = PromptStore(tmp_path / "db.sqlite3")
    queued = DEFER_BACKLOG + 16
    store.add_many([NewPrompt(f"p{i}", square_prompt(), {}, ["2"]) for i in range(queued)])
    executor = InstantExecutor()
    worker = PromptWorker(store, executor, Hub(), asyncio.get_running_loop(), defer_to_posts=defers)
    posting = 0.3
    worker.wake()
    worker.start()
    try:
        until = time.monotonic() + posting
        while time.monotonic() < until:  # a post every millisecond, as a burst of clients sends them
            worker.wake()
            await asyncio.sleep(0.001)
        during = len(executor.ran)
        deadline = time.monotonic() + 10
        while len(executor.ran) < queued and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        await asyncio.to_thread(worker.stop)
        store.close()
    assert len(executor.ran) == queued  # everything runs once the posts stop
    if defers:  # at most one prompt per DEFER_MAX_S while the queue is long and posts keep coming
        assert during <= posting / DEFER_MAX_S + 2
    else:
        assert during > posting / DEFER_MAX_S + 2
