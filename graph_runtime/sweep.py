"""``guidegraph run --sweep``: one workflow over many input values, here or fanned across Ray workers.

Each ``--sweep NODE.INPUT=VALUES`` names the values of one input: ``A..B`` (whole numbers, both ends
included, as for seeds), a JSON list, or comma-separated values (each read as JSON when it parses).
Several of them sweep their product. Every point is validated before anything runs.

Here, the points run one after another on one executor whose cache keeps the models warm. With
``--ray`` they run on Ray workers (graph_runtime.cluster), each point on whichever worker is free; a
worker lost mid-point gives the point to another, and a worker that lacks a model file leaves the
point to one that has it. Every worker writes into the one output folder (a shared path when the
workers are on several machines), which also receives ``sweep.json``: each point's values, status,
worker and files. One progress bar counts the whole sweep.
"""

from __future__ import annotations

import copy
import itertools
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from graph_runtime.context import CancelToken
from graph_runtime.events import Event
from graph_runtime.executor import Executor, NodeFailure, RunResult
from graph_runtime.progress import BAR_WIDTH, written_files
from graph_runtime.registry import Registry

MAX_POINTS = 100_000


class SweepError(ValueError):
    """A ``--sweep`` that cannot be read (the CLI reports it as a usage error)."""


@dataclass
class Point:
    """One prompt of the sweep and, once it ran, its outcome."""

    index: int
    values: dict[str, Any]
    prompt: dict[str, Any]
    result: RunResult | None = None
    worker: str = "local"
    tries: int = 0

    def label(self) -> str:
        return " ".join(f"{k}={json.dumps(v)}" for k, v in self.values.items())


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """``NODE.INPUT=VALUES`` -> (``NODE.INPUT``, values)."""
    target, sep, raw = text.partition("=")
    if not sep or "." not in target.strip(".") or not raw.strip():
        raise SweepError(f"--sweep {text!r}: expected NODE.INPUT=VALUES, e.g. --sweep 3.seed=0..99")
    low, dots, high = raw.partition("..")
    if dots and low.strip().lstrip("-").isdigit() and high.strip().lstrip("-").isdigit():
        first, last = int(low), int(high)
        if last < first or last - first >= MAX_POINTS:
            raise SweepError(f"--sweep {text!r}: a range runs low..high with at most {MAX_POINTS} values")
        return target, list(range(first, last + 1))
    try:
        values = json.loads(raw)
    except json.JSONDecodeError:
        values = [_scalar(item) for item in raw.split(",")]
    if not isinstance(values, list) or not values:
        raise SweepError(f"--sweep {text!r}: give a range A..B, a JSON list or comma-separated values")
    return target, values


def _scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text.strip()


def expand(
    prompt: dict[str, Any], sweeps: Sequence[str], apply: Callable[[dict[str, Any], list[str]], None]
) -> list[Point]:
    """Every point of the product of ``sweeps``; ``apply`` sets ``NODE.INPUT=JSON`` assignments."""
    axes = [parse_sweep(text) for text in sweeps]
    total = 1
    for _, values in axes:
        total *= len(values)
    if total > MAX_POINTS:
        raise SweepError(f"the sweep has {total} points; at most {MAX_POINTS}")
    points = []
    for index, combo in enumerate(itertools.product(*(values for _, values in axes))):
        chosen = {target: value for (target, _), value in zip(axes, combo, strict=True)}
        point_prompt = copy.deepcopy(prompt)
        apply(point_prompt, [f"{target}={json.dumps(value)}" for target, value in chosen.items()])
        points.append(Point(index, chosen, point_prompt))
    return points


class SweepBar:
    """One bar for the whole sweep: points done of all, running, failed, rate."""

    def __init__(self, total: int, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.live = live if live is not None else self.stream.isatty()
        self.done = self.failed = self.running = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def update(self, started: int = 0, finished: int = 0, failed: int = 0) -> None:
        with self._lock:
            self.running += started - finished
            self.done += finished
            self.failed += failed
            if self.live:
                self.stream.write("\r" + self.text() + "  ")
                self.stream.flush()

    def text(self) -> str:
        filled = int(BAR_WIDTH * self.done / max(self.total, 1))
        elapsed = time.monotonic() - self.started
        rate = f", {self.done / elapsed:.2f}/s" if elapsed > 0 and self.done else ""
        failed = f", {self.failed} failed" if self.failed else ""
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        return f"sweep [{bar}] {self.done}/{self.total}, {self.running} running{failed}{rate}"

    def end(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()


def run_local(points: list[Point], executor: Executor, bar: SweepBar, cancel: CancelToken) -> None:
    """One point after another on ``executor`` (whose cache keeps models loaded between points)."""
    for point in points:
        if cancel.cancelled:
            return
        bar.update(started=1)
        point.result = executor.run(point.prompt, prompt_id=f"sweep-{point.index}", cancel=cancel)
        bar.update(finished=1, failed=int(not point.result.ok))


@dataclass
class _Queue:
    """Points not yet run, shared by the Ray lanes; a lost point goes back to the front.

    A lane with nothing it can take waits while other lanes still run points, since one of those may
    come back to it (its worker lost, or lacking a file this lane's worker has); it stops only when
    nothing is left anywhere.
    """

    todo: deque[Point]
    ready: threading.Condition = field(default_factory=threading.Condition)
    lacking: dict[int, set[str]] = field(default_factory=dict)  # point index -> workers without its files
    running: set[int] = field(default_factory=set)  # points taken and neither finished nor given back

    def take(self, worker: str, cancel: CancelToken) -> Point | None:
        with self.ready:
            while not cancel.cancelled:
                for point in self.todo:
                    if worker not in self.lacking.get(point.index, set()):
                        self.todo.remove(point)
                        self.running.add(point.index)
                        return point
                if not self.running:
                    return None
                self.ready.wait(0.2)  # a timeout, so a cancel is seen
        return None

    def finish(self, point: Point) -> None:
        with self.ready:
            self.running.discard(point.index)
            self.ready.notify_all()

    def give_back(self, point: Point, lacking: str | None = None) -> None:
        with self.ready:
            if lacking is not None:
                self.lacking.setdefault(point.index, set()).add(lacking)
            self.todo.appendleft(point)
            self.running.discard(point.index)
            self.ready.notify_all()


def run_ray(
    points: list[Point],
    registry_factory: Callable[[], Registry],
    output: Path,
    bar: SweepBar,
    cancel: CancelToken,
    *,
    address: str | None,
    workers: int | None,
    device: str | None,
) -> None:
    """The points across Ray workers, one lane (thread) per worker actor."""
    from graph_runtime import cluster
    from graph_runtime.context import Paths

    started = cluster.connect(address, workers)
    started_workers: list[tuple[str, Any]] = []
    try:
        options = cluster.WorkerOptions(
            registry_factory, device, "lru", cluster.absolute(Paths(output=output))
        )
        started_workers = cluster.start_workers(workers, options)
        names = [name for name, _ in started_workers]
        todo = _Queue(deque(points))
        lanes = [
            threading.Thread(target=_lane, args=(actor, name, todo, names, bar, cancel), daemon=True)
            for name, actor in started_workers
        ]
        for lane in lanes:
            lane.start()
        for lane in lanes:
            while lane.is_alive():
                lane.join(0.2)  # short joins keep Ctrl-C responsive
    finally:
        import ray

        for _, actor in started_workers:
            ray.kill(actor, no_restart=True)
        if started:
            ray.shutdown()


def _lane(actor: Any, name: str, todo: _Queue, names: list[str], bar: SweepBar, cancel: CancelToken) -> None:
    from graph_runtime import cluster

    if cluster.wait_ready(actor, cancel) is None:
        return
    while not cancel.cancelled and (point := todo.take(name, cancel)) is not None:
        try:
            point.tries += 1
            point.worker = name
            bar.update(started=1)
            ignore: Callable[[Event], None] = lambda event: None  # noqa: E731
            try:
                outcome = cluster.run_remote(
                    actor, name, f"sweep-{point.index}", point.prompt, on_event=ignore, cancel=cancel
                )
            except cluster.WorkerLost as lost:
                bar.update(started=-1)
                if point.tries < cluster.MAX_LOSSES:
                    todo.give_back(point)
                    if cluster.wait_ready(actor, cancel) is None:
                        return
                    continue
                message = f"{lost}; lost {cluster.MAX_LOSSES} workers on this point, giving up"
                outcome = _failed(point, "WorkerLost", message)
            except RuntimeError as exc:
                outcome = _failed(point, "RuntimeError", str(exc))
            if isinstance(outcome, cluster.MissingFiles):
                bar.update(started=-1)
                with todo.ready:
                    lacking = todo.lacking.get(point.index, set()) | {name}
                if set(names) - lacking:
                    todo.give_back(point, lacking=name)  # to a worker that has not said it lacks the file
                    continue
                outcome = _failed(
                    point, "FileNotFoundError", f"no worker has this model file: {outcome.message()}"
                )
            point.result = outcome
            todo.finish(point)
            bar.update(finished=1, failed=int(not outcome.ok))
        except BaseException:
            todo.finish(point)  # a lane that dies must not keep the others waiting for its point
            raise


def _failed(point: Point, kind: str, message: str) -> RunResult:
    failure = NodeFailure("", "", message, kind, [])
    return RunResult(f"sweep-{point.index}", "error", failures={"": failure})


def write_index(points: list[Point], output: Path) -> Path:
    """``sweep.json`` in the output folder: each point's values, status, worker and files."""
    output.mkdir(parents=True, exist_ok=True)
    index = [
        {
            "values": point.values,
            "status": point.result.status if point.result else "not run",
            "worker": point.worker,
            "files": [str(p.relative_to(output)) for p in written_files(point.result, output)]
            if point.result
            else [],
            "errors": [f"{f.exception_type}: {f.message}" for f in point.result.failures.values()]
            if point.result
            else [],
        }
        for point in points
    ]
    path = output / "sweep.json"
    path.write_text(json.dumps(index, indent=1))
    return path
