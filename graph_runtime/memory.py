"""How much memory a prompt will need, estimated before it runs, and how much the machine can give.

A server that runs whatever fits its input ranges can be killed by one request (a 2048×2048 batch
of 64): the kernel's OOM killer gives no exception to catch. So a validated prompt is estimated first
and refused beyond a budget.

The estimate is declared by the nodes that know their cost. A node class may define a static
``footprint(inputs) -> Footprint``: ``inputs`` maps each literal input to its value and each linked
input to the description its upstream output declared (``None`` when that is unknown). The footprint
describes the node's outputs (tensor shapes, or sizes, kept while the prompt runs) and gives the
working bytes it needs only while it runs. A prompt needs the bytes of every declared output plus the largest
working set (nodes run one at a time). Nodes without a footprint count as nothing: the estimate is a
floor for what is declared, meant to catch the requests that cannot fit, not to account every byte.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graph_runtime.api import Footprint
from graph_runtime.report import ValidationReport

FLOAT32 = 4


@dataclass(frozen=True)
class Estimate:
    """A prompt's estimated peak in bytes, and each declaring node's share (its outputs + working set)."""

    total: int = 0
    per_node: dict[str, int] = field(default_factory=dict)

    def largest(self) -> str | None:
        """The node that needs the most, or None when no node declared anything."""
        return max(self.per_node, key=self.per_node.__getitem__) if self.per_node else None


def nbytes(output: Any) -> int:
    """The bytes an output description stands for (see :class:`~graph_runtime.api.Footprint`)."""
    if isinstance(output, tuple) and output:
        if all([type(n) is int for n in output]):
            return math.prod(output) * FLOAT32
        return 0
    size = getattr(output, "nbytes", 0)
    return size if type(size) is int else 0


def estimate(report: ValidationReport) -> Estimate:
    """The estimate of a validated prompt's plan (only the nodes that will run)."""
    shapes: dict[tuple[str, int], Any] = {}
    kept, working, per_node = 0, 0, {}
    for node_id in report.order:
        planned = report.nodes[node_id]
        declared: Callable[[Mapping[str, Any]], Footprint] | None = getattr(planned.cls, "footprint", None)
        if declared is None:
            continue
        inputs: Mapping[str, Any] = planned.literals  # read only
        if planned.links:
            inputs = {**inputs, **{name: shapes.get(src) for name, src in planned.links.items()}}
        footprint = declared(inputs)
        outputs = 0
        for index, shape in enumerate(footprint.outputs):
            shapes[(node_id, index)] = shape
            outputs += nbytes(shape)
        kept += outputs
        working = max(working, footprint.working)
        per_node[node_id] = outputs + footprint.working
    return Estimate(kept + working, per_node)


def available_bytes(device: str | None = None) -> int:
    """Memory a prompt may use now: available RAM, and no more than the free memory of a CUDA device."""
    available = ram()[1]
    if device is None or device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            index = torch.device(device or "cuda").index or 0
            available = min(available, torch.cuda.mem_get_info(index)[0])
    return available


def ram() -> tuple[int, int]:
    """(total, available) bytes of RAM."""
    try:
        with open("/proc/meminfo") as handle:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle if ":" in line}
        return info["MemTotal"], info.get("MemAvailable", info.get("MemFree", 0))
    except (OSError, KeyError, ValueError, IndexError):
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
        except (ValueError, OSError, AttributeError):
            return 0, 0
