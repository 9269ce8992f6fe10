"""Fixtures of the runtime tests: a registry of small test nodes and an executor on the CPU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runtime_testnodes import TEST_NODES

from graph_runtime import Executor, Registry


@pytest.fixture
def registry() -> Registry:
    return Registry(TEST_NODES)


@pytest.fixture
def executor(registry: Registry) -> Executor:
    return Executor(registry, device="cpu")
