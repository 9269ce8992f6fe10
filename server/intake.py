"""Accepting prompts: concurrent posts share one durable commit (group commit) without a thread each.

A handler awaits ``Intake.add``; the first one starts a commit task, which hands every prompt waiting
at that moment to ``PromptStore.add_many`` (one transaction, one fsync) in one worker thread, answers
each waiting handler, and goes on while more arrived meanwhile. So a burst of posts costs one fsync per
commit rather than one per prompt, each prompt is still on disk before its answer, and no handler
holds a thread of the default pool while it waits. When fewer posts wait than the last commit took,
the next commit waits ``GATHER_S`` for the others (the posters that just got their answers are about
to send their next prompts), so a steady stream of posts fills each fsync rather than splitting into
half-empty ones.
"""

from __future__ import annotations

import asyncio

from server.store import DuplicatePromptId, NewPrompt, PromptStore

GATHER_S = 0.001  # how long a commit waits for the posters of the last batch to come back


class Intake:
    """The event loop's side of ``PromptStore.add_many``."""

    def __init__(self, store: PromptStore) -> None:
        self._store = store
        self._waiting: list[tuple[NewPrompt, asyncio.Future[float]]] = []
        self._committer: asyncio.Task[None] | None = None
        self.commits = 0
        self._last_batch = 0
        self._committing = 0

    async def add(self, new: NewPrompt) -> float:
        """Commit ``new``; return its queue number.

        Raises :class:`DuplicatePromptId` for an id in use, or what the commit itself raised.
        """
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting.append((new, future))
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
                try:
                    results = await asyncio.to_thread(self._store.add_many, [n for n, _ in batch])
                except Exception as exc:  # nothing of this batch is stored: every poster hears why
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                finally:
                    self._committing = 0
                self.commits += 1
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # its request went away meanwhile; the prompt stays queued
                        continue
                    if isinstance(result, DuplicatePromptId):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._committer = None
