"""Nodes and a registry factory for the Ray tests: a model-file loader whose loads can be counted."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from graph_runtime.api import Combo, Context, Float, FolderFiles, Int, Node, Output, Result, Socket, String
from graph_runtime.folders import register_folders, resolve_file
from graph_runtime.registry import Registry
from tests.server.testnodes import NODES


class LoadBlob(Node):
    """Read a file from the ``blobs`` model folder (cached, like a checkpoint loader)."""

    category = "testing"
    inputs = (Combo("name", options=FolderFiles("blobs")),)
    outputs = (Output("blob", "BLOB"),)

    @staticmethod
    def run(ctx: Context, name: str) -> tuple[bytes]:
        return (resolve_file("blobs", name).read_bytes(),)


class UseBlob(Node):
    """Sleep ``steps`` × ``delay`` s with progress, then report the blob's size and the seed."""

    category = "testing"
    output_node = True
    deterministic = False
    inputs = (
        Socket("blob", type="BLOB"),
        Int("seed", default=0, min=0, max=1 << 30),
        Int("steps", default=2, min=1, max=1000),
        Float("delay", default=0.01, min=0.0, max=5.0),
    )
    outputs = ()

    @staticmethod
    def run(ctx: Context, blob: bytes, seed: int, steps: int, delay: float) -> Result:
        for step in range(steps):
            time.sleep(delay)
            ctx.progress(step + 1, steps)
        return Result((), {"text": [f"{len(blob)} bytes, seed {seed}, pid {os.getpid()}"]})


class KillWorker(Node):
    """Kill the process running it (a worker that crashes on this prompt, every time)."""

    category = "testing"
    output_node = True
    deterministic = False
    inputs = (Int("value", default=0),)
    outputs = ()

    @staticmethod
    def run(ctx: Context, value: int) -> Result:
        os.kill(os.getpid(), signal.SIGKILL)
        return Result()


class CrashOnce(Node):
    """Kill the process running it the first time (``marker`` does not exist yet); pass after."""

    category = "testing"
    output_node = True
    deterministic = False
    inputs = (String("marker", default=""), Int("value", default=0))
    outputs = ()

    @staticmethod
    def run(ctx: Context, marker: str, value: int) -> Result:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return Result((), {"text": [f"value {value}"]})
        os.kill(os.getpid(), signal.SIGKILL)
        return Result()


RAY_NODES = [*NODES, LoadBlob, UseBlob, KillWorker, CrashOnce]


@dataclass(frozen=True)
class BlobRegistry:
    """Runs in each worker: the test nodes, and ``blobs`` folders.

    With ``per_worker`` set, the n-th worker to start (n = 1, 2, ...) searches ``per_worker[n-1]``
    only, claimed through exclusive files under ``claims`` (so workers on one machine can see
    different files, as workers on different machines would).
    """

    folders: tuple[Path, ...] = ()
    per_worker: tuple[Path, ...] = ()
    claims: Path | None = None

    def __call__(self) -> Registry:
        folders = list(self.folders)
        if self.per_worker and self.claims is not None:
            for index, folder in enumerate(self.per_worker):
                try:
                    os.close(os.open(self.claims / f"worker-{index}", os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    continue
                folders.append(folder)
                break
        register_folders({"blobs": folders})
        return Registry(RAY_NODES)


@dataclass(frozen=True)
class SlowFirstRegistry:
    """The first worker to start takes ``delay`` seconds to build its registry (a slow model pull)."""

    claims: Path
    delay: float

    def __call__(self) -> Registry:
        try:
            os.close(os.open(self.claims / "slow", os.O_CREAT | os.O_EXCL))
            time.sleep(self.delay)
        except FileExistsError:
            pass
        return Registry(RAY_NODES)


def blob_prompt(name: str, seed: int = 0, steps: int = 2, delay: float = 0.01) -> dict[str, object]:
    return {
        "1": {"class_type": "LoadBlob", "inputs": {"name": name}},
        "2": {
            "class_type": "UseBlob",
            "inputs": {"blob": ["1", 0], "seed": seed, "steps": steps, "delay": delay},
        },
    }
