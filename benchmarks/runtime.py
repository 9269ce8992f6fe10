"""Runtime benchmarks: validation and planning, per-node execution overhead, fully cached re-runs.

Run on demand (not a test):  .venv/bin/python -m benchmarks.runtime [--repeat 5] [--quick]
Trivial nodes only, on the CPU, so the numbers are the engine's own cost. Each time is the median
of ``--repeat`` runs; peak memory is traced (tracemalloc) in a separate run, since tracing slows
Python down. Targets (from the issue): 10,000 nodes validated and planned in under 0.5 s; under
50 microseconds of execution overhead per node; a fully cached 1,000-node re-run under 20 ms.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import torch

from graph_runtime import Executor, Registry, validate
from graph_runtime.api import Context, Float, Node, Output, Socket


class Const(Node):
    """A constant (trivial source)."""

    inputs = (Float("value", default=1.0),)
    outputs = (Output("value", "FLOAT"),)

    @staticmethod
    def run(ctx: Context, value: float) -> tuple[float]:
        return (value,)


class Sum(Node):
    """a + b (trivial inner node)."""

    inputs = (Socket("a", type="FLOAT"), Socket("b", type="FLOAT", optional=True))
    outputs = (Output("sum", "FLOAT"),)

    @staticmethod
    def run(ctx: Context, a: float, b: float | None) -> tuple[float]:
        return (a + (b or 0.0),)


class Sink(Node):
    """Output node."""

    output_node = True
    inputs = (Socket("value", type="FLOAT"),)
    outputs = ()

    @staticmethod
    def run(ctx: Context, value: float) -> tuple[()]:
        return ()


REGISTRY = Registry([Const, Sum, Sink])


def chain(n: int) -> dict[str, Any]:
    """Const -> Sum -> Sum -> ... -> Sink: n nodes in all, every node depends on the one before."""
    prompt: dict[str, Any] = {"1": {"class_type": "Const", "inputs": {"value": 1.0}}}
    for i in range(2, n):
        prompt[str(i)] = {"class_type": "Sum", "inputs": {"a": [str(i - 1), 0]}}
    prompt[str(n)] = {"class_type": "Sink", "inputs": {"value": [str(n - 1), 0]}}
    return prompt


def random_dag(n: int, seed: int = 0) -> dict[str, Any]:
    """About n nodes: 5% constants, the rest sums of one or two random earlier nodes, and one
    sink per node that nothing reads, so every node is needed."""
    rng = random.Random(seed)
    prompt: dict[str, Any] = {}
    unread: dict[str, None] = {}
    body = int(n * 0.9)
    for i in range(1, body + 1):
        node_id = str(i)
        if i <= 2 or rng.random() < 0.05:
            prompt[node_id] = {"class_type": "Const", "inputs": {"value": rng.uniform(-1, 1)}}
        else:
            picks = rng.sample(range(1, i), 2 if rng.random() < 0.5 else 1)
            inputs = {name: [str(p), 0] for name, p in zip(("a", "b"), picks, strict=False)}
            prompt[node_id] = {"class_type": "Sum", "inputs": inputs}
            for p in picks:
                unread.pop(str(p), None)
        unread[node_id] = None
    for j, source in enumerate(unread):
        prompt[f"s{j}"] = {"class_type": "Sink", "inputs": {"value": [source, 0]}}
    return prompt


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """(median, best) of ``repeat`` wall-clock times, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def peak_mib(fn: Callable[[], Any]) -> float:
    """Peak Python-heap allocation during ``fn`` (tracemalloc; torch's allocator is not traced)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def row(case: str, n: int, times: tuple[float, float], peak: float, note: str = "") -> dict[str, Any]:
    return {"case": case, "nodes": n, "median": times[0], "best": times[1], "peak": peak, "note": note}


def bench_validate(name: str, prompt: dict[str, Any], repeat: int) -> dict[str, Any]:
    report = validate(prompt, REGISTRY)
    assert report.ok and len(report.order) == len(prompt), report.messages()[:3]
    times = timed(lambda: validate(prompt, REGISTRY), repeat)
    return row(f"validate + plan, {name}", len(prompt), times, peak_mib(lambda: validate(prompt, REGISTRY)))


def bench_execute(name: str, prompt: dict[str, Any], repeat: int) -> list[dict[str, Any]]:
    """Runs with nothing cached (policy none: every node executes) and fully cached re-runs (lru)."""
    n = len(prompt)
    validate_s = timed(lambda: validate(prompt, REGISTRY), repeat)[0]
    cold = Executor(REGISTRY, device="cpu", cache="none")
    cold_times = timed(lambda: cold.run(prompt), repeat)
    warm = Executor(REGISTRY, device="cpu", cache="lru")
    first = warm.run(prompt)
    assert first.ok and len(first.executed) + len(first.cached) == n  # identical subgraphs run once
    assert warm.run(prompt).executed == []
    cached_times = timed(lambda: warm.run(prompt), repeat)
    overhead = (cold_times[0] - validate_s) * 1e6 / n
    return [
        row(f"run, nothing cached, {name}", n, cold_times,
            peak_mib(lambda: Executor(REGISTRY, device="cpu", cache="none").run(prompt)),
            f"{cold_times[0] * 1e6 / n:.1f} us/node in all, {overhead:.1f} us/node besides validation"),
        row(f"re-run, all cached, {name}", n, cached_times, peak_mib(lambda: warm.run(prompt))),
    ]  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| case | nodes | median (ms) | best (ms) | peak traced memory (MiB) | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['nodes']:,} | {r['median'] * 1e3:.1f} | {r['best'] * 1e3:.1f} "
            f"| {r['peak']:.1f} | {r['note']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per measurement")
    parser.add_argument("--quick", action="store_true", help="1,000-node cases only")
    args = parser.parse_args(argv)
    sizes = (1_000,) if args.quick else (1_000, 10_000)
    rows: list[dict[str, Any]] = []
    for n in sizes:
        rows.append(bench_validate(f"chain of {n:,}", chain(n), args.repeat))
        rows.append(bench_validate(f"random DAG of ~{n:,}", random_dag(n), args.repeat))
    for n in sizes:
        rows += bench_execute(f"chain of {n:,}", chain(n), args.repeat)
    rows += bench_execute("random DAG of ~1,000", random_dag(1_000), args.repeat)
    print(f"python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}, "
          f"{args.repeat} runs per case\n")  # fmt: skip
    print(table(rows))


if __name__ == "__main__":
    main()
