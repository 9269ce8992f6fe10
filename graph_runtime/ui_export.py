"""API prompt → the editor's workflow (schema 0.4): the inverse of :mod:`graph_runtime.ui_format`.

What the editor would save for the same graph, derived from the node declarations:
- nodes keep their ids (numeric ids as ints; other ids are renumbered in sorted order);
- links are ``[link_id, origin_id, origin_slot, target_id, target_slot, type]``; an output named
  by string is resolved to its index;
- ``inputs`` lists the socket inputs in the editor's order (required, then optional), plus any
  widget input that the prompt links (marked ``widget: {name}``, as the editor marks converted widgets);
- ``widgets_values`` is positional in the editor's order; an INT with ``control_after_generate``
  is followed by its control value ``"fixed"`` (the prompt is reproduced, never re-seeded);
  a linked widget keeps its declared default; trailing widgets the prompt leaves out are left out;
- nodes are laid out in columns by their depth (longest path from a source), in topological order.

``api_to_ui(prompt) → ui`` followed by :func:`graph_runtime.workflow.to_api_prompt` gives the
prompt back (titles included) when its node ids are numeric and it sets every widget before the last
one it sets. The ``guidegraph convert`` command wraps both directions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import networkx as nx

from graph_runtime.api import Int, Node
from graph_runtime.links import as_link, unwrap
from graph_runtime.registry import Registry, editor_order

VERSION = 0.4
CONTROL_VALUE = "fixed"
COLUMN_WIDTH, NODE_WIDTH, ROW_GAP = 380, 320, 40
SLOT_HEIGHT, WIDGET_HEIGHT, TITLE_HEIGHT = 22, 26, 30


class ExportError(ValueError):
    """The prompt cannot be drawn as an editor graph; the message names the node."""


def _ui_ids(prompt: dict[str, Any]) -> dict[str, int]:
    """API id → editor id: numeric ids stay, otherwise every node is renumbered in sorted order."""
    if all(node_id.isdigit() for node_id in prompt):
        return {node_id: int(node_id) for node_id in prompt}
    return {node_id: i for i, node_id in enumerate(sorted(prompt), start=1)}


def _output_index(cls: type[Node] | None, output: int | str, where: str) -> int:
    if isinstance(output, int):
        return output
    names = [o.name for o in cls.outputs] if cls is not None else []
    if output not in names:
        raise ExportError(f"{where}: links to output {output!r}, which the source does not have")
    return names.index(output)


def _output_type(cls: type[Node] | None, index: int) -> str:
    if cls is not None and index < len(cls.outputs):
        return cls.outputs[index].type
    return "*"


def _graph(prompt: dict[str, Any]) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(prompt)
    for node_id, node in prompt.items():
        for value in node.get("inputs", {}).values():
            link = as_link(value)
            if link is not None and link.source in prompt:
                graph.add_edge(link.source, node_id)
    return graph


def _layout(graph: nx.DiGraph) -> tuple[list[str], dict[str, int]]:
    """Topological order (ties by id) and each node's depth: the longest path from a source."""
    try:
        order = list(nx.lexicographical_topological_sort(graph, key=_id_key))
    except nx.NetworkXUnfeasible:
        cycle = [edge[0] for edge in nx.find_cycle(graph)]
        raise ExportError(f"the prompt has a cycle through nodes {cycle}") from None
    depth: dict[str, int] = {}
    for node_id in order:
        depth[node_id] = max((depth[p] + 1 for p in graph.predecessors(node_id)), default=0)
    return order, depth


def _id_key(node_id: str) -> tuple[int, int | str]:
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)


def _widget_values(cls: type[Node], inputs: dict[str, Any], linked: set[str]) -> list[Any]:
    """The editor's positional ``widgets_values``; stops after the last widget the prompt sets."""
    widgets = [spec for spec in editor_order(cls) if spec.is_widget]
    set_names = [spec.name for spec in widgets if spec.name in inputs]
    last = max((widgets.index(s) for s in widgets if s.name in set_names), default=-1)
    values: list[Any] = []
    for spec in widgets[: last + 1]:
        if spec.name in inputs and spec.name not in linked:
            values.append(unwrap(inputs[spec.name]))
        else:
            values.append(getattr(spec, "default", None))
        if isinstance(spec, Int) and spec.control_after_generate:
            values.append(CONTROL_VALUE)
    return values


def _size(sockets: int, outputs: int, widgets: int) -> list[int]:
    return [NODE_WIDTH, max(sockets, outputs, 1) * SLOT_HEIGHT + widgets * WIDGET_HEIGHT + 10]


def api_to_ui(prompt: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """The editor workflow (schema 0.4) of an API prompt; unknown node types raise :class:`ExportError`."""
    ids = _ui_ids(prompt)
    order, depth = _layout(_graph(prompt))
    classes: dict[str, type[Node]] = {}
    for node_id, node in prompt.items():
        cls = registry.get(node.get("class_type", ""))
        if cls is None:
            raise ExportError(f"node {node_id}: unknown node type {node.get('class_type')!r}")
        classes[node_id] = cls

    ui_nodes: dict[str, dict[str, Any]] = {}
    for position, node_id in enumerate(order):
        node, cls = prompt[node_id], classes[node_id]
        inputs = node.get("inputs", {})
        linked = {name for name, value in inputs.items() if as_link(value) is not None}
        slots: list[dict[str, Any]] = []
        for spec in editor_order(cls):
            if not spec.is_widget:
                slots.append({"name": spec.name, "type": spec.type_name, "link": None})
            elif spec.name in linked:
                slots.append(
                    {"name": spec.name, "type": spec.type_name, "widget": {"name": spec.name}, "link": None}
                )
        unknown = sorted(set(inputs) - {spec.name for spec in cls.inputs})
        if unknown:
            raise ExportError(f"node {node_id} ({cls.__name__}): no input named {unknown[0]!r}")
        values = _widget_values(cls, inputs, linked)
        title = (node.get("_meta") or {}).get("title") or cls.display_name or cls.__name__
        ui_nodes[node_id] = {
            "id": ids[node_id],
            "type": cls.__name__,
            "pos": [0, 0],
            "size": _size(len(slots), len(cls.outputs), len(values)),
            "flags": {},
            "order": position,
            "mode": 0,
            "title": title,
            "inputs": slots,
            "outputs": [
                {"name": out.name, "type": out.type, "links": [], "slot_index": i}
                for i, out in enumerate(cls.outputs)
            ],
            "properties": {"Node name for S&R": cls.__name__},
            "widgets_values": values,
        }

    links: list[list[Any]] = []
    for node_id in order:
        target = ui_nodes[node_id]
        slot_of = {slot["name"]: i for i, slot in enumerate(target["inputs"])}
        for name, value in prompt[node_id].get("inputs", {}).items():
            link = as_link(value)
            if link is None:
                continue
            where = f"node {node_id} input {name!r}"
            if link.source not in prompt:
                raise ExportError(f"{where}: links to node {link.source!r}, which does not exist")
            source_cls = classes[link.source]
            index = _output_index(source_cls, link.output, where)
            kind = _output_type(source_cls, index)
            link_id = len(links) + 1
            links.append([link_id, ids[link.source], index, target["id"], slot_of[name], kind])
            target["inputs"][slot_of[name]]["link"] = link_id
            outputs = ui_nodes[link.source]["outputs"]
            if index >= len(outputs):
                raise ExportError(f"{where}: output {index} of a node with {len(outputs)} outputs")
            outputs[index]["links"].append(link_id)

    column_y: dict[int, int] = {}
    for node_id in order:
        ui = ui_nodes[node_id]
        col = depth[node_id]
        y = column_y.get(col, 60)
        ui["pos"] = [60 + col * COLUMN_WIDTH, y]
        column_y[col] = y + ui["size"][1] + TITLE_HEIGHT + ROW_GAP

    return {
        "last_node_id": max(ids.values(), default=0),
        "last_link_id": len(links),
        "nodes": [ui_nodes[node_id] for node_id in order],
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}},
        "version": VERSION,
    }


# --- the ``guidegraph convert`` command -----------------------------------------------------------


def cmd_convert(args: argparse.Namespace) -> int:
    from graph_runtime.cli import EXIT_OK, _registry
    from graph_runtime.workflow import is_ui_format, read_workflow, to_api_prompt

    registry = _registry()
    data = read_workflow(args.input)
    target = args.to or ("api" if is_ui_format(data) else "ui")
    prompt = to_api_prompt(data, registry)
    try:
        out = api_to_ui(prompt, registry) if target == "ui" else prompt
    except ExportError as exc:
        from graph_runtime.workflow import WorkflowFormatError

        raise WorkflowFormatError(f"{args.input}: {exc}") from None
    text = json.dumps(out, indent=2, ensure_ascii=False) + "\n"
    if args.output == "-":
        print(text, end="")
    else:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            from graph_runtime.cli import UsageError

            raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        print(f"wrote {args.output} ({target} format, {len(prompt)} nodes)")
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Entry point (group ``guidegraph.commands``): add ``guidegraph convert IN OUT [--to ui|api]``."""
    parser = subparsers.add_parser(
        "convert", help="convert a workflow between the API format and the editor's format"
    )
    parser.add_argument("input", help="workflow JSON in either format, or a PNG carrying one")
    parser.add_argument("output", help="where to write the converted JSON ('-': standard output)")
    parser.add_argument(
        "--to", choices=("ui", "api"), default=None, help="target format (default: the other one)"
    )
    parser.set_defaults(func=cmd_convert)
