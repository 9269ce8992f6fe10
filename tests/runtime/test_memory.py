"""The memory estimate: declared output shapes flow along links; outputs add up, working sets do not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graph_runtime import Registry, validate
from graph_runtime.api import Context, Footprint, Int, Node, Output, Socket
from graph_runtime.memory import estimate, nbytes


class Blank(Node):
    """A (n, n) float32 tensor."""

    inputs = (Int("n", default=4, min=1, max=1 << 20),)
    outputs = (Output("t", "T"),)

    @staticmethod
    def run(ctx: Context, n: int) -> tuple[Any]:
        return (None,)

    @staticmethod
    def footprint(inputs: Mapping[str, Any]) -> Footprint:
        return Footprint(outputs=((inputs["n"], inputs["n"]),))


class Square(Node):
    """Needs ten times its input while it runs, and keeps an output as large."""

    output_node = True
    inputs = (Socket("t", type="T"),)
    outputs = (Output("t", "T"),)

    @staticmethod
    def run(ctx: Context, t: Any) -> tuple[Any]:
        return (t,)

    @staticmethod
    def footprint(inputs: Mapping[str, Any]) -> Footprint:
        shape = inputs["t"]
        return Footprint(outputs=(shape,), working=10 * nbytes(shape)) if shape else Footprint((None,))


class Plain(Node):
    """Declares nothing."""

    inputs = (Socket("t", type="T"),)
    outputs = (Output("t", "T"),)

    @staticmethod
    def run(ctx: Context, t: Any) -> tuple[Any]:
        return (t,)


REGISTRY = Registry([Blank, Square, Plain])


def test_outputs_add_up_and_only_the_largest_working_set_counts() -> None:
    prompt = {
        "1": {"class_type": "Blank", "inputs": {"n": 100}},
        "2": {"class_type": "Square", "inputs": {"t": ["1", 0]}},
        "3": {"class_type": "Blank", "inputs": {"n": 10}},
        "4": {"class_type": "Square", "inputs": {"t": ["3", 0]}},
    }
    found = estimate(validate(prompt, REGISTRY))
    big, small = 100 * 100 * 4, 10 * 10 * 4
    assert found.total == 2 * big + 2 * small + 10 * big
    assert found.per_node == {"1": big, "2": 11 * big, "3": small, "4": 11 * small}
    assert found.largest() == "2"


def test_an_undeclared_node_hides_the_shape_downstream() -> None:
    prompt = {
        "1": {"class_type": "Blank", "inputs": {"n": 100}},
        "2": {"class_type": "Plain", "inputs": {"t": ["1", 0]}},
        "3": {"class_type": "Square", "inputs": {"t": ["2", 0]}},
    }
    found = estimate(validate(prompt, REGISTRY))
    assert found.total == 100 * 100 * 4 and found.per_node["3"] == 0
