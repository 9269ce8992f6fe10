"""The store's group commit and its history cap."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from server.store import ERROR, SUCCESS, DuplicatePromptId, PromptStore
from tests.server.conftest import square_prompt


def test_concurrent_adds_share_commits_and_a_duplicate_fails_only_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PromptStore(tmp_path / "db.sqlite3")
    store.add("taken", square_prompt(), {}, ["2"])
    batches: list[int] = []
    commit = store._commit_adds

    def counted(batch: list) -> None:  # type: ignore[type-arg]
        batches.append(len(batch))
        commit(batch)

    monkeypatch.setattr(store, "_commit_adds", counted)
    start = threading.Barrier(21)
    errors: dict[str, Exception] = {}

    def post(prompt_id: str) -> None:
        start.wait()
        try:
            store.add(prompt_id, square_prompt(), {}, ["2"])
        except DuplicatePromptId as exc:
            errors[prompt_id] = exc

    threads = [threading.Thread(target=post, args=(f"p{i}",)) for i in range(20)]
    threads.append(threading.Thread(target=post, args=("taken",)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert list(errors) == ["taken"]
    assert sum(batches) == 21 and len(batches) < 21  # some commits carried several prompts
    pending = store.queue()[1]
    assert len(pending) == 21 and len({row.number for row in pending}) == 21
    store.close()
    reopened = PromptStore(tmp_path / "db.sqlite3")  # every acknowledged prompt is on disk
    assert len(reopened.queue()[1]) == 21
    reopened.close()


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
