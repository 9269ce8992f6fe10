"""Small test nodes for the runtime tests: numbers, arithmetic, a failing node, a slow node.

Imported by the tests as ``runtime_testnodes`` (conftest.py puts this folder on sys.path).
"""

from __future__ import annotations

import random
import threading
from typing import Any

import torch

from graph_runtime.api import Boolean, Combo, Context, Float, Int, Node, Output, Result, Socket, String


class Number(Node):
    """A constant."""

    category = "test"
    inputs = (Float("value", default=1.0, min=-1000.0, max=1000.0),)
    outputs = (Output("value", "FLOAT"),)

    @staticmethod
    def run(ctx: Context, value: float) -> tuple[float]:
        return (value,)


class Count(Node):
    """An integer with the editor's seed control."""

    category = "test"
    inputs = (Int("count", default=3, min=0, max=100, control_after_generate=True),)
    outputs = (Output("count", "INT"),)

    @staticmethod
    def run(ctx: Context, count: int) -> tuple[int]:
        return (count,)


class Add(Node):
    """a + b (b optional, 0 when left out)."""

    category = "test"
    inputs = (Socket("a", type="FLOAT"), Socket("b", type="FLOAT", optional=True))
    outputs = (Output("sum", "FLOAT"),)

    @staticmethod
    def run(ctx: Context, a: float, b: float | None) -> tuple[float]:
        return (a + (b or 0.0),)


class Scale(Node):
    """x * factor."""

    category = "test"
    inputs = (Socket("x", type="FLOAT"), Float("factor", default=2.0, min=-10.0, max=10.0))
    outputs = (Output("scaled", "FLOAT"),)

    @staticmethod
    def run(ctx: Context, x: float, factor: float) -> tuple[float]:
        return (x * factor,)


class Options(Node):
    """Every widget type, to test conversion and validation."""

    category = "test"
    inputs = (
        Int("seed", default=0, min=0, control_after_generate=True),
        String("text", default="", multiline=True),
        Socket("x", type="FLOAT", optional=True),
        Boolean("flag", default=False),
        Combo("mode", options=("a", "b", "c"), default="a"),
        Float("weight", default=0.5, min=0.0, max=1.0, optional=True),
    )
    outputs = (Output("summary", "STRING"),)

    @staticmethod
    def run(
        ctx: Context, seed: int, text: str, x: float | None, flag: bool, mode: str, weight: float
    ) -> tuple[str]:
        return (f"{seed}|{text}|{x}|{flag}|{mode}|{weight}",)


class Show(Node):
    """Output node: shows anything in the UI."""

    category = "test"
    output_node = True
    inputs = (Socket("value", type="*"),)
    outputs = ()

    @staticmethod
    def run(ctx: Context, value: Any) -> Result:
        return Result(ui={"text": [repr(value)]})


class Keep(Node):
    """Output node with an output, to read values back."""

    category = "test"
    output_node = True
    inputs = (Socket("value", type="*"),)
    outputs = (Output("value", "*"),)

    @staticmethod
    def run(ctx: Context, value: Any) -> tuple[Any]:
        return (value,)


class Fail(Node):
    """Always raises."""

    category = "test"
    inputs = (Socket("x", type="FLOAT"),)
    outputs = (Output("x", "FLOAT"),)

    @staticmethod
    def run(ctx: Context, x: float) -> tuple[float]:
        raise RuntimeError(f"boom at {x}")


class Noise(Node):
    """Non-deterministic: a fresh random number every run."""

    category = "test"
    deterministic = False
    inputs = ()
    outputs = (Output("value", "FLOAT"),)

    @staticmethod
    def run(ctx: Context) -> tuple[float]:
        return (random.random(),)


class Slow(Node):
    """Reports progress each step; cancellable."""

    category = "test"
    inputs = (Socket("x", type="FLOAT"), Int("steps", default=3, min=1, max=1000))
    outputs = (Output("x", "FLOAT"),)
    started = threading.Event()
    proceed = threading.Event()

    @staticmethod
    def run(ctx: Context, x: float, steps: int) -> tuple[float]:
        for i in range(steps):
            ctx.progress(i + 1, steps)
        return (x,)


class MakeTensor(Node):
    """A float32 tensor of n zeros on the run's device."""

    category = "test"
    inputs = (Int("n", default=4, min=0, max=1 << 20),)
    outputs = (Output("tensor", "TENSOR"),)

    @staticmethod
    def run(ctx: Context, n: int) -> tuple[torch.Tensor]:
        return (torch.zeros(n, device=ctx.device),)


class Echo(Node):
    """Output node returning the prompt and extra_pnginfo it saw."""

    category = "test"
    output_node = True
    inputs = (String("tag", default=""),)
    outputs = (Output("seen", "*"),)

    @staticmethod
    def run(ctx: Context, tag: str) -> tuple[Any]:
        return ((ctx.node_id, ctx.class_type, ctx.prompt, ctx.extra_pnginfo, str(ctx.device)),)


TEST_NODES: tuple[type[Node], ...] = (
    Number,
    Count,
    Add,
    Scale,
    Options,
    Show,
    Keep,
    Fail,
    Noise,
    Slow,
    MakeTensor,
    Echo,
)
