"""A node's documentation for people: a plain summary (the editor's tooltip) and a Markdown help page.

Node docstrings are written for readers of the code: reStructuredText literals (````x````) and
citations in parentheses (``(Ho & Salimans 2022, "Classifier-Free Diffusion Guidance")``). The editor
shows ``description`` as plain text, so :func:`summary` gives the first paragraph without markup or
citations; :func:`help_markdown` renders the whole docstring with the inputs (type, default, range,
tooltip) and outputs for the editor's node help panel, citations kept.
"""

from __future__ import annotations

import inspect
import re

from graph_runtime.api import Boolean, Combo, Float, Input, Int, Node, Socket, String

_LITERAL = re.compile(r"``(.+?)``", re.S)
_CITATION = re.compile(r"\s*\((?:[^()]|\([^()]*\))*?\b(?:19|20)\d\d\b(?:[^()]|\([^()]*\))*\)")
_LIMIT = 1e18  # bounds beyond this are "no bound" (the widget defaults)


def paragraphs(doc: str) -> list[str]:
    """The paragraphs of a docstring, each joined into one line."""
    text = inspect.cleandoc(doc or "")
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def summary(doc: str) -> str:
    """The first paragraph as plain text: literals unquoted, citations left out."""
    first = next(iter(paragraphs(doc)), "")
    text = _CITATION.sub("", _LITERAL.sub(r"\1", first))
    return re.sub(r"\s+([.,;:])", r"\1", text).strip()


def help_markdown(cls: type[Node]) -> str:
    """The help page of one node class."""
    lines = [f"# {cls.display_name or cls.__name__}", ""]
    for paragraph in paragraphs(cls.__doc__ or cls.description):
        lines += [_LITERAL.sub(r"`\1`", paragraph), ""]
    if cls.inputs:
        lines += [
            "## Inputs",
            "",
            "| input | type | default | range | what it does |",
            "|---|---|---|---|---|",
        ]
        lines += [_input_row(spec) for spec in cls.inputs]
        lines.append("")
    if cls.outputs:
        lines += ["## Outputs", ""]
        lines += [f"- **{o.name}** ({o.type}){': ' + o.tooltip if o.tooltip else ''}" for o in cls.outputs]
        lines.append("")
    return "\n".join(lines)


def _input_row(spec: Input) -> str:
    default = getattr(spec, "default", None)
    shown = "" if isinstance(spec, Socket) or default is None else f"`{default!r}`"
    bounds = ""
    if isinstance(spec, (Int, Float)):
        low = "" if abs(spec.min) >= _LIMIT else spec.min
        high = "" if abs(spec.max) >= _LIMIT else spec.max
        bounds = f"{low} … {high}" if low != "" or high != "" else ""
        if isinstance(spec, Int) and spec.step > 1:
            bounds += f", step {spec.step}"
    elif isinstance(spec, Combo):
        choices = spec.choices()
        bounds = ", ".join(f"`{c}`" for c in choices[:12]) + (" …" if len(choices) > 12 else "")
    kind = {Int: "INT", Float: "FLOAT", String: "STRING", Boolean: "BOOLEAN", Combo: "COMBO"}.get(
        type(spec), spec.type_name
    )
    name = f"{spec.name} (optional)" if spec.optional else spec.name
    cells = (name, kind, shown, bounds, spec.tooltip)
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
