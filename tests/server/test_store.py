"""Group commit of concurrent posts, and the history cap."""

from __future__ import annotations

import asyncio
from pathlib import Path

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


def test_a_batch_keeps_queue_order_front_and_own_numbers_and_refuses_only_duplicates(tmp_path: Path) -> None:
    """One batch larger than an INSERT statement, with front prompts, an explicit number and a duplicate
    in a later statement: the duplicate alone is refused and the queue runs in the expected order."""
    store = PromptStore(tmp_path / "db.sqlite3")
    store.add("old", square_prompt(), {}, ["2"])
    batch = [NewPrompt(f"p{i}", square_prompt(), {}, ["2"]) for i in range(INSERT_ROWS + 20)]
    batch[3] = NewPrompt("f1", square_prompt(), {}, ["2"], front=True)
    batch[7] = NewPrompt("f2", square_prompt(), {}, ["2"], front=True)
    batch[9] = NewPrompt("own", square_prompt(), {}, ["2"], number=0.5)
    batch[INSERT_ROWS + 5] = NewPrompt("old", square_prompt(), {}, ["2"])  # already queued
    results = store.add_many(batch)
    assert isinstance(results[INSERT_ROWS + 5], DuplicatePromptId)
    assert sum(isinstance(r, DuplicatePromptId) for r in results) == 1
    order = [row.id for row in iter(store.claim_next, None)]
    plain = [n.prompt_id for n in batch if n.prompt_id not in ("f1", "f2", "own", "old")]
    assert order == ["f2", "f1", "own", "old", *plain]  # the later front prompt runs first, as in ComfyUI
    store.close()
    store = PromptStore(tmp_path / "db.sqlite3")
    store.add_many([NewPrompt("again", square_prompt(), {}, ["2"])])
    assert store.claim_next().id == "again"  # nothing of the refused statements was left behind
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
