"""The worker thread's scheduling: a burst of posts is answered before the worker takes more prompts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from server.hub import Hub
from server.intake import Intake
from server.store import NewPrompt, PromptStore
from server.worker import DEFER_MAX_S, PromptWorker
from tests.server.conftest import square_prompt


class SleepyExecutor:
    """Runs every prompt in ``seconds`` (sleeping) and records when it finished."""

    def __init__(self, seconds: float) -> None:
        self.ran: list[float] = []
        self.seconds = seconds

    def run(self, prompt: Any, **_: Any) -> Any:
        time.sleep(self.seconds)
        self.ran.append(time.monotonic())
        return SimpleNamespace(status="success", ui={})

    def free(self) -> None:
        pass


def queue_of(store: PromptStore, count: int, prefix: str = "p") -> list[NewPrompt]:
    return [NewPrompt(f"{prefix}{i}", square_prompt(), {}, ["2"]) for i in range(count)]


@pytest.mark.parametrize("defers", [True, False])
async def test_while_a_burst_waits_for_its_commits_the_worker_waits_and_goes_on_after(
    tmp_path: Path, defers: bool
) -> None:
    """20 posters post back to back through the intake (each post costing the loop 0.2 ms, as checking
    it does) while 1 ms prompts are queued: the worker lets them through (at most one prompt per
    DEFER_MAX_S), and runs prompts again as soon as they stop."""
    store = PromptStore(tmp_path / "db.sqlite3")
    store.add_many(queue_of(store, 50))
    intake = Intake(store)
    executor = SleepyExecutor(0.001)
    waiting = intake.posters_waiting if defers else None
    worker = PromptWorker(store, executor, Hub(), asyncio.get_running_loop(), posters_waiting=waiting)
    posting = 0.3
    worker.start()
    try:
        until = time.monotonic() + posting

        async def poster(name: str) -> None:
            for i in range(10**6):
                if time.monotonic() >= until:
                    return
                busy = time.perf_counter() + 0.0002
                while time.perf_counter() < busy:  # the loop checks the post, holding the interpreter
                    pass
                await intake.add(NewPrompt(f"{name}-{i}", square_prompt(), {}, ["2"]))
                worker.wake()

        await asyncio.gather(*(poster(f"c{c}") for c in range(20)))
        during = len(executor.ran)
        await asyncio.sleep(0.3)
        after = len(executor.ran) - during
    finally:
        await asyncio.to_thread(worker.stop)
        store.close()
    assert after > 30  # at its own pace again (a prompt costs ~1 ms and a commit here)
    if defers:
        assert during <= posting / DEFER_MAX_S + 4
    else:
        assert during > 2 * (posting / DEFER_MAX_S + 4)


async def test_clients_that_wait_for_their_results_are_never_held_back(tmp_path: Path) -> None:
    """Each finished prompt brings its client's next post: the worker runs at its own pace."""
    store = PromptStore(tmp_path / "db.sqlite3")
    store.add_many(queue_of(store, 100))
    intake = Intake(store)
    executor = SleepyExecutor(0.0)
    loop = asyncio.get_running_loop()
    worker = PromptWorker(store, executor, Hub(), loop, posters_waiting=intake.posters_waiting)
    sleep = executor.run
    reposted = 0

    async def repost() -> None:
        nonlocal reposted
        reposted += 1
        await intake.add(NewPrompt(f"again{reposted}", square_prompt(), {}, ["2"]))

    def run_and_repost(prompt: Any, **kwargs: Any) -> Any:
        if reposted < 200:
            asyncio.run_coroutine_threadsafe(repost(), loop)  # its client posts the next one
        return sleep(prompt, **kwargs)

    executor.run = run_and_repost  # type: ignore[method-assign]
    began = time.monotonic()
    worker.start()
    try:
        while len(executor.ran) < 300 and time.monotonic() - began < 20:
            await asyncio.sleep(0.005)
    finally:
        await asyncio.to_thread(worker.stop)
        store.close()
    assert len(executor.ran) == 300
    assert time.monotonic() - began < 300 * DEFER_MAX_S / 10  # never held for a whole DEFER_MAX_S per prompt
