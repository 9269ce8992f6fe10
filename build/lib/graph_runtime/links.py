"""The small vocabulary of API-format input values: links, wrapped literal lists, plain literals.

A link is ``[source_id, output_index]`` or ``[source_id, "output_name"]`` with a string node id;
a literal list travels wrapped as ``{"__value__": [...]}``; every other value is a literal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VALUE_KEY = "__value__"


@dataclass(frozen=True, slots=True)
class Link:
    """A reference to output ``output`` (an index, or a name before resolution) of node ``source``."""

    source: str
    output: int | str


def as_link(value: Any) -> Link | None:
    """The link ``value`` denotes, or None when it is not link-shaped.

    Link-shaped means a two-item list whose first item is a string; the second must then be an
    int index or a str output name (checked by :func:`link_problem`).
    """
    if type(value) is list and len(value) == 2 and type(value[0]) is str:
        return Link(value[0], value[1])
    return None


def link_problem(link: Link) -> str | None:
    """Why a link-shaped value is malformed, or None."""
    out = link.output
    if type(out) is int:
        return None if out >= 0 else f"output index {out} is negative"
    if type(out) is str:
        return None
    return f"output must be an index or an output name, got {type(out).__name__} {out!r}"


def is_wrapped(value: Any) -> bool:
    """True for ``{"__value__": ...}``, the wrapper of literal lists."""
    return type(value) is dict and len(value) == 1 and VALUE_KEY in value


def unwrap(value: Any) -> Any:
    """The literal inside ``{"__value__": x}``, or ``value`` itself."""
    return value[VALUE_KEY] if is_wrapped(value) else value


def wrap(value: Any) -> Any:
    """Wrap list literals so they are never mistaken for links."""
    if isinstance(value, (list, tuple)):
        return {VALUE_KEY: list(value)}
    return value
