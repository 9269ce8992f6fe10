"""The one worker thread: takes prompts from the store, runs them, streams their events to the loop.

The executor (and its warm node cache) lives for the whole server, so a prompt that repeats earlier
work runs only what changed. ``interrupt`` sets the running prompt's CancelToken, which the runtime
checks between nodes and at every sampler step.

Each run's events become ComfyUI messages in :mod:`server.messages`; they cross to the event loop in
batches (one ``call_soon_threadsafe`` per batch, not per message), in order, together with the
queue-length broadcasts, so a prompt of many small nodes does not flood the loop with wake-ups.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from graph_runtime.context import CancelToken
from graph_runtime.events import Event, Executing
from server.hub import Hub
from server.messages import PromptMessages, wants_previews
from server.redact import redact
from server.store import ERROR, INTERRUPTED, SUCCESS, PromptRow, PromptStore, now_ms

log = logging.getLogger(__name__)

KEPT_REPORTS = 10_000
# Admission before execution: while DEFER_POSTERS posts or more wait for their commit, the worker waits
# between prompts (looking again every DEFER_POLL_S), at most DEFER_MAX_S before it runs one anyway.
DEFER_POSTERS = 4
DEFER_POLL_S, DEFER_MAX_S = 0.005, 0.05  # every look takes the interpreter from the loop
DELIVER_BATCH = 256  # messages handed to the hub per event-loop callback, so the loop stays responsive
RECORD_RETRY_S, RECORD_RETRY_MAX_S = 0.25, 5.0


@dataclass
class Running:
    """What the worker is doing now (read by the loop for /queue, /interrupt and reconnects)."""

    prompt_id: str
    client_id: str | None
    cancel: CancelToken
    node: str | None = None


class Requeue(Exception):
    """Raised by an executor whose run was lost with its worker: the prompt goes back to the queue."""


class Workers(Protocol):
    """What the handlers drive: this module's one thread, or a pool of remote workers (server.ray_pool)."""

    def running_all(self) -> list[Running]: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...

    def wake(self, prompt_id: str | None = None, report: Any = None) -> None: ...

    def interrupt(self, prompt_id: str | None = None) -> bool: ...

    def request_free(self) -> None: ...


class PromptWorker:
    """Runs queued prompts one at a time on its own thread."""

    def __init__(
        self,
        store: PromptStore,
        executor: Any,
        hub: Hub,
        loop: asyncio.AbstractEventLoop,
        *,
        preview_max_side: int = 512,
        claim: Callable[[], PromptRow | None] | None = None,
        posters_waiting: Callable[[], int] | None = None,
        name: str = "guidegraph-worker",
    ) -> None:
        self._store = store
        self._claim = claim or store.claim_next
        self._posters_waiting = posters_waiting
        self._executor = executor
        self._hub = hub
        self._loop = loop
        self._preview_max_side = preview_max_side
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._free_requested = threading.Event()
        self._lock = threading.Lock()
        self._running: Running | None = None
        self._reports: dict[str, Any] = {}
        self._outbox: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = collections.deque()
        self._outbox_lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.prompts_run = 0

    # -- control (any thread) --------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self.interrupt()
        self._wake.set()
        self._thread.join(timeout)

    def wake(self, prompt_id: str | None = None, report: Any = None) -> None:
        """Something was queued: ``prompt_id``, validated as ``report`` moments ago, which its run
        reuses instead of validating again (kept for the last ``KEPT_REPORTS`` queued prompts; a prompt
        queued before a restart is validated when it runs)."""
        if prompt_id is not None and report is not None:
            with self._lock:
                if len(self._reports) >= KEPT_REPORTS:
                    del self._reports[next(iter(self._reports))]
                self._reports[prompt_id] = report
        if not self._wake.is_set():  # set() takes a lock and notifies, on every post of a burst
            self._wake.set()

    @property
    def running(self) -> Running | None:
        with self._lock:
            return self._running

    def running_all(self) -> list[Running]:
        """What runs now, as a list (a pool of workers may run several prompts)."""
        running = self.running
        return [] if running is None else [running]

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Cancel the running prompt (only if it is ``prompt_id``, when given)."""
        with self._lock:
            running = self._running
        if running is None or (prompt_id is not None and running.prompt_id != prompt_id):
            return False
        running.cancel.cancel()
        return True

    def request_free(self) -> None:
        """Drop the node cache between prompts (now, if idle)."""
        self._free_requested.set()
        self._wake.set()

    # -- the thread ------------------------------------------------------------------------------

    def _main(self) -> None:
        while not self._stopping.is_set():
            if self._free_requested.is_set():
                self._free_requested.clear()
                self._safely(self._executor.free)
            self._defer_to_posts()
            try:
                row = self._claim()
            except Exception:
                log.exception("could not read the queue")
                row = None
            if row is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self._run(row)
            self.prompts_run += 1

    def _defer_to_posts(self) -> None:
        """Let a burst of posts be answered first.

        The worker shares the interpreter with the event loop that validates and commits posts, and
        between prompts of a few milliseconds it takes the loop's turn at every switch. While several
        posters wait for their commit (``posters_waiting``: a burst), each of them waits on the loop
        alone and a prompt that starts a few milliseconds later loses nothing, so the worker waits
        until they are answered, at most ``DEFER_MAX_S`` at a time. Its wait ends with the commit it
        waits for, whatever comes next: clients that post and then wait for their results (however
        many) never hold it back for long, and a run that releases the interpreter (a GPU's kernels)
        gives the loop its turn anyway.
        """
        if self._posters_waiting is None:
            return
        deadline = time.monotonic() + DEFER_MAX_S
        while self._posters_waiting() >= DEFER_POSTERS and time.monotonic() < deadline:
            if self._stopping.wait(DEFER_POLL_S):
                return

    def _run(self, row: PromptRow) -> None:
        token = CancelToken()
        running = Running(row.id, row.client_id, token)
        with self._lock:
            self._running = running
        self._broadcast_status()
        previews, to_all = wants_previews(row.extra_data, self._hub.shows_previews(row.client_id))
        messages = PromptMessages(row, self._post, self._hub, self._preview_max_side, to_all)

        def on_event(event: Event) -> None:
            if isinstance(event, Executing):
                running.node = event.node
            messages.on_event(event)

        extra_pnginfo = row.extra_data.get("extra_pnginfo")
        with self._lock:
            report = self._reports.pop(row.id, None)
        reuse = {"report": report} if report is not None else {}
        status, outputs = ERROR, {}
        try:
            result = self._executor.run(
                row.prompt,
                prompt_id=row.id,
                outputs=row.outputs_to_execute or None,
                on_event=on_event,
                cancel=token,
                extra_pnginfo=extra_pnginfo if isinstance(extra_pnginfo, dict) else None,
                previews=previews,
                **reuse,
            )
            status = {"success": SUCCESS, "interrupted": INTERRUPTED}.get(result.status, ERROR)
            outputs = dict(result.ui or {})
            if status == ERROR and messages.error is None:
                self._report_failures(messages, result)
        except Requeue as lost:
            if not token.cancelled:  # an interrupted prompt stays interrupted, whatever befell its worker
                self._requeue(row, str(lost))
                return
        except Exception as exc:  # the executor itself failed: fail this prompt, keep serving
            log.exception("prompt %s failed outside any node", row.id)
            messages.fail_outside_nodes(None, None, str(exc), type(exc).__name__)
        if token.cancelled and status != SUCCESS:
            status = INTERRUPTED
        self._record(row.id, status, outputs, messages)
        with self._lock:
            self._running = None
        self._broadcast_status()

    def _requeue(self, row: PromptRow, reason: str) -> None:
        """Back to the queue, ahead of later prompts; its client sees it start again."""
        log.warning("prompt %s goes back to the queue: %s", row.id, reason)
        try:
            self._store.requeue(row.id)
        except Exception:
            log.exception("could not requeue prompt %s", row.id)
        with self._lock:
            self._running = None
        data = {"prompt_id": row.id, "reason": redact(reason), "timestamp": now_ms()}
        self._post(self._hub.send, "prompt_requeued", data, row.client_id)
        self._broadcast_status()

    def _record(self, prompt_id: str, status: str, outputs: dict[str, Any], messages: PromptMessages) -> None:
        """Store the outcome, retrying while the database cannot be written (a full disk, say).

        The prompt stays the running one until its outcome is on disk, so it is recorded as soon as
        space returns; if the server stops first, the next start records it as interrupted.
        """
        delay, warned = RECORD_RETRY_S, False
        while True:
            try:
                self._store.finish(prompt_id, status, outputs, messages.messages, messages.error)
                if warned:
                    log.warning("recorded the outcome of prompt %s after all", prompt_id)
                return
            except Exception as exc:
                if not warned:
                    log.error("could not record the outcome of prompt %s (%s); retrying", prompt_id, exc)
                    warned = True
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, RECORD_RETRY_MAX_S)

    @staticmethod
    def _report_failures(messages: PromptMessages, result: Any) -> None:
        """An error result without an execution_error event: describe its first failure."""
        failures = getattr(result, "failures", None) or {}
        node_id, failure = next(iter(failures.items()), (None, None))
        messages.fail_outside_nodes(
            node_id,
            getattr(failure, "class_type", None) or getattr(failure, "node_type", None),
            str(getattr(failure, "message", "") or failure or "failed"),
            str(getattr(failure, "exception_type", "") or "Error"),
        )

    # -- to the event loop -----------------------------------------------------------------------

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        """Hand a call to the event loop, in order; one wake-up per batch, not per message."""
        with self._outbox_lock:
            self._outbox.append((fn, args))
            first = len(self._outbox) == 1
        if first:
            try:
                self._loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:  # the loop is closed (shutdown): nobody is left to tell
                with self._outbox_lock:
                    self._outbox.clear()

    def _deliver(self) -> None:
        """(event loop) Run up to DELIVER_BATCH handed-over calls; come back for the rest."""
        with self._outbox_lock:
            batch = [self._outbox.popleft() for _ in range(min(DELIVER_BATCH, len(self._outbox)))]
        for fn, args in batch:
            try:
                fn(*args)
            except Exception:
                log.exception("could not deliver %s", getattr(fn, "__name__", fn))
        with self._outbox_lock:
            more = bool(self._outbox)
        if more:
            self._loop.call_soon(self._deliver)

    def _broadcast_status(self) -> None:
        # Through the loop, after the events already handed over: status 0 follows execution_success.
        self._post(self._hub.send_status)

    @staticmethod
    def _safely(fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception:
            log.exception("%s failed", getattr(fn, "__name__", fn))
