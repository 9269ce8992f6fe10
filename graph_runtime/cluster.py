"""Prompts on a Ray cluster: one actor per worker owns an Executor, its node cache and warm models.

Ray is an optional extra (``pip install guidegraph[ray]``) and only this module and its users import
it, lazily: ``guidegraph serve`` and ``guidegraph run`` without ``--ray`` never load it.

A :class:`PromptActor` builds its registry in its own process (``make_registry``, a picklable callable:
``Registry.from_entry_points`` in production, so node packs register their model folders there too),
finds model files through its own folders (a shared path, or ``GUIDEGRAPH_MODEL_DIRS`` on that
machine), and streams a run back as a Ray streaming generator: the runtime's events as they happen,
then one slim :class:`RunResult` (no node outputs, which stay in the actor's cache). A prompt that
names a model file the actor cannot find yields :class:`MissingFiles` before anything runs, so the
caller can send it to a worker that has the file. Actors restart after a crash (``max_restarts``)
but their calls are never retried: the caller decides what a lost run means.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError

from graph_runtime.api import Combo
from graph_runtime.context import CancelToken, Paths
from graph_runtime.events import Event
from graph_runtime.executor import Executor, RunResult
from graph_runtime.folders import FolderFiles, resolve_file
from graph_runtime.registry import Registry

log = logging.getLogger(__name__)

RegistryFactory = Callable[[], Registry]
POLL_S = 0.1  # how often a caller looks at its cancel token while it waits for a run's events
MAX_LOSSES = 3  # a prompt that takes down this many workers fails instead of being tried again


@dataclass(frozen=True)
class ModelFile:
    """A model file a prompt names: which node and input, which folder kind, which file."""

    node_id: str
    input: str
    kind: str
    name: str


def model_files(prompt: dict[str, Any], registry: Registry) -> list[ModelFile]:
    """The files named by COMBO inputs that list a model folder (what a worker must hold or load)."""
    found = []
    for node_id, node in prompt.items():
        cls = registry.get(node.get("class_type", "")) if isinstance(node, dict) else None
        if cls is None:
            continue
        inputs = node.get("inputs") or {}
        for spec in cls.inputs:
            value = inputs.get(spec.name)
            if isinstance(spec, Combo) and isinstance(spec.options, FolderFiles) and isinstance(value, str):
                found.append(ModelFile(str(node_id), spec.name, spec.options.kind, value))
    return found


@dataclass(frozen=True)
class MissingFiles:
    """What an actor yields instead of running a prompt whose model files it cannot find."""

    worker: str
    files: tuple[ModelFile, ...]

    def message(self) -> str:
        names = ", ".join(f"node {f.node_id} input {f.input!r}: {f.kind}/{f.name}" for f in self.files)
        return f"worker {self.worker} has no such model file ({names})"


@dataclass(frozen=True)
class RemoteFailure:
    """The executor itself raised (outside any node); the exception's type and message."""

    exception_type: str
    message: str


@dataclass(frozen=True)
class WorkerOptions:
    """How each actor builds its executor: device (None: the best it has), cache policy, file folders."""

    make_registry: RegistryFactory = Registry.from_entry_points
    device: str | None = None
    cache: str = "lru"
    paths: Paths = field(default_factory=Paths)


class PromptActor:
    """Runs prompts in a Ray actor process; wrap it with ``ray.remote`` (see :func:`start_workers`)."""

    def __init__(self, name: str, options: WorkerOptions) -> None:
        self.name = name
        self.registry = options.make_registry()
        self.executor = Executor(
            self.registry, device=options.device, cache=options.cache, paths=options.paths
        )
        self._cancels: dict[str, CancelToken] = {}
        self._lock = threading.Lock()

    def ready(self) -> dict[str, Any]:
        """Who this worker is (answers once the constructor has run)."""
        return {
            "name": self.name,
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "device": str(self.executor.device),
        }

    def run(
        self,
        prompt_id: str,
        prompt: dict[str, Any],
        outputs: Sequence[str] | None = None,
        extra_pnginfo: dict[str, Any] | None = None,
        previews: bool = False,
    ) -> Iterator[Event | RunResult | MissingFiles | RemoteFailure]:
        """Stream one run: its events, then its slim result (or MissingFiles / RemoteFailure)."""
        missing = [f for f in model_files(prompt, self.registry) if not _exists(f)]
        if missing:
            yield MissingFiles(self.name, tuple(missing))
            return
        token = CancelToken()
        with self._lock:
            self._cancels[prompt_id] = token
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        done = object()

        def work() -> None:
            try:
                result = self.executor.run(
                    prompt,
                    prompt_id=prompt_id,
                    outputs=outputs,
                    on_event=items.put,
                    cancel=token,
                    extra_pnginfo=extra_pnginfo,
                    previews=previews,
                )
                items.put(_slim(result))
            except Exception as exc:
                log.exception("prompt %s failed outside any node", prompt_id)
                items.put(RemoteFailure(type(exc).__name__, str(exc)))
            finally:
                items.put(done)

        threading.Thread(target=work, name=f"run-{prompt_id}", daemon=True).start()
        try:
            while (item := items.get()) is not done:
                yield item
        finally:
            with self._lock:
                self._cancels.pop(prompt_id, None)

    def interrupt(self, prompt_id: str) -> bool:
        with self._lock:
            token = self._cancels.get(prompt_id)
        if token is not None:
            token.cancel()
        return token is not None

    def free(self) -> None:
        """Drop the node cache (models included)."""
        self.executor.free()


def _exists(file: ModelFile) -> bool:
    try:
        resolve_file(file.kind, file.name)
    except (FileNotFoundError, OSError):
        return False
    return True


def _slim(result: RunResult) -> RunResult:
    """The result without node outputs or the validation report (they stay in the actor)."""
    return RunResult(
        result.prompt_id,
        result.status,
        ui=result.ui,
        executed=result.executed,
        cached=result.cached,
        failures=result.failures,
        skipped=result.skipped,
        interrupted_at=result.interrupted_at,
    )


class WorkerLost(Exception):
    """The actor died during a call (a crash, ``kill -9``, a lost node); Ray restarts it empty."""


def run_remote(
    actor: Any,
    name: str,
    prompt_id: str,
    prompt: dict[str, Any],
    *,
    on_event: Callable[[Event], None],
    cancel: CancelToken,
    outputs: Sequence[str] | None = None,
    extra_pnginfo: dict[str, Any] | None = None,
    previews: bool = False,
) -> RunResult | MissingFiles:
    """Run a prompt on ``actor``, replaying its events into ``on_event`` as they arrive.

    Cancelling ``cancel`` interrupts the run in the actor (it is looked at every ``POLL_S``). Raises
    :class:`WorkerLost` when the actor dies, RuntimeError when its executor fails outside any node.
    """
    stream = actor.run.options(num_returns="streaming").remote(
        prompt_id, prompt, list(outputs) if outputs else None, extra_pnginfo, previews
    )
    asked_to_stop = False
    try:
        while True:
            if cancel.cancelled and not asked_to_stop:
                actor.interrupt.remote(prompt_id)
                asked_to_stop = True
            ready, _ = ray.wait([stream], timeout=POLL_S)
            if not ready:
                continue
            try:
                item = ray.get(next(stream))
            except StopIteration:
                raise RuntimeError(f"{name} ended prompt {prompt_id} without a result") from None
            if isinstance(item, Event):
                on_event(item)
            elif isinstance(item, (RunResult, MissingFiles)):
                return item
            elif isinstance(item, RemoteFailure):
                raise RuntimeError(f"{item.exception_type}: {item.message}")
    except RayActorError as exc:
        raise WorkerLost(f"{name} was lost while running it ({type(exc).__name__})") from exc


def wait_ready(actor: Any, cancel: CancelToken, timeout_s: float = 600.0) -> dict[str, Any] | None:
    """Wait until ``actor`` (starting, or restarting after a loss) answers; None if cancelled or timed out."""
    deadline = time.monotonic() + timeout_s
    ref = actor.ready.remote()
    while not cancel.cancelled and (left := deadline - time.monotonic()) > 0:
        done, _ = ray.wait([ref], timeout=min(left, 1.0))
        if not done:
            continue
        try:
            return dict(ray.get(ref))
        except RayActorError:  # it died again, or was restarting: ask again
            time.sleep(POLL_S)
            ref = actor.ready.remote()
    return None


def connect(address: str | None, workers: int | None = None) -> bool:
    """Join the cluster at ``address``, or start a local one; True when this call started it.

    A local cluster offers at least as many CPUs as ``workers``, so every CPU worker can start.
    """
    if ray.is_initialized():
        return False
    if address:
        _check_reachable(address)
        ray.init(address=address, log_to_driver=False)
        return False
    ray.init(num_cpus=max(workers or 1, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    return True


def _check_reachable(address: str) -> None:
    """Fail fast on a ``host:port`` nobody listens on (Ray itself retries for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or address.startswith(("ray://", "auto")):
        return  # let Ray read the other address forms
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise ConnectionError(f"no Ray cluster answers at {address} ({exc.strerror or exc})") from None


def start_workers(workers: int | None, options: WorkerOptions) -> list[tuple[str, Any]]:
    """Start ``workers`` restartable PromptActors (default: one per GPU of the cluster, else one).

    On a cluster with GPUs each worker holds its share of them (one each by default); on CPUs each
    holds one CPU. Handles come back at once; an actor's ``ready`` answers when it is up.
    """
    gpus = int(ray.cluster_resources().get("GPU", 0))
    count = workers or gpus or 1
    actor = ray.remote(PromptActor).options(
        num_cpus=0 if gpus else 1,
        num_gpus=min(1.0, gpus / count) if gpus else 0,
        max_restarts=-1,
        max_task_retries=0,
        max_concurrency=4,  # a run, plus interrupt/free/ready calls beside it
    )
    names = [f"worker-{i + 1}" for i in range(count)]
    return [(name, actor.remote(name, options)) for name in names]


def absolute(paths: Paths) -> Paths:
    """Paths that mean the same on every worker of one machine (and on a shared filesystem)."""
    return Paths(*(Path(p).resolve() for p in (paths.output, paths.temp, paths.input)))
