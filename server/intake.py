"""Accepting prompts: concurrent posts share one durable commit (group commit) without a thread each.

A handler awaits ``Intake.add``; the first one starts a commit task, which hands every prompt waiting
at that moment to the store in one transaction with one fsync, answers each waiting handler, and goes
on while more arrived meanwhile. So a burst of posts costs one fsync per commit rather than one per
prompt, and each prompt is on disk before its answer. When fewer posts wait than the last commit took,
the next commit waits ``GATHER_S`` for the others (the posters that just got their answers are about to
send their next prompts), so a steady stream of posts fills each fsync rather than splitting into
half-empty ones.

A commit runs on the event loop itself (``PromptStore.add_many_now``) when that is cheap: the batch is
small, nobody else is writing, and the last commit on the loop was quick. A commit in a thread would
hand the interpreter back and forth with the loop at every SQLite statement: a 0.2 ms commit took
1.7 ms during a burst, and on the loop the burst's accepted rate rose 6–17% (A/B in
benchmarks/results/vs_comfyui.md). Otherwise (big prompts, the worker mid-write, a disk whose fsync is slow)
the batch is committed in a thread, and after a slow commit on the loop every commit goes to a thread
for ``THREAD_FOR_S``, so a slow disk stalls the loop at most once in that time.
"""

from __future__ import annotations

import asyncio
import time

from server.store import DuplicatePromptId, NewPrompt, PromptStore

GATHER_S = 0.001  # how long a commit waits for the posters of the last batch to come back
LOOP_COMMIT_BYTES = 256 * 1024  # bigger batches (of request bodies) are committed in a thread
SLOW_COMMIT_S = 0.005  # a commit on the loop slower than this sends the next ones to a thread ...
THREAD_FOR_S = 1.0  # ... for this long


class Intake:
    """The event loop's side of ``PromptStore.add_many``."""

    def __init__(self, store: PromptStore) -> None:
        self._store = store
        self._waiting: list[tuple[NewPrompt, int, asyncio.Future[float]]] = []
        self._committer: asyncio.Task[None] | None = None
        self.commits = 0
        self._last_batch = 0
        self._committing = 0
        self._threads_until = 0.0  # commit in threads until this time.monotonic()

    async def add(self, new: NewPrompt, size: int | None = None) -> float:
        """Commit ``new``; return its queue number. ``size``: its request body's bytes, None when unknown
        (a chunked body; its batch is then committed in a thread).

        Raises :class:`DuplicatePromptId` for an id in use, or what the commit itself raised.
        """
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting.append((new, LOOP_COMMIT_BYTES + 1 if size is None else size, future))
        if self._committer is None:
            self._committer = asyncio.get_running_loop().create_task(self._commit_all())
        return await future

    def posters_waiting(self) -> int:
        """(any thread) How many posts wait for their commit now, the one under way included."""
        return len(self._waiting) + self._committing

    async def _commit_all(self) -> None:
        try:
            while self._waiting:
                if len(self._waiting) < self._last_batch:
                    await asyncio.sleep(GATHER_S)
                batch, self._waiting = self._waiting, []
                self._last_batch = self._committing = len(batch)
                prompts = [n for n, _, _ in batch]
                try:
                    results = self._commit_on_loop(prompts, sum(size for _, size, _ in batch))
                    if results is None:
                        results = await asyncio.to_thread(self._store.add_many, prompts)
                except Exception as exc:  # nothing of this batch is stored: every poster hears why
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                finally:
                    self._committing = 0
                self.commits += 1
                for (_, _, future), result in zip(batch, results, strict=True):
                    if future.done():  # its request went away meanwhile; the prompt stays queued
                        continue
                    if isinstance(result, DuplicatePromptId):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._committer = None

    def _commit_on_loop(self, prompts: list[NewPrompt], size: int) -> list[float | DuplicatePromptId] | None:
        """The batch committed right here, or None when it is to be committed in a thread."""
        if size > LOOP_COMMIT_BYTES or time.monotonic() < self._threads_until:
            return None
        start = time.monotonic()
        results = self._store.add_many_now(prompts)
        end = time.monotonic()
        if end - start > SLOW_COMMIT_S:
            self._threads_until = end + THREAD_FOR_S
        return results
