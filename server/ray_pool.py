"""``serve --ray``: the server keeps the durable queue and the API; prompts run on Ray actors.

Each actor (a :class:`graph_runtime.cluster.PromptActor`: its own executor, node cache and warm
models) is driven by one lane: a :class:`server.worker.PromptWorker` thread whose executor is a
:class:`RemoteExecutor`, so events, previews, stored messages and outcomes go through the very code
the local worker uses. An idle lane asks the pool for work; the pool picks among the first pending
prompts, in this order of preference:

1. the first one whose model files this worker already holds;
2. the first one whose model files no other worker holds;
3. the first one (this worker is idle, so it is the least loaded).

Prompts that need a file this worker lacks are never offered to it. A lane whose actor is still
starting takes nothing and blocks no one. When an actor dies mid-prompt (a crash, ``kill -9``, a lost
node) Ray restarts it, and the prompt goes back to the queue in its old place
(:class:`server.worker.Requeue`); its client sees ``prompt_requeued``, then the prompt start again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray

from graph_runtime.cluster import (
    MAX_LOSSES,
    MissingFiles,
    ModelFile,
    RegistryFactory,
    WorkerLost,
    WorkerOptions,
    absolute,
    connect,
    model_files,
    run_remote,
    start_workers,
    wait_ready,
)
from graph_runtime.context import CancelToken, Paths
from graph_runtime.events import Event
from graph_runtime.executor import NodeFailure, RunResult
from graph_runtime.registry import Registry
from server.config import ServerConfig
from server.hub import Hub
from server.store import PromptRow, PromptStore
from server.worker import PromptWorker, Requeue, Running

log = logging.getLogger(__name__)

FileKey = tuple[str, str]  # (folder kind, file name)
READY_POLL_S = 1.0  # how long a lane waits for its starting actor before looking at the queue again


@dataclass(frozen=True)
class RaySettings:
    """Where the cluster is and how many workers to start on it.

    ``workers`` None: one per GPU of the cluster, or one CPU worker when it has none.
    ``make_registry`` runs in each actor (tests pass their own node list).
    """

    address: str | None = None
    workers: int | None = None
    make_registry: RegistryFactory = Registry.from_entry_points
    window: int = 16  # how many pending prompts a lane looks at when it picks


@dataclass(eq=False)
class _Lane:
    """One actor, the thread that feeds it, and what the pool knows about its cache."""

    name: str
    actor: Any
    worker: PromptWorker | None = None
    info: dict[str, Any] | None = None
    models: set[FileKey] = field(default_factory=set)
    missing: set[FileKey] = field(default_factory=set)


class RayPool:
    """A pool of remote workers with the interface of the local PromptWorker (server.worker.Workers)."""

    def __init__(
        self,
        store: PromptStore,
        hub: Hub,
        loop: asyncio.AbstractEventLoop,
        registry: Registry,
        config: ServerConfig,
        settings: RaySettings,
    ) -> None:
        self._store = store
        self._hub = hub
        self._loop = loop
        self._registry = registry
        self._config = config
        self._settings = settings
        self._lock = threading.Lock()
        self._needs: dict[str, frozenset[FileKey]] = {}
        self._losses: dict[str, int] = {}
        self._lanes: list[_Lane] = []
        self._started_cluster = False
        self._stopping = CancelToken()

    # -- the Workers interface -------------------------------------------------------------------

    def start(self) -> None:
        settings = self._settings
        self._started_cluster = connect(settings.address, settings.workers)
        paths = absolute(Paths(output=self._config.output, temp=self._config.temp, input=self._config.input))
        options = WorkerOptions(settings.make_registry, self._config.device, self._config.cache, paths)
        for name, actor in start_workers(settings.workers, options):
            lane = _Lane(name, actor)
            lane.worker = PromptWorker(
                self._store,
                RemoteExecutor(self, lane),
                self._hub,
                self._loop,
                preview_max_side=self._config.preview_max_side,
                claim=functools.partial(self._claim, lane),
                name=f"guidegraph-{name}",
            )
            self._lanes.append(lane)
        log.info("dispatching to %d Ray worker(s) on %s", len(self._lanes), ray.cluster_resources())
        for lane in self._lanes:
            _worker(lane).start()

    def stop(self, timeout: float = 10.0) -> None:
        """Interrupt what runs, stop every lane (together), then the actors (and a cluster we started)."""
        self._stopping.cancel()
        threads = [threading.Thread(target=_worker(lane).stop, args=(timeout,)) for lane in self._lanes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for lane in self._lanes:
            try:
                ray.kill(lane.actor, no_restart=True)
            except Exception:  # the cluster went away first
                log.warning("could not stop %s", lane.name, exc_info=True)
        if self._started_cluster:
            ray.shutdown()

    def wake(self, prompt_id: str | None = None, report: Any = None) -> None:
        """Something was queued (its report stays here: the workers validate in their own process)."""
        for lane in self._lanes:
            _worker(lane).wake()

    def running_all(self) -> list[Running]:
        return [r for lane in self._lanes if (r := _worker(lane).running) is not None]

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Cancel ``prompt_id`` wherever it runs (every running prompt when None)."""
        hits = [_worker(lane).interrupt(prompt_id) for lane in self._lanes]
        return any(hits)

    def request_free(self) -> None:
        for lane in self._lanes:
            _worker(lane).request_free()

    def workers(self) -> list[dict[str, Any]]:
        """Each worker: name, whether it is up (with pid, node and device), what it holds and lacks."""
        with self._lock:
            return [
                {
                    "name": lane.name,
                    "ready": lane.info is not None,
                    **(lane.info or {}),
                    "models": sorted(f"{k}/{n}" for k, n in lane.models),
                    "missing": sorted(f"{k}/{n}" for k, n in lane.missing),
                    "prompts_run": _worker(lane).prompts_run,
                }
                for lane in self._lanes
            ]

    # -- picking work (lane threads) -------------------------------------------------------------

    def _claim(self, lane: _Lane) -> PromptRow | None:
        if lane.info is None and not self._check_ready(lane):
            return None
        with self._lock:
            row = self._store.claim_picked(
                self._settings.window, lambda rows: self._pick(lane, rows), lane.name
            )
            if row is not None:
                lane.models |= self._files(row)
        return row

    def _check_ready(self, lane: _Lane) -> bool:
        info = wait_ready(lane.actor, self._stopping, READY_POLL_S)  # blocks this lane's thread only
        if info is None:
            return False
        with self._lock:
            lane.info = info
        log.info("%s is up: %s", lane.name, info)
        return True

    def _pick(self, lane: _Lane, rows: list[PromptRow]) -> PromptRow | None:
        held_elsewhere = set().union(*(other.models for other in self._lanes if other is not lane))
        candidates = [r for r in rows if not self._files(r) & lane.missing]
        for row in candidates:
            needs = self._files(row)
            if needs and needs <= lane.models:
                return row
        for row in candidates:
            if not self._files(row) & held_elsewhere:
                return row
        return candidates[0] if candidates else None

    def _files(self, row: PromptRow) -> frozenset[FileKey]:
        needs = self._needs.get(row.id)
        if needs is None:
            needs = frozenset((f.kind, f.name) for f in model_files(row.prompt, self._registry))
            if len(self._needs) > 10_000:
                self._needs.clear()
            self._needs[row.id] = needs
        return needs

    # -- what lanes report -----------------------------------------------------------------------

    def _lost(self, lane: _Lane, prompt_id: str) -> int:
        """The actor died: Ray restarts it with an empty cache. How many workers this prompt cost."""
        with self._lock:
            lane.models.clear()
            lane.info = None
            self._losses[prompt_id] = self._losses.get(prompt_id, 0) + 1
            return self._losses[prompt_id]

    def _freed(self, lane: _Lane) -> None:
        with self._lock:
            lane.models.clear()
            lane.missing.clear()

    def _lacks(self, lane: _Lane, files: Sequence[ModelFile]) -> bool:
        """Record files ``lane`` lacks; True while some other live worker may still have them."""
        keys = {(f.kind, f.name) for f in files}
        with self._lock:
            lane.missing |= keys
            lane.models -= keys
            return any(not (keys & other.missing) for other in self._lanes if other is not lane)


class RemoteExecutor:
    """What a lane's PromptWorker calls ``run`` on: the run happens in the lane's actor."""

    def __init__(self, pool: RayPool, lane: _Lane) -> None:
        self._pool = pool
        self._lane = lane

    def run(
        self,
        prompt: dict[str, Any],
        *,
        prompt_id: str,
        outputs: Sequence[str] | None,
        on_event: Callable[[Event], None],
        cancel: CancelToken,
        extra_pnginfo: dict[str, Any] | None,
        previews: bool,
    ) -> RunResult:
        lane = self._lane
        try:
            outcome = run_remote(
                lane.actor,
                lane.name,
                prompt_id,
                prompt,
                on_event=on_event,
                cancel=cancel,
                outputs=outputs,
                extra_pnginfo=extra_pnginfo,
                previews=previews,
            )
        except WorkerLost as lost:
            if self._pool._lost(lane, prompt_id) >= MAX_LOSSES:
                raise RuntimeError(f"{lost}; lost {MAX_LOSSES} workers on this prompt, giving up") from None
            raise Requeue(str(lost)) from lost
        if isinstance(outcome, MissingFiles):
            return self._missing(prompt, prompt_id, outcome)
        return outcome

    def _missing(self, prompt: dict[str, Any], prompt_id: str, missing: MissingFiles) -> RunResult:
        if self._pool._lacks(self._lane, missing.files):
            raise Requeue(missing.message())
        first = missing.files[0]
        class_type = str(prompt.get(first.node_id, {}).get("class_type", ""))
        message = f"no worker has this model file: {missing.message()}"
        failure = NodeFailure(first.node_id, class_type, message, "FileNotFoundError", [])
        return RunResult(prompt_id, "error", failures={first.node_id: failure})

    def free(self) -> None:
        ray.get(self._lane.actor.free.remote())
        self._pool._freed(self._lane)


def _worker(lane: _Lane) -> PromptWorker:
    assert lane.worker is not None
    return lane.worker
