"""What validation hands back: the report in ComfyUI's shape, and the checked plan of each node."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graph_runtime.api import Node


@dataclass(slots=True)
class PlannedNode:
    """A checked node: its class, unwrapped literal inputs and resolved links ``name -> (source, index)``."""

    node_id: str
    cls: type[Node]
    literals: dict[str, Any]
    links: dict[str, tuple[str, int]]


@dataclass
class ValidationReport:
    """Everything validation found, and the execution plan of the good outputs."""

    node_errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    outputs: list[str] = field(default_factory=list)
    good_outputs: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    """The nodes the good outputs need, in a topological order."""
    nodes: dict[str, PlannedNode] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """Things ignored rather than refused (inputs a node does not declare, as ComfyUI ignores them)."""

    @property
    def ok(self) -> bool:
        """True when there is no problem at all (no node error, no prompt error)."""
        return self.error is None and not self.node_errors

    @property
    def runnable(self) -> bool:
        """True when at least one output can run (node errors elsewhere may remain)."""
        return self.error is None and bool(self.good_outputs)

    def to_comfy(self) -> dict[str, Any]:
        """ComfyUI's ``POST /prompt`` 400 body: ``{"error": {...}, "node_errors": {...}}``."""
        error = self.error
        if error is None and self.node_errors:
            error = error_record(
                "prompt_outputs_failed_validation",
                "Prompt outputs failed validation",
                "\n".join(self.messages()),
            )
        return {"error": error or {}, "node_errors": self.node_errors}

    def messages(self) -> list[str]:
        """One line per problem, naming the node, its class and the input."""
        lines: list[str] = []
        for node_id, entry in self.node_errors.items():
            for err in entry["errors"]:
                where = f"node {node_id} ({entry['class_type']})"
                text = err["details"] or err["message"]
                name = err.get("extra_info", {}).get("input_name")
                if name:
                    where += f", input {name!r}"
                    text = text.removeprefix(f"{name}: ")
                lines.append(f"{where}: {text} [{err['type']}]")
        if self.error is not None and self.error["type"] != "prompt_outputs_failed_validation":
            lines.append(f"prompt: {self.error['details'] or self.error['message']} [{self.error['type']}]")
        return lines


def error_record(kind: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    """One error in ComfyUI's shape: ``{type, message, details, extra_info}``."""
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def types_compatible(output_type: str, input_type: str) -> bool:
    """Equal types, the ``*`` wildcard on either side, or intersecting comma-separated sets."""
    if output_type == input_type or output_type == "*" or input_type == "*":
        return True
    return bool(set(output_type.split(",")) & set(input_type.split(",")))
