"""The one public door for node authors: declare inputs and outputs, write one stateless ``run``.

A node is a class deriving from :class:`Node` that declares, as class attributes, its typed
``inputs`` and ``outputs`` and a few flags, and defines ``run`` as a ``@staticmethod``::

    class Add(Node):
        \"\"\"Add two numbers.\"\"\"
        category = "math"
        inputs = (Float("a", default=0.0), Float("b", default=0.0))
        outputs = (Output("sum", "FLOAT"),)

        @staticmethod
        def run(ctx: Context, a: float, b: float) -> tuple[float]:
            return (a + b,)

Conventions:
- ``run(ctx, **inputs)`` receives the :class:`Context` first, then every input by name (an optional
  input that is not connected and has no value arrives as ``None``). It returns a tuple with one value
  per declared output, or a :class:`Result` when it also has UI output (images for the editor).
- ``run`` holds no state: everything it needs arrives as inputs or through ``ctx``; caching is the
  runtime's job, keyed on the declaration (class, ``version``, literal inputs, upstream keys).
- Socket types are UPPERCASE strings (``"MODEL"``, ``"GUIDANCE"``); ``"*"`` accepts anything, and a
  comma-separated type (``"IMAGE,MASK"``) accepts any of its members.
- Widget types are INT, FLOAT, STRING, BOOLEAN and COMBO; COMBO options may be a callable (for example
  :class:`FolderFiles`) that the runtime calls again whenever node definitions are asked for.
- A node whose memory use can be told from its inputs may define a static ``footprint(inputs) ->
  Footprint`` (see :mod:`graph_runtime.memory`); a server refuses prompts whose estimate exceeds its budget.
- A node pack exposes ``NodePack`` through the entry-point group ``guidegraph.nodes``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from graph_runtime.context import Context, Interrupted, PreviewImage
from graph_runtime.folders import FolderFiles

__all__ = [
    "Boolean",
    "Combo",
    "Context",
    "Float",
    "FolderFiles",
    "Footprint",
    "Input",
    "Int",
    "Interrupted",
    "Node",
    "NodePack",
    "Output",
    "PreviewImage",
    "Result",
    "Socket",
    "String",
]

Shape = tuple[int, ...]
INT_LIMIT = 2**63 - 1  # largest integer a widget accepts (ComfyUI's seeds are 64-bit)


@dataclass(frozen=True)
class Input:
    """Base of every input declaration: a name (positional), a tooltip and whether it may be left out.

    Everything after the name is keyword-only: ``Float("scale", default=7.5, min=0.0)``.
    """

    name: str
    _: KW_ONLY
    tooltip: str = ""
    optional: bool = False

    @property
    def type_name(self) -> str:
        """The type the editor shows: INT, FLOAT, STRING, BOOLEAN, COMBO or a socket type."""
        raise NotImplementedError

    @property
    def is_widget(self) -> bool:
        """True for literal-valued inputs (widgets), False for sockets that only take links."""
        return True

    @property
    def has_default(self) -> bool:
        return getattr(self, "default", None) is not None


@dataclass(frozen=True, kw_only=True)
class Int(Input):
    """An integer widget. ``control_after_generate`` adds the editor's seed control."""

    default: int = 0
    min: int = -INT_LIMIT
    max: int = INT_LIMIT
    step: int = 1
    control_after_generate: bool = False

    @property
    def type_name(self) -> str:
        return "INT"


@dataclass(frozen=True, kw_only=True)
class Float(Input):
    """A floating-point widget; ``round`` is the editor's display rounding (False: none)."""

    default: float = 0.0
    min: float = -1e300
    max: float = 1e300
    step: float = 0.01
    round: float | bool = False

    @property
    def type_name(self) -> str:
        return "FLOAT"


@dataclass(frozen=True, kw_only=True)
class String(Input):
    """A text widget; ``multiline`` makes it a text area."""

    default: str = ""
    multiline: bool = False
    placeholder: str = ""

    @property
    def type_name(self) -> str:
        return "STRING"


@dataclass(frozen=True, kw_only=True)
class Boolean(Input):
    """A toggle widget. Only JSON ``true``/``false`` are accepted, never the strings."""

    default: bool = False
    label_on: str = "true"
    label_off: str = "false"

    @property
    def type_name(self) -> str:
        return "BOOLEAN"


@dataclass(frozen=True, kw_only=True)
class Combo(Input):
    """A choice among strings; ``options`` may be a callable re-read each time it is asked.

    ``upload="image"`` makes it a file picker of the input folder: the editor adds an upload button and
    a preview of the chosen picture (ComfyUI's ``image_upload``).
    """

    options: Sequence[str] | Callable[[], Sequence[str]] = ()
    default: str | None = None
    upload: Literal["", "image"] = ""

    @property
    def type_name(self) -> str:
        return "COMBO"

    def choices(self) -> Sequence[str]:
        """The current options (calls the source again when it is a callable; fixed ones are not copied)."""
        source = self.options
        return source() if callable(source) else source


@dataclass(frozen=True, kw_only=True)
class Socket(Input):
    """An input that only takes a link from an output of type ``type``."""

    type: str

    @property
    def type_name(self) -> str:
        return self.type

    @property
    def is_widget(self) -> bool:
        return False

    @property
    def has_default(self) -> bool:
        return False


@dataclass(frozen=True)
class Output:
    """A named, typed output slot."""

    name: str
    type: str
    tooltip: str = ""
    is_list: bool = False


@dataclass(frozen=True)
class Footprint:
    """What one node adds to a prompt's memory: a description of each output, and its working bytes.

    An output is described by a tensor shape (a tuple of ints, counted as float32), by any object
    with an ``nbytes`` attribute (counted as that), by any other value downstream footprints
    understand (passed on, not counted), or by None (unknown).
    """

    outputs: tuple[Any, ...] = ()
    working: int = 0


@dataclass
class Result:
    """What ``run`` returns when it has UI output as well as (or instead of) values."""

    outputs: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None


class Node:
    """Base class of every node type. Subclasses declare; the runtime derives the rest."""

    inputs: ClassVar[tuple[Input, ...]] = ()
    outputs: ClassVar[tuple[Output, ...]] = ()
    category: ClassVar[str] = "guidegraph"
    display_name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    version: ClassVar[int] = 1
    output_node: ClassVar[bool] = False
    deterministic: ClassVar[bool] = True
    experimental: ClassVar[bool] = False
    deprecated: ClassVar[bool] = False
    _inputs_by_name: ClassVar[dict[str, Input] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.description:
            cls.description = inspect.cleandoc(cls.__doc__ or "")
        if not cls.display_name:
            cls.display_name = _spaced(cls.__name__)
        _check_declaration(cls)

    @classmethod
    def input(cls, name: str) -> Input | None:
        """The declaration of input ``name``, or None (a per-class dict, built on first use)."""
        specs = cls.__dict__.get("_inputs_by_name")
        if specs is None:
            specs = {spec.name: spec for spec in cls.inputs}
            cls._inputs_by_name = specs
        return specs.get(name)


def _spaced(name: str) -> str:
    """'CFGCombine' -> 'CFG Combine'; 'EmptyLatent' -> 'Empty Latent'."""
    out: list[str] = []
    for i, ch in enumerate(name):
        prev = name[i - 1] if i else ""
        nxt = name[i + 1] if i + 1 < len(name) else ""
        if i and ch.isupper() and (prev.islower() or (nxt.islower() and prev.isupper())):
            out.append(" ")
        out.append(ch)
    return "".join(out)


def _check_declaration(cls: type[Node]) -> None:
    """Fail at import time when a declaration and its ``run`` disagree."""
    run = cls.__dict__.get("run")
    if run is None:
        return  # an abstract intermediate class; the registry refuses classes without run
    if not isinstance(run, staticmethod):
        raise TypeError(f"{cls.__name__}.run must be a @staticmethod taking (ctx, **inputs)")
    names = [spec.name for spec in cls.inputs]
    if len(set(names)) != len(names):
        raise TypeError(f"{cls.__name__} declares an input name twice: {names}")
    for spec in cls.inputs:
        if isinstance(spec, Int) and spec.step > 1 and (spec.default - spec.min) % spec.step:
            raise TypeError(f"{cls.__name__}.{spec.name}: default {spec.default} is off its step grid")
    params = list(inspect.signature(run.__func__).parameters.values())
    if not params or params[0].name != "ctx":
        raise TypeError(f"{cls.__name__}.run must take ctx as its first parameter")
    accepted = {p.name for p in params[1:]}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    missing = [n for n in names if n not in accepted and not takes_any]
    if missing:
        raise TypeError(f"{cls.__name__}.run does not accept declared inputs {missing}")
    specs = {spec.name: spec for spec in cls.inputs}
    clashes = [
        f"{p.name}: run() says {p.default!r}, the declaration {getattr(specs[p.name], 'default', None)!r}"
        for p in params[1:]
        if p.name in specs
        and p.default is not inspect.Parameter.empty
        and p.default != getattr(specs[p.name], "default", None)
    ]
    if clashes:
        raise TypeError(
            f"{cls.__name__}: a default lives in the declaration only (the runtime passes it); "
            + "; ".join(clashes)
        )


@dataclass(frozen=True)
class NodePack:
    """What a ``guidegraph.nodes`` entry point returns: node classes and the model folders they read."""

    name: str
    nodes: Sequence[type[Node]]
    model_folders: Mapping[str, Sequence[Path]] = field(default_factory=dict)
