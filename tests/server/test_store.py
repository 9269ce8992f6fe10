"""Group commit of concurrent posts (on the event loop or in a thread), and the history cap."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import server.intake
from server.intake import Intake
from server.store import ERROR, INSERT_ROWS, SUCCESS, DuplicatePromptId, NewPrompt, PromptStore
from tests.server.conftest import square_prompt


async def test_concurrent_posts_share_commits_and_a_duplicate_fails_only_itself(tmp_path: Path) -> None:
    store = PromptStore(tmp_path / "db.sqlite3")
    store.add("taken", square_prompt(), {}, ["2"])
    intake = Intake(store)
    ids = [f"p{i}" for i in range(40)] + ["taken"]
    results = await asyncio.gather(
        *(intake.add(NewPrompt(i, square_prompt(), {}, ["2"])) for i in ids), return_exceptions=True
    )
    assert isinstance(results[-1], DuplicatePromptId)
    numbers = [r for r in results[:-1] if isinstance(r, float)]
    assert len(set(numbers)) == 40 and numbers == sorted(numbers)  # queued in the order posted
    assert 1 <= intake.commits < 41  # several prompts per commit
    store.close()
    reopened = PromptStore(tmp_path / "db.sqlite3")  # every acknowledged prompt is on disk
    assert len(reopened.queue()[1]) == 41
    reopened.close()


@pytest.mark.parametrize("method", ["add_many", "add_many_now"])
def test_a_batch_keeps_queue_order_front_and_own_numbers_and_refuses_only_duplicates(
    tmp_path: Path, method: str
) -> None:
    """One batch larger than an INSERT statement, with front prompts, an explicit number and a duplicate
    in a later statement: the duplicate alone is refused and the queue runs in the expected order."""
    store = PromptStore(tmp_path / "db.sqlite3")
    store.add("old", square_prompt(), {}, ["2"])
    batch = [NewPrompt(f"p{i}", square_prompt(), {}, ["2"]) for i in range(INSERT_ROWS + 20)]
    batch[3] = NewPrompt("f1", square_prompt(), {}, ["2"], front=True)
    batch[7] = NewPrompt("f2", square_prompt(), {}, ["2"], front=True)
    batch[9] = NewPrompt("own", square_prompt(), {}, ["2"], number=0.5)
    batch[INSERT_ROWS + 5] = NewPrompt("old", square_prompt(), {}, ["2"])  # already queued
    results = getattr(store, method)(batch)
    assert results is not None and isinstance(results[INSERT_ROWS + 5], DuplicatePromptId)
    assert sum(isinstance(r, DuplicatePromptId) for r in results) == 1
    order = [row.id for row in iter(store.claim_next, None)]
    plain = [n.prompt_id for n in batch if n.prompt_id not in ("f1", "f2", "own", "old")]
    assert order == ["f2", "f1", "own", "old", *plain]  # the later front prompt runs first, as in ComfyUI
    store.close()
    store = PromptStore(tmp_path / "db.sqlite3")
    store.add_many([NewPrompt("again", square_prompt(), {}, ["2"])])
    assert store.claim_next().id == "again"  # nothing of the refused statements was left behind
    store.close()


def test_a_commit_on_the_loop_never_waits_for_another_writer(tmp_path: Path) -> None:
    store = PromptStore(tmp_path / "db.sqlite3")
    other = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process (or the worker) is writing
    started = time.monotonic()
    assert store.add_many_now([NewPrompt("p", square_prompt(), {}, ["2"])]) is None
    assert time.monotonic() - started < 1  # the store's other connection would wait up to 30 s
    other.execute("COMMIT")
    assert store.queue() == ([], [])  # nothing of the refused attempt was stored
    assert store.add_many_now([NewPrompt("p", square_prompt(), {}, ["2"])]) == [1.0]
    other.close()
    store.close()


def test_a_commit_refused_as_busy_leaves_no_transaction_open(tmp_path: Path) -> None:
    """(a rollback-journal database, on a file system without WAL, can refuse the COMMIT itself)"""
    store = PromptStore(tmp_path / "db.sqlite3")
    other = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None, timeout=0).execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        busy = exc
    other.execute("COMMIT")
    real = store._now_db

    class RefusesCommit:
        in_transaction = property(lambda self: real.in_transaction)

        def execute(self, sql: str, *args: Any) -> Any:
            if sql == "COMMIT":
                raise busy
            return real.execute(sql, *args)

    store._now_db = RefusesCommit()  # type: ignore[assignment]
    assert store.add_many_now([NewPrompt("p", square_prompt(), {}, ["2"])]) is None
    assert not real.in_transaction and store.queue() == ([], [])
    store._now_db = real
    assert store.add_many_now([NewPrompt("p", square_prompt(), {}, ["2"])]) == [1.0]
    other.close()
    store.close()


class Recording(PromptStore):
    """Records where each batch was committed; ``slow_s``: each commit on the loop takes this long."""

    slow_s = 0.0

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.where: list[str] = []

    def add_many(self, batch: Any) -> Any:
        self.where.append(
            "main thread" if threading.current_thread() is threading.main_thread() else "thread"
        )
        return super().add_many(batch)

    def add_many_now(self, batch: Any) -> Any:
        time.sleep(self.slow_s)
        results = super().add_many_now(batch)
        self.where.append("loop" if results is not None else "busy")
        return results


async def test_small_batches_commit_on_the_loop_and_the_rest_in_a_thread(tmp_path: Path) -> None:
    store = Recording(tmp_path / "db.sqlite3")
    intake = Intake(store)
    prompt = NewPrompt("small", square_prompt(), {}, ["2"])
    assert await intake.add(prompt, 300) == 1.0
    big = server.intake.LOOP_COMMIT_BYTES + 1
    await intake.add(NewPrompt("big", square_prompt(), {}, ["2"]), big)
    await intake.add(NewPrompt("chunked", square_prompt(), {}, ["2"]))  # a body of unknown length
    assert store.where == ["loop", "thread", "thread"]
    store.close()


async def test_while_another_connection_writes_the_commit_waits_in_a_thread(tmp_path: Path) -> None:
    """The loop keeps serving while the prompt waits for the write lock; it is stored once free."""
    store = Recording(tmp_path / "db.sqlite3")
    intake = Intake(store)
    other = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.get_running_loop().create_task(tick())
    posting = asyncio.get_running_loop().create_task(
        intake.add(NewPrompt("p", square_prompt(), {}, ["2"]), 300)
    )
    await asyncio.sleep(0.3)
    assert not posting.done() and ticks >= 10
    await asyncio.to_thread(other.execute, "COMMIT")
    assert await posting == 1.0
    ticker.cancel()
    assert store.where == ["busy", "thread"]
    other.close()
    store.close()


async def test_after_a_slow_commit_on_the_loop_commits_go_to_a_thread_for_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk with a slow fsync stalls the event loop at most once per THREAD_FOR_S."""
    monkeypatch.setattr(server.intake, "THREAD_FOR_S", 0.2)
    store = Recording(tmp_path / "db.sqlite3")
    store.slow_s = server.intake.SLOW_COMMIT_S * 2
    intake = Intake(store)
    for i in range(3):
        await intake.add(NewPrompt(f"p{i}", square_prompt(), {}, ["2"]), 300)
    await asyncio.sleep(0.25)
    store.slow_s = 0.0
    for i in range(3, 5):
        await intake.add(NewPrompt(f"p{i}", square_prompt(), {}, ["2"]), 300)
    assert store.where == ["loop", "thread", "thread", "loop", "loop"]
    store.close()


def test_history_is_capped_exactly_and_survives_reopening(tmp_path: Path) -> None:
    store = PromptStore(tmp_path / "db.sqlite3", history_limit=5)
    for i in range(12):
        store.add(f"p{i}", square_prompt(), {}, ["2"])
    for i in range(8):
        row = store.claim_next()
        assert row is not None
        store.finish(row.id, SUCCESS if i % 2 else ERROR, {}, [])
    assert [row.id for row in store.history(100)] == [f"p{i}" for i in range(3, 8)]
    assert store.cancel_pending(["p10", "p11"]) == ["p10", "p11"]
    assert [row.id for row in store.history(100)] == ["p5", "p6", "p7", "p10", "p11"]
    assert store.delete_history(["p6"]) == 1
    store.close()
    store = PromptStore(tmp_path / "db.sqlite3", history_limit=5)
    row = store.claim_next()
    assert row is not None and row.id == "p8"
    store.finish(row.id, SUCCESS, {}, [])
    assert [row.id for row in store.history(100)] == ["p5", "p7", "p10", "p11", "p8"]
    store.close()
