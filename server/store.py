"""The durable queue and history: one SQLite table, one row per prompt, written before any answer.

A row moves ``pending`` → ``running`` → ``success`` | ``error`` | ``interrupted`` (or ``pending`` →
``cancelled``). Pending rows are the queue, ordered by ``(number, seq)``; finished rows are the history,
ordered by the moment they finished and capped at ``history_limit``. On start, ``recover`` marks a row
left ``running`` by a crash as interrupted (or, when asked, queues it again); pending rows keep their
ids and their order.

The database runs in WAL mode. ``add_many`` commits with ``synchronous=FULL``: once it returns, its
prompts survive a crash of the process or of the machine; it takes a whole batch in one transaction,
so the server (``server.intake``) can give twenty concurrent posts one fsync, not twenty. The worker's
own records (claiming a prompt,
recording its outcome) commit with ``synchronous=NORMAL``: they survive a crash of the process, and
the next FULL commit makes them durable in order; a power cut may only take back the newest of them,
which ``recover`` then reports as interrupted. One connection is shared by the event loop's helper
threads and the worker, behind a lock; a second one is the event loop's own (``add_many_now``), which
never waits for a lock: while the other is writing it stores nothing and the caller uses ``add_many``.

The history is capped without scanning it: the store counts its finished rows and, past the cap,
deletes exactly the oldest ones through the ``(end_time, seq)`` index.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

PENDING, RUNNING = "pending", "running"
SUCCESS, ERROR, INTERRUPTED, CANCELLED = "success", "error", "interrupted", "cancelled"
FINISHED = (SUCCESS, ERROR, INTERRUPTED, CANCELLED)

JOB_STATUS = {
    PENDING: "pending",
    RUNNING: "in_progress",
    SUCCESS: "completed",
    ERROR: "failed",
    INTERRUPTED: "cancelled",
    CANCELLED: "cancelled",
}
STATUS_FOR_JOB: dict[str, tuple[str, ...]] = {
    "pending": (PENDING,),
    "in_progress": (RUNNING,),
    "completed": (SUCCESS,),
    "failed": (ERROR,),
    "cancelled": (INTERRUPTED, CANCELLED),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    number REAL NOT NULL,
    status TEXT NOT NULL,
    prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL,
    outputs_to_execute TEXT NOT NULL,
    client_id TEXT,
    workflow_id TEXT,
    create_time INTEGER NOT NULL,
    start_time INTEGER,
    end_time INTEGER,
    outputs TEXT,
    messages TEXT,
    error TEXT,
    worker TEXT
);
CREATE INDEX IF NOT EXISTS prompts_queue ON prompts (status, number, seq);
CREATE INDEX IF NOT EXISTS prompts_finished ON prompts (end_time, seq);
"""


def new_prompt_id() -> str:
    """A fresh prompt id: a UUID of version 7 (RFC 9562), its first 48 bits the time in milliseconds,
    the rest random.

    Ids in time order land at the end of the id index, in the page the last batch wrote. Version 4's
    random ids land on a different page each, and a commit of twelve new prompts into a history of
    10,000 then writes twice the WAL and costs 150–190 µs more (benchmarks/README.md).
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76 | 0x3 << 62) | 0x7 << 76 | 0x2 << 62  # version 7, variant 10
    hex_ = f"{value:032x}"
    return f"{hex_[:8]}-{hex_[8:12]}-{hex_[12:16]}-{hex_[16:20]}-{hex_[20:]}"


class DuplicatePromptId(ValueError):
    """A client asked for a prompt_id that is already queued or in the history."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class NewPrompt:
    """A prompt to queue, as ``POST /prompt`` accepted it."""

    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: Sequence[str]
    number: float | None = None
    front: bool = False
    client_id: str | None = None
    workflow_id: str | None = None


@dataclass(frozen=True)
class PromptRow:
    """One prompt as stored: the queue tuple's fields plus its outcome."""

    seq: int
    id: str
    number: float
    status: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]
    client_id: str | None
    workflow_id: str | None
    create_time: int
    start_time: int | None
    end_time: int | None
    outputs: dict[str, Any]
    messages: list[Any]
    error: dict[str, Any] | None
    worker: str | None = None  # which remote worker runs or ran it (serve --ray); None: this process

    def queue_item(self) -> list[Any]:
        """ComfyUI's 5-tuple ``[number, prompt_id, prompt, extra_data, outputs_to_execute]``."""
        return [_number(self.number), self.id, self.prompt, self.extra_data, self.outputs_to_execute]

    def history_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "prompt": self.queue_item(),
            "outputs": self.outputs,
            "status": {
                "status_str": "success" if self.status == SUCCESS else "error",
                "completed": self.status == SUCCESS,
                "messages": self.messages,
            },
            "meta": {
                node: {"node_id": node, "display_node": node, "parent_node": None, "real_node_id": node}
                for node in self.outputs
            },
        }
        if self.worker is not None:
            entry["worker"] = self.worker
        return entry

    def job(self, full: bool = False) -> dict[str, Any]:
        """The ``/jobs`` view of this prompt (``full`` adds outputs and the workflow)."""
        images = [
            {**image, "nodeId": node, "mediaType": kind}
            for node, ui in self.outputs.items()
            if isinstance(ui, dict)
            for kind, items in ui.items()
            if kind in ("images", "video", "audio") and isinstance(items, list)
            for image in items
            if isinstance(image, dict)
        ]
        count = sum(
            len(items)
            for ui in self.outputs.values()
            if isinstance(ui, dict)
            for items in ui.values()
            if isinstance(items, list)
        )
        finished = self.status in FINISHED
        job: dict[str, Any] = {
            "id": self.id,
            "status": JOB_STATUS[self.status],
            "priority": _number(self.number),
            "create_time": self.create_time,
            "execution_start_time": self.start_time,
            "execution_end_time": self.end_time,
            "outputs_count": count if finished else None,
            "previewable_outputs_count": len(images) if finished else None,
            "preview_output": images[0] if images else None,
            "execution_error": _job_error(self.error),
            "workflow_id": self.workflow_id,
        }
        if self.worker is not None:
            job["worker"] = self.worker
        if full:
            job["outputs"] = self.outputs
            job["workflow"] = {"prompt": self.prompt, "extra_data": self.extra_data}
            job["execution_status"] = self.history_entry()["status"]
        return job


def _job_error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    """An ``execution_error`` as the editor's job schema requires it (strings and a traceback list).

    One job that breaks the schema makes the editor drop the whole list, so every field it requires
    is present with the right type, also for rows recorded by older versions.
    """
    if error is None:
        return None
    traceback = error.get("traceback")
    return {
        **error,
        "node_id": str(error.get("node_id") or ""),
        "node_type": str(error.get("node_type") or ""),
        "exception_message": str(error.get("exception_message") or ""),
        "exception_type": str(error.get("exception_type") or "Error"),
        "traceback": [str(line) for line in traceback] if isinstance(traceback, list) else [],
    }


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


class PromptStore:
    """Queue and history in one SQLite file; every method is one short transaction."""

    def __init__(self, path: Path, history_limit: int = 10_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._history_limit = history_limit
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._durable = True
        self._db.executescript(_SCHEMA)
        # the event loop's own connection (add_many_now): never waits for a lock, always FULL, and
        # leaves WAL checkpoints to the other connection's commits, which run in threads
        self._now_db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=0)
        self._now_db.row_factory = sqlite3.Row
        self._now_db.execute("PRAGMA synchronous=FULL")
        self._now_db.execute("PRAGMA wal_autocheckpoint=0")
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(prompts)")}
        if "worker" not in columns:  # a database written before serve --ray existed
            self._db.execute("ALTER TABLE prompts ADD COLUMN worker TEXT")
        marks = ",".join("?" * len(FINISHED))
        self._finished = int(
            self._db.execute(f"SELECT COUNT(*) FROM prompts WHERE status IN ({marks})", FINISHED).fetchone()[
                0
            ]
        )

    def close(self) -> None:
        with self._lock:
            self._now_db.close()
            self._db.close()

    # -- the queue -------------------------------------------------------------------------------

    def add(
        self,
        prompt_id: str,
        prompt: dict[str, Any],
        extra_data: dict[str, Any],
        outputs_to_execute: Sequence[str],
        *,
        number: float | None = None,
        front: bool = False,
        client_id: str | None = None,
        workflow_id: str | None = None,
    ) -> float:
        """Commit one pending prompt and return its queue number (lower runs first)."""
        new = NewPrompt(
            prompt_id, prompt, extra_data, list(outputs_to_execute), number, front, client_id, workflow_id
        )
        result = self.add_many([new])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def add_many(self, batch: Sequence[NewPrompt]) -> list[float | DuplicatePromptId]:
        """Commit ``batch`` in one FULL transaction: per prompt its queue number, or the error that
        refused it alone (a duplicate id). Nothing is stored if it raises."""
        with self._lock, self._tx():
            return _insert(self._db, batch)

    def add_many_now(self, batch: Sequence[NewPrompt]) -> list[float | DuplicatePromptId] | None:
        """(the event loop) ``add_many`` on the loop's own connection, without waiting: None, with
        nothing stored, while another connection (the worker's, another process) is writing.

        A commit in a thread costs the event loop more than the commit itself: SQLite lets go of the
        interpreter at every statement, and the thread then waits for the busy loop to hand it back.
        On a disk with a fast fsync, committing on the loop is the cheaper way to stay durable.
        """
        try:
            with _Transaction(self._now_db):
                return _insert(self._now_db, batch)
        except sqlite3.OperationalError as exc:
            if self._now_db.in_transaction:  # a COMMIT refused (busy) leaves it open
                self._now_db.execute("ROLLBACK")
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY:
                return None
            raise

    def claim_next(self) -> PromptRow | None:
        """Mark the first pending prompt running and return it (None when the queue is empty)."""
        with self._lock, self._tx(durable=False):
            row = self._db.execute(
                "SELECT * FROM prompts WHERE status = ? ORDER BY number, seq LIMIT 1", (PENDING,)
            ).fetchone()
            if row is None:
                return None
            start = now_ms()
            self._db.execute(
                "UPDATE prompts SET status = ?, start_time = ? WHERE seq = ?", (RUNNING, start, row["seq"])
            )
        return _row({**dict(row), "status": RUNNING, "start_time": start})

    def claim_picked(
        self, window: int, pick: Callable[[list[PromptRow]], PromptRow | None], worker: str
    ) -> PromptRow | None:
        """Mark running, for ``worker``, the prompt ``pick`` chooses among the first ``window`` pending."""
        with self._lock, self._tx(durable=False):
            rows = self._db.execute(
                "SELECT * FROM prompts WHERE status = ? ORDER BY number, seq LIMIT ?", (PENDING, window)
            ).fetchall()
            chosen = pick([_row(dict(r)) for r in rows]) if rows else None
            if chosen is None:
                return None
            start = now_ms()
            self._db.execute(
                "UPDATE prompts SET status = ?, start_time = ?, worker = ? WHERE seq = ?",
                (RUNNING, start, worker, chosen.seq),
            )
        return replace(chosen, status=RUNNING, start_time=start, worker=worker)

    def requeue(self, prompt_id: str) -> None:
        """A running prompt whose worker was lost goes back to pending, keeping its place in line."""
        with self._lock, self._tx(durable=False):
            self._db.execute(
                "UPDATE prompts SET status = ?, start_time = NULL, worker = NULL WHERE id = ? AND status = ?",
                (PENDING, prompt_id, RUNNING),
            )

    def finish(
        self,
        prompt_id: str,
        status: str,
        outputs: dict[str, Any],
        messages: list[Any],
        error: dict[str, Any] | None = None,
    ) -> None:
        """Record the outcome of a prompt (its output files are already on disk) and trim history."""
        with self._lock, self._tx(durable=False):
            cur = self._db.execute(
                "UPDATE prompts SET status = ?, end_time = ?, outputs = ?, messages = ?, error = ?"
                " WHERE id = ? AND status NOT IN (?, ?, ?, ?)",
                (status, now_ms(), _dump(outputs), _dump(messages), _dump(error), prompt_id, *FINISHED),
            )
            self._finished += cur.rowcount
            self._trim()

    def recover(self, rerun: bool = False) -> list[str]:
        """After a crash or restart: a prompt left running is recorded as interrupted, or with ``rerun``
        queued again (it keeps its number, so its place). Returns the ids of those prompts."""
        with self._lock, self._tx():
            ids = [r["id"] for r in self._db.execute("SELECT id FROM prompts WHERE status = ?", (RUNNING,))]
            for prompt_id in ids:
                if rerun:
                    self._db.execute(
                        "UPDATE prompts SET status = ?, start_time = NULL WHERE id = ?", (PENDING, prompt_id)
                    )
                    continue
                note = {
                    "prompt_id": prompt_id,
                    "node_id": None,
                    "node_type": None,
                    "executed": [],
                    "timestamp": now_ms(),
                    "reason": "server restarted while this prompt was running",
                }
                self._db.execute(
                    "UPDATE prompts SET status = ?, end_time = ?, outputs = '{}', messages = ? WHERE id = ?",
                    (INTERRUPTED, now_ms(), _dump([["execution_interrupted", note]]), prompt_id),
                )
            self._finished += len(ids)
            self._trim()
        return ids

    def queue(self) -> tuple[list[PromptRow], list[PromptRow]]:
        """(running, pending), each in run order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM prompts WHERE status IN (?, ?) ORDER BY number, seq", (RUNNING, PENDING)
            ).fetchall()
        items = [_row(dict(r)) for r in rows]
        return [r for r in items if r.status == RUNNING], [r for r in items if r.status == PENDING]

    def queue_remaining(self) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) AS n FROM prompts WHERE status IN (?, ?)", (RUNNING, PENDING)
            ).fetchone()
        return int(row["n"])

    def delete_pending(self, ids: Iterable[str] | None = None) -> int:
        """Drop pending prompts (all of them when ``ids`` is None); running ones need an interrupt."""
        with self._lock, self._tx():
            if ids is None:
                cur = self._db.execute("DELETE FROM prompts WHERE status = ?", (PENDING,))
            else:
                cur = self._db.executemany(
                    "DELETE FROM prompts WHERE status = ? AND id = ?", [(PENDING, i) for i in ids]
                )
        return cur.rowcount

    def cancel_pending(self, ids: Iterable[str]) -> list[str]:
        """Move pending prompts to the history as cancelled; returns the ids that were pending."""
        done = []
        with self._lock, self._tx():
            for prompt_id in ids:
                cur = self._db.execute(
                    "UPDATE prompts SET status = ?, end_time = ?, outputs = '{}', messages = '[]'"
                    " WHERE id = ? AND status = ?",
                    (CANCELLED, now_ms(), prompt_id, PENDING),
                )
                if cur.rowcount:
                    done.append(prompt_id)
            self._finished += len(done)
            self._trim()
        return done

    # -- the history -----------------------------------------------------------------------------

    def get(self, prompt_id: str) -> PromptRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM prompts WHERE id = ?", (prompt_id,)).fetchone()
        return _row(dict(row)) if row else None

    def history(self, max_items: int, offset: int = 0) -> list[PromptRow]:
        """Finished prompts, oldest first; with no offset, the newest ``max_items`` of them."""
        with self._lock:
            if offset <= 0:
                rows = self._db.execute(
                    "SELECT * FROM (SELECT * FROM prompts WHERE status IN (?, ?, ?, ?)"
                    " ORDER BY end_time DESC, seq DESC LIMIT ?) ORDER BY end_time, seq",
                    (*FINISHED, max_items),
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM prompts WHERE status IN (?, ?, ?, ?)"
                    " ORDER BY end_time, seq LIMIT ? OFFSET ?",
                    (*FINISHED, max_items, offset),
                ).fetchall()
        return [_row(dict(r)) for r in rows]

    def delete_history(self, ids: Iterable[str] | None = None) -> int:
        with self._lock, self._tx():
            marks = ",".join("?" * len(FINISHED))
            if ids is None:
                cur = self._db.execute(f"DELETE FROM prompts WHERE status IN ({marks})", FINISHED)
            else:
                cur = self._db.executemany(
                    f"DELETE FROM prompts WHERE id = ? AND status IN ({marks})", [(i, *FINISHED) for i in ids]
                )
            self._finished -= cur.rowcount
        return cur.rowcount

    def jobs(
        self,
        statuses: Sequence[str],
        limit: int,
        offset: int,
        *,
        sort_by: str = "create_time",
        descending: bool = True,
        workflow_id: str | None = None,
    ) -> tuple[list[PromptRow], int]:
        """A page of prompts with the given stored statuses, and how many match in all."""
        if not statuses:
            return [], 0
        column = {"create_time": "create_time", "execution_duration": "(end_time - start_time)"}.get(
            sort_by, "create_time"
        )
        order = "DESC" if descending else "ASC"
        where = f"status IN ({','.join('?' * len(statuses))})"
        args: list[Any] = list(statuses)
        if workflow_id is not None:
            where += " AND workflow_id = ?"
            args.append(workflow_id)
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) AS n FROM prompts WHERE {where}", args).fetchone()["n"]
            rows = self._db.execute(
                f"SELECT * FROM prompts WHERE {where}"
                f" ORDER BY {column} {order}, seq {order} LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return [_row(dict(r)) for r in rows], int(total)

    # -- internals -------------------------------------------------------------------------------

    def _trim(self) -> None:
        """Delete the oldest finished rows beyond the cap (``+status``: walk the end_time index)."""
        excess = self._finished - self._history_limit
        if excess <= 0:
            return
        marks = ",".join("?" * len(FINISHED))
        cur = self._db.execute(
            "DELETE FROM prompts WHERE seq IN (SELECT seq FROM prompts WHERE end_time IS NOT NULL"
            f" AND +status IN ({marks}) ORDER BY end_time, seq LIMIT ?)",
            (*FINISHED, excess),
        )
        self._finished -= cur.rowcount

    def _tx(self, durable: bool = True) -> _Transaction:
        if durable != self._durable:  # outside any transaction, as SQLite requires
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._durable = durable
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


INSERT_ROWS = 100  # rows per INSERT statement: 900 variables, under every SQLite's limit
_INSERT = (
    "INSERT INTO prompts (id, number, status, prompt, extra_data, outputs_to_execute, client_id,"
    " workflow_id, create_time) VALUES "
)
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _insert(db: sqlite3.Connection, batch: Sequence[NewPrompt]) -> list[float | DuplicatePromptId]:
    """(inside a write transaction on ``db``) Insert ``batch`` as ``PromptStore.add_many`` describes.

    The rows go in as multi-row INSERTs of up to ``INSERT_ROWS``: SQLite lets go of the interpreter for
    every statement, and a thread that needs it back waits its turn behind the event loop. A duplicate
    id fails its whole statement; the batch then goes in row by row so only that prompt is refused.
    """
    numbers = _numbers(db, batch)
    created = now_ms()
    rows = [
        (
            new.prompt_id,
            number,
            PENDING,
            _dump(new.prompt),
            _dump(new.extra_data),
            _dump(list(new.outputs_to_execute)),
            new.client_id,
            new.workflow_id,
            created,
        )
        for new, number in zip(batch, numbers, strict=True)
    ]
    start = 0
    try:
        for start in range(0, len(rows), INSERT_ROWS):
            chunk = rows[start : start + INSERT_ROWS]
            db.execute(_INSERT + ", ".join([_ROW] * len(chunk)), [v for r in chunk for v in r])
    except sqlite3.IntegrityError:  # the failed statement left nothing; undo the ones before it
        if start:
            marks = ", ".join("?" * start)
            db.execute(f"DELETE FROM prompts WHERE id IN ({marks})", [r[0] for r in rows[:start]])
    else:
        return list(numbers)
    results: list[float | DuplicatePromptId] = []
    for row in rows:
        try:
            db.execute(_INSERT + _ROW, row)
            results.append(row[1])
        except sqlite3.IntegrityError as exc:
            error = DuplicatePromptId(row[0])
            error.__cause__ = exc
            results.append(error)
    return results


def _numbers(db: sqlite3.Connection, batch: Sequence[NewPrompt]) -> list[float]:
    """Queue numbers for ``batch``, in order: a prompt's own number, else the next sequence number
    (above every number given so far), negated and ahead of everything pending for ``front``."""
    base = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM prompts").fetchone()["n"]
    lowest: float | None = None  # the lowest pending number, this batch's included
    numbers: list[float] = []
    for offset, new in enumerate(batch):
        number = new.number
        if number is None:
            number = -float(base + offset) if new.front else float(base + offset)
            if new.front:  # ahead of everything pending, including earlier front prompts
                if lowest is None:
                    stored = db.execute(
                        "SELECT MIN(number) AS m FROM prompts WHERE status = ?", (PENDING,)
                    ).fetchone()["m"]
                    lowest = min([n for n in (stored, *numbers) if n is not None], default=None)
                if lowest is not None and lowest <= number:
                    number = lowest - 1
        numbers.append(number)
        if lowest is not None:
            lowest = min(lowest, number)
    return numbers


_dump = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode  # one encoder, not one per call


def _row(row: dict[str, Any]) -> PromptRow:
    def load(key: str, default: Any) -> Any:
        raw = row.get(key)
        return default if raw is None else json.loads(raw)

    return PromptRow(
        seq=row["seq"],
        id=row["id"],
        number=row["number"],
        status=row["status"],
        prompt=load("prompt", {}),
        extra_data=load("extra_data", {}),
        outputs_to_execute=load("outputs_to_execute", []),
        client_id=row["client_id"],
        workflow_id=row["workflow_id"],
        create_time=row["create_time"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        outputs=load("outputs", {}),
        messages=load("messages", []),
        error=load("error", None),
        worker=row.get("worker"),
    )
