"""The store's side of remote workers: picking among pending prompts, requeueing, the worker column."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from server.store import PENDING, RUNNING, PromptRow, PromptStore


def _store(tmp_path: Path, count: int = 3) -> PromptStore:
    store = PromptStore(tmp_path / "db.sqlite3")
    for i in range(count):
        store.add(f"p{i}", {"1": {"class_type": "Number", "inputs": {"value": i}}}, {}, ["1"])
    return store


def test_claim_picked_marks_the_chosen_prompt_running_for_its_worker(tmp_path: Path) -> None:
    store = _store(tmp_path)
    seen: list[list[str]] = []

    def pick_second(rows: list[PromptRow]) -> PromptRow:
        seen.append([r.id for r in rows])
        return rows[1]

    row = store.claim_picked(2, pick_second, "worker-2")
    assert seen == [["p0", "p1"]]
    assert row is not None and (row.id, row.status, row.worker) == ("p1", RUNNING, "worker-2")
    assert store.get("p1").worker == "worker-2"
    assert store.claim_picked(5, lambda rows: None, "worker-1") is None
    assert [r.id for r in store.queue()[1]] == ["p0", "p2"]


def test_a_requeued_prompt_is_pending_again_in_its_old_place(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first = store.claim_picked(1, lambda rows: rows[0], "worker-1")
    assert first is not None and first.id == "p0"
    store.requeue("p0")
    again = store.get("p0")
    assert again is not None and (again.status, again.worker, again.start_time) == (PENDING, None, None)
    assert [r.id for r in store.queue()[1]] == ["p0", "p1", "p2"]


def test_history_and_jobs_name_the_worker_only_when_there_is_one(tmp_path: Path) -> None:
    store = _store(tmp_path, 2)
    store.claim_picked(1, lambda rows: rows[0], "worker-1")
    store.finish("p0", "success", {}, [])
    local = store.claim_next()
    assert local is not None
    store.finish(local.id, "success", {}, [])
    remote, here = store.get("p0"), store.get("p1")
    assert remote is not None and here is not None
    assert remote.history_entry()["worker"] == "worker-1" and remote.job()["worker"] == "worker-1"
    assert "worker" not in here.history_entry() and "worker" not in here.job()


def test_a_database_from_before_remote_workers_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE prompts (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
        " number REAL NOT NULL, status TEXT NOT NULL, prompt TEXT NOT NULL, extra_data TEXT NOT NULL,"
        " outputs_to_execute TEXT NOT NULL, client_id TEXT, workflow_id TEXT, create_time INTEGER NOT NULL,"
        " start_time INTEGER, end_time INTEGER, outputs TEXT, messages TEXT, error TEXT)"
    )
    db.execute(
        "INSERT INTO prompts (id, number, status, prompt, extra_data, outputs_to_execute, create_time)"
        " VALUES ('old', 1, 'pending', '{}', '{}', '[]', 0)"
    )
    db.commit()
    db.close()
    store = PromptStore(path)
    row = store.claim_picked(1, lambda rows: rows[0], "worker-1")
    assert row is not None and row.id == "old" and store.get("old").worker == "worker-1"
