"""Fixtures for the shipped workflows: the real node library, the shipped models, a CPU executor.

The workflows read the shipped weights in ``models/`` (they are part of the repository), so these
tests run exactly what a user runs; ``reduced`` cuts sampler steps and batch sizes for speed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from graph_runtime import Executor, Registry
from graph_runtime.context import Paths
from graph_runtime.folders import register_folders
from nodes import node_pack

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
NAMES = (
    "cfg",
    "cfg_negative",
    "classifier",
    "clip",
    "cfg_classifier",
    "cfg_clip",
    "composable",
    "cfg_window",
    "scale_sweep",
    "showcase",
    "apg",
    "cfg_zero_star",
    "cfg_pp",
    "cfg_rescale",
    "cfg_interval",
    "cfg_schedule",
    "pag",
    "seg",
    "perp_neg",
    "tcfg",
)


def load_api(name: str) -> dict[str, Any]:
    """The shipped API prompt ``workflows/<name>.api.json``."""
    data: dict[str, Any] = json.loads((WORKFLOWS / f"{name}.api.json").read_text(encoding="utf-8"))
    return data


def load_ui(name: str) -> dict[str, Any]:
    """The shipped editor workflow ``workflows/<name>.ui.json``."""
    data: dict[str, Any] = json.loads((WORKFLOWS / f"{name}.ui.json").read_text(encoding="utf-8"))
    return data


def nodes_of(prompt: dict[str, Any], class_type: str) -> list[str]:
    return [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]


def reduced(prompt: dict[str, Any], steps: int = 2, batch: int = 1) -> dict[str, Any]:
    """A copy of ``prompt`` with every Sampler at ``steps`` steps and every EmptyLatent of ``batch``."""
    out = json.loads(json.dumps(prompt))
    for node_id in nodes_of(out, "Sampler"):
        out[node_id]["inputs"]["steps"] = steps
    for node_id in nodes_of(out, "EmptyLatent"):
        out[node_id]["inputs"]["batch_size"] = batch
    return out


@pytest.fixture(scope="session")
def registry() -> Registry:
    """The built-in nodes, with the shipped model folders registered (as the entry point does)."""
    pack = node_pack()
    register_folders(pack.model_folders)
    return Registry(pack.nodes)


@pytest.fixture(scope="session")
def executor(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Executor:
    """One CPU executor for the directory, so models load once; outputs go to a temp folder."""
    root = tmp_path_factory.mktemp("workflow-runs")
    paths = Paths(output=root / "output", temp=root / "temp", input=root / "input")
    return Executor(registry, device="cpu", paths=paths)
