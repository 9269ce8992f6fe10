"""guidegraph's generic graph runtime: node declarations, workflows, validation, cached execution.

Node authors import from :mod:`graph_runtime.api`. Users running workflows from Python use::

    from graph_runtime import Executor, Registry, WorkflowBuilder

    registry = Registry.from_entry_points()
    wb = WorkflowBuilder(registry)
    ...                                  # wb.add("NodeType", input=value, other=ref[0])
    result = Executor(registry).run(wb.prompt, on_event=print)
    result.outputs, result.ui, result.failures

The package knows nothing about diffusion and imports neither ``nodes`` nor ``server``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graph_runtime.context import CancelToken, Interrupted, Paths
    from graph_runtime.device import choose_device
    from graph_runtime.events import Event
    from graph_runtime.executor import Executor, NodeFailure, RunResult, ValidationFailed
    from graph_runtime.registry import Registry
    from graph_runtime.validation import ValidationReport, validate
    from graph_runtime.workflow import (
        NodeRef,
        WorkflowBuilder,
        WorkflowFormatError,
        load_workflow,
        to_api_prompt,
    )

# Imported on first use, so that a node pack importing graph_runtime.api pays for neither
# pydantic nor networkx (and runs where they are absent, such as a bare training machine).
_HOMES = {
    "CancelToken": "context",
    "Interrupted": "context",
    "Paths": "context",
    "choose_device": "device",
    "Event": "events",
    "Executor": "executor",
    "NodeFailure": "executor",
    "RunResult": "executor",
    "ValidationFailed": "executor",
    "Registry": "registry",
    "ValidationReport": "validation",
    "validate": "validation",
    "NodeRef": "workflow",
    "WorkflowBuilder": "workflow",
    "WorkflowFormatError": "workflow",
    "load_workflow": "workflow",
    "to_api_prompt": "workflow",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'graph_runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(f"graph_runtime.{home}"), name)


__all__ = [
    "CancelToken",
    "Event",
    "Executor",
    "Interrupted",
    "NodeFailure",
    "NodeRef",
    "Paths",
    "Registry",
    "RunResult",
    "ValidationFailed",
    "ValidationReport",
    "WorkflowBuilder",
    "WorkflowFormatError",
    "choose_device",
    "load_workflow",
    "to_api_prompt",
    "validate",
]
