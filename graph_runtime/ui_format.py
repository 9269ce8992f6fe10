"""Convert the editor's workflow (nodes, links, widgets_values) to an API prompt, by input name.

What the editor's own ``graphToPrompt`` does in the browser, done here with the node declarations:
- positional ``widgets_values`` map to widget inputs in the editor's order (required, then
  optional), skipping the extra value an INT with ``control_after_generate`` adds; a dict maps by name;
- a linked input (a widget turned into an input carries ``widget: {name}``) takes the link;
- muted nodes (mode 2) are dropped; bypassed nodes (mode 4) are wired through: the downstream
  input takes the bypassed node's first linked input of the same type;
- Reroute nodes are followed; PrimitiveNode values flow into the widget they feed; notes vanish;
- subgraphs (``definitions.subgraphs``) are flattened; inner nodes get ids ``"<instance>:<inner>"``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from graph_runtime.links import wrap
from graph_runtime.registry import Registry, editor_order
from graph_runtime.schema import UiLinkObject, UiNode, UiSubgraph, UiWorkflow

log = logging.getLogger(__name__)

MODE_MUTED = 2
MODE_BYPASS = 4
SUBGRAPH_INPUT = -10  # the editor's id of a subgraph's input node
SUBGRAPH_OUTPUT = -20
VIRTUAL = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})
MAX_HOPS = 10_000


class ConversionError(ValueError):
    """The editor graph cannot be converted; the message names the node."""


@dataclass(frozen=True, slots=True)
class _Link:
    origin: str
    origin_slot: int
    target: str
    target_slot: int
    type: Any


@dataclass(frozen=True, slots=True)
class _Value:
    """A literal that a PrimitiveNode feeds into a widget."""

    value: Any


@dataclass
class _Scope:
    """One graph level: the root, or the inside of one subgraph instance."""

    nodes: dict[str, UiNode]
    links: dict[int, _Link]
    prefix: str = ""
    definition: UiSubgraph | None = None
    parent: _Scope | None = None
    instance: UiNode | None = None
    children: dict[str, _Scope] = field(default_factory=dict)


def _links(raw: list[Any]) -> dict[int, _Link]:
    out: dict[int, _Link] = {}
    for link in raw:
        if isinstance(link, UiLinkObject):
            out[link.id] = _Link(
                str(link.origin_id), link.origin_slot, str(link.target_id), link.target_slot, link.type
            )
        else:
            link_id, origin, origin_slot, target, target_slot, kind = link
            out[link_id] = _Link(str(origin), origin_slot, str(target), target_slot, kind)
    return out


class _Converter:
    def __init__(self, workflow: UiWorkflow, registry: Registry) -> None:
        self.registry = registry
        defs = workflow.definitions.subgraphs if workflow.definitions else []
        self.subgraphs = {sg.id: sg for sg in defs}
        self.root = _Scope({str(n.id): n for n in workflow.nodes}, _links(workflow.links))
        self.prompt: dict[str, dict[str, Any]] = {}

    def child(self, scope: _Scope, instance: UiNode) -> _Scope:
        """The scope inside subgraph instance ``instance`` (built once)."""
        key = str(instance.id)
        found = scope.children.get(key)
        if found is None:
            sg = self.subgraphs[instance.type]
            if len(scope.prefix.split(":")) > 32:
                raise ConversionError(
                    f"subgraph {sg.name or sg.id!r} nests itself (node {scope.prefix}{key})"
                )
            nodes = {str(n.id): n for n in sg.nodes}
            found = _Scope(nodes, _links(sg.links), f"{scope.prefix}{key}:", sg, scope, instance)
            scope.children[key] = found
        return found

    def convert(self, scope: _Scope) -> None:
        for node_id, node in scope.nodes.items():
            if node.type in VIRTUAL or node.mode in (MODE_MUTED, MODE_BYPASS):
                continue
            if node.type in self.subgraphs:
                self.convert(self.child(scope, node))
            else:
                self.prompt[scope.prefix + node_id] = self.node(scope, node)

    def node(self, scope: _Scope, node: UiNode) -> dict[str, Any]:
        cls = self.registry.get(node.type)
        inputs: dict[str, Any] = {}
        values = node.widgets_values
        named = getattr(node, "widgets_values_named", None)
        if isinstance(named, dict):
            values = named
        if isinstance(values, dict):
            inputs.update({k: wrap(v) for k, v in values.items()})
        elif isinstance(values, list) and values and cls is None:
            log.warning(
                "node %s: unknown node type %r, so its %d widget values cannot be mapped to input names "
                "(is its node pack installed?)",
                scope.prefix + str(node.id),
                node.type,
                len(values),
            )
        elif isinstance(values, list) and cls is not None:
            position = 0
            for spec in editor_order(cls):
                if not spec.is_widget:
                    continue
                if position >= len(values):
                    break
                inputs[spec.name] = wrap(values[position])
                position += 2 if getattr(spec, "control_after_generate", False) else 1
        for slot in node.inputs:
            if slot.link is None:
                continue
            name = slot.widget.name if slot.widget is not None else slot.name
            source = self.follow(scope, slot.link)
            if isinstance(source, _Value):
                inputs[name] = wrap(source.value)
            elif source is not None:
                inputs[name] = [source[0], source[1]]
        title = node.title or (cls.display_name if cls is not None else node.type)
        return {"class_type": node.type, "inputs": inputs, "_meta": {"title": title}}

    def follow(self, scope: _Scope, link_id: int) -> tuple[str, int] | _Value | None:
        """Where link ``link_id`` of ``scope`` really comes from, through reroutes, bypasses and subgraphs."""
        for _ in range(MAX_HOPS):
            link = scope.links.get(link_id)
            if link is None:
                return None  # a dangling link id: the editor drops it too
            if link.origin == str(SUBGRAPH_INPUT):
                step = self.leave(scope, link.origin_slot)
                if step is None:
                    return None
                scope, link_id = step
                continue
            origin = scope.nodes.get(link.origin)
            if origin is None:
                where = scope.prefix + link.target
                raise ConversionError(
                    f"node {where}: link {link_id} comes from node {link.origin}, which does not exist"
                )
            if origin.mode == MODE_MUTED:
                return None
            if origin.type == "PrimitiveNode":
                vals = origin.widgets_values
                return _Value(vals[0]) if isinstance(vals, list) and vals else None
            next_link: int | None
            if origin.type == "Reroute":
                next_link = origin.inputs[0].link if origin.inputs else None
            elif origin.mode == MODE_BYPASS:
                next_link = self.bypass(origin, link)
            elif origin.type in self.subgraphs:
                inner = self.child(scope, origin)
                next_link = self.enter(inner, link.origin_slot)
                scope = inner
            else:
                return (scope.prefix + link.origin, link.origin_slot)
            if next_link is None:
                return None
            link_id = next_link
        raise ConversionError(f"link {link_id} goes round in circles through reroutes or bypassed nodes")

    @staticmethod
    def bypass(origin: UiNode, link: _Link) -> int | None:
        """The link a bypassed node passes on for ``link``: its first linked input of the same type."""
        kind = link.type
        if link.origin_slot < len(origin.outputs) and origin.outputs[link.origin_slot].type is not None:
            kind = origin.outputs[link.origin_slot].type
        for slot in origin.inputs:
            if slot.link is not None and (slot.type == kind or kind == "*" or slot.type == "*"):
                return slot.link
        return None

    def enter(self, inner: _Scope, output_slot: int) -> int | None:
        """The inner link that feeds output ``output_slot`` of a subgraph."""
        assert inner.definition is not None
        outputs = inner.definition.outputs
        if output_slot < len(outputs) and outputs[output_slot].linkIds:
            return outputs[output_slot].linkIds[0]
        for link_id, link in inner.links.items():
            if link.target == str(SUBGRAPH_OUTPUT) and link.target_slot == output_slot:
                return link_id
        return None

    def leave(self, scope: _Scope, input_slot: int) -> tuple[_Scope, int] | None:
        """The outer link that feeds input ``input_slot`` of the subgraph ``scope`` is inside."""
        if scope.parent is None or scope.instance is None or scope.definition is None:
            raise ConversionError("a link comes from a subgraph input outside any subgraph")
        slots = scope.definition.inputs
        name = slots[input_slot].name if input_slot < len(slots) else None
        candidates = [s for s in scope.instance.inputs if s.name == name] or (
            scope.instance.inputs[input_slot : input_slot + 1]
            if input_slot < len(scope.instance.inputs)
            else []
        )
        if not candidates or candidates[0].link is None:
            return None
        return scope.parent, candidates[0].link


def ui_to_api(workflow: UiWorkflow, registry: Registry) -> dict[str, dict[str, Any]]:
    """The API prompt of an editor workflow (see the module docstring for the rules)."""
    converter = _Converter(workflow, registry)
    converter.convert(converter.root)
    return converter.prompt
