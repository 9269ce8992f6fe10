"""Terminal rendering of a run's events: a live progress bar for long nodes, and the summary."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

from graph_runtime.events import Event, Executing, ExecutionError, Progress
from graph_runtime.executor import RunResult

BAR_WIDTH = 28


class ProgressPrinter:
    """An event consumer that draws one carriage-return bar per node that reports progress."""

    def __init__(
        self, prompt: dict[str, Any], stream: TextIO | None = None, live: bool | None = None
    ) -> None:
        self.prompt = prompt
        self.stream = stream if stream is not None else sys.stderr
        self.live = live if live is not None else self.stream.isatty()
        self.node: str | None = None
        self.started = 0.0
        self.drawn = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, Executing):
            self.end_line()
            self.node, self.started = event.node, time.monotonic()
        elif isinstance(event, Progress) and self.live:
            self.draw(event)
        elif isinstance(event, ExecutionError):
            self.end_line()

    def label(self, node_id: str) -> str:
        node = self.prompt.get(node_id, {})
        return f"node {node_id} ({node.get('class_type', '?')})"

    def draw(self, event: Progress) -> None:
        total = max(event.max, 1)
        done = min(max(event.value, 0), total)
        filled = int(BAR_WIDTH * done / total)
        elapsed = time.monotonic() - self.started
        rate = f"{done / elapsed:.1f} it/s" if elapsed > 0 and done else ""
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self.stream.write(f"\r{self.label(event.node)} [{bar}] {done}/{total} {rate}  ")
        self.stream.flush()
        self.drawn = True

    def end_line(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def written_files(result: RunResult, output_dir: Path) -> list[Path]:
    """Files that output nodes reported in their UI dicts (``{filename, subfolder, type: "output"}``)."""
    files: list[Path] = []
    for ui in result.ui.values():
        for items in ui.values():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict) and "filename" in item and item.get("type", "output") == "output":
                    files.append(output_dir / str(item.get("subfolder", "")) / str(item["filename"]))
    return files


def summary(result: RunResult, output_dir: Path) -> list[str]:
    """The lines printed after a run: counts, written files, and every failure with its traceback tail."""
    files = written_files(result, output_dir)
    lines = [
        f"{result.status}: {len(result.executed)} nodes run, {len(result.cached)} cached, "
        f"{len(files)} outputs written"
    ]
    lines += [f"  wrote {path}" for path in files]
    for failure in result.failures.values():
        where = f"node {failure.node_id} ({failure.class_type})"
        lines.append(f"{where} failed: {failure.exception_type}: {failure.message}")
        lines += ["    " + line.rstrip() for line in "".join(failure.traceback[-3:]).splitlines()]
    if result.skipped:
        lines.append(f"  not run because something upstream failed: {', '.join(result.skipped)}")
    if result.status == "interrupted":
        lines.append(f"  interrupted at node {result.interrupted_at}")
    return lines
