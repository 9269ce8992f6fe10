"""Static checks of an API-format prompt, collecting every problem in ComfyUI's report shape.

Only the nodes that the chosen outputs need are checked in depth (as in ComfyUI, a stray node in
the editor does not block a run); every node's class_type is checked. Each output whose ancestry
is clean is a *good output*; the prompt runs when at least one is (ComfyUI's partial acceptance),
and ``report.ok`` says whether there was no problem at all. Nothing is coerced: the string
``"false"`` is not a BOOLEAN, ``3.5`` is not an INT (``3.0`` is accepted as 3, losslessly).

An INT with a ``step`` above 1 must lie on the editor's grid, ``min + k·step``. ComfyUI's backend does
not check ``step``, but its editor snaps every INT widget to exactly that grid, so only API clients
can send an off-grid value; ComfyUI's own nodes then floor it silently (width 12 becomes 8), ours would
fail deep inside a run. Refusing it up front names the node and input instead. FLOAT steps are editor
increments, not constraints, and are not checked (neither are they in ComfyUI).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from graph_runtime.api import Boolean, Combo, Float, Input, Int, Node, Socket, String
from graph_runtime.links import VALUE_KEY, as_link, is_wrapped, link_problem
from graph_runtime.plan import DependencyGraph
from graph_runtime.registry import Registry
from graph_runtime.report import PlannedNode, ValidationReport, error_record, types_compatible

INT64_LOW, INT64_HIGH = -(2**63), 2**64 - 1  # signed or unsigned 64-bit (ComfyUI's seeds are unsigned)
MAX_LISTED_OPTIONS = 20  # as ComfyUI: longer option lists are summarised by their length
MAX_NAMED_CYCLE_NODES = 20


class _Checker:
    """One validation pass; holds the per-pass memo of combo choices (folder listings hit the disk)."""

    def __init__(self, prompt: dict[str, Any], registry: Registry) -> None:
        self.prompt = prompt
        self.registry = registry
        self.errors: dict[str, list[dict[str, Any]]] = {}
        self.warnings: list[str] = []
        self.choices: dict[int, list[str]] = {}

    def add(self, node_id: str, kind: str, message: str, details: str = "", **extra: Any) -> None:
        self.errors.setdefault(node_id, []).append(error_record(kind, message, details, **extra))

    def check_node(self, node_id: str, node: dict[str, Any], cls: type[Node]) -> PlannedNode:
        inputs = node.get("inputs", {})
        planned = PlannedNode(node_id, cls, {}, {})
        if type(inputs) is not dict:
            self.add(
                node_id, "invalid_prompt", "Inputs are not an object", f"inputs is {type(inputs).__name__}"
            )
            return planned
        for name, value in inputs.items():
            spec = cls.input(name)
            if spec is None:  # ignored, as ComfyUI ignores inputs a node does not declare
                known = ", ".join(s.name for s in cls.inputs) or "none"
                self.warnings.append(
                    f"node {node_id} ({cls.__name__}), input {name!r}: not an input of {cls.__name__}, "
                    f"ignored (inputs: {known})"
                )
                continue
            link = as_link(value)
            if link is not None:
                resolved = self.check_link(node_id, name, spec, link)
                if resolved is not None:
                    planned.links[name] = resolved
            elif type(value) is list:
                self.add(
                    node_id,
                    "bad_linked_input",
                    "Bad linked input, must be a length-2 list of [string, int]",
                    f"{name}: {value!r} is neither a link [node_id, output] "
                    f"nor a wrapped literal {{'{VALUE_KEY}': [...]}}",
                    input_name=name,
                    received_value=value,
                )
            elif not spec.is_widget:
                self.add(
                    node_id,
                    "invalid_input_type",
                    "Input takes a link",
                    f"{name} takes a link from a {spec.type_name} output, got the literal {value!r}",
                    input_name=name,
                    received_value=_safe(value),
                )
            else:
                ok, literal = self.check_literal(node_id, name, spec, value)
                if ok:
                    planned.literals[name] = literal
        for spec in cls.inputs:
            if not spec.optional and spec.name not in inputs:
                self.add(
                    node_id,
                    "required_input_missing",
                    "Required input is missing",
                    f"{spec.name} ({spec.type_name}) is required",
                    input_name=spec.name,
                )
        return planned

    def check_link(self, node_id: str, name: str, spec: Input, link: Any) -> tuple[str, int] | None:
        problem = link_problem(link)
        source = self.prompt.get(link.source)
        if problem is None and source is None:
            problem = f"links to node {link.source!r}, which is not in the prompt"
        if problem is not None:
            self.add(
                node_id,
                "bad_linked_input",
                "Bad linked input",
                f"{name}: {problem}",
                input_name=name,
                linked_node=[link.source, _safe(link.output)],
            )
            return None
        source_type = source.get("class_type") if type(source) is dict else None
        source_cls = self.registry.get(source_type) if type(source_type) is str else None
        if source_cls is None:
            return None  # the source's own error says why; no second guess about its outputs
        outputs = source_cls.outputs
        index = link.output
        if type(index) is str:
            index = next((i for i, o in enumerate(outputs) if o.name == link.output), -1)
        assert isinstance(index, int)
        if not 0 <= index < len(outputs):
            names = ", ".join(f"{i}:{o.name}" for i, o in enumerate(outputs)) or "none"
            self.add(
                node_id,
                "bad_linked_input",
                "Bad linked input",
                f"{name}: node {link.source} ({source_cls.__name__}) has no output {link.output!r} "
                f"(outputs: {names})",
                input_name=name,
                linked_node=[link.source, link.output],
            )
            return None
        out_type = outputs[index].type
        if not types_compatible(out_type, spec.type_name):
            self.add(
                node_id,
                "return_type_mismatch",
                "Return type mismatch between linked nodes",
                f"{name} expects {spec.type_name}, but node {link.source} ({source_cls.__name__}) output "
                f"{index} ({outputs[index].name}) is {out_type}",
                input_name=name,
                received_type=out_type,
                linked_node=[link.source, index],
            )
            return None
        return (link.source, index)

    def check_literal(self, node_id: str, name: str, spec: Input, value: Any) -> tuple[bool, Any]:
        value = value[VALUE_KEY] if is_wrapped(value) else value
        shown = _safe(value)
        kind = type(value)

        def bad(error_type: str, message: str, details: str) -> tuple[bool, Any]:
            self.add(
                node_id, error_type, message, f"{name}: {details}", input_name=name, received_value=shown
            )
            return False, None

        if isinstance(spec, Int):
            if kind is float and math.isfinite(value) and value.is_integer():
                value, kind = int(value), int
            if kind is not int:
                return bad(
                    "invalid_input_type", "Invalid input type", f"expected an INT, got {_describe(value)}"
                )
            if not INT64_LOW <= value <= INT64_HIGH:
                return bad(
                    "value_bigger_than_max" if value > 0 else "value_smaller_than_min",
                    "Value out of range",
                    f"{value} does not fit a 64-bit integer",
                )
            ok, value = self.check_range(name, spec, value, bad)
            if ok and spec.step > 1 and (value - spec.min) % spec.step:
                below = value - (value - spec.min) % spec.step
                return bad(
                    "value_not_multiple_of_step",
                    "Value not on the step grid",
                    f"{value} is not {spec.min} plus a multiple of the step {spec.step}"
                    f" (nearest: {below} or {below + spec.step})",
                )
            return ok, value
        if isinstance(spec, Float):
            if kind not in (int, float):
                return bad(
                    "invalid_input_type", "Invalid input type", f"expected a FLOAT, got {_describe(value)}"
                )
            try:
                as_float = float(value)
            except OverflowError:
                return bad(
                    "value_bigger_than_max", "Value bigger than max", f"{value} is too large for a FLOAT"
                )
            if not math.isfinite(as_float):
                return bad("value_not_finite", "Value is not a finite number", f"{value} is not finite")
            return self.check_range(name, spec, as_float, bad)
        if isinstance(spec, String):
            if kind is not str:
                return bad(
                    "invalid_input_type", "Invalid input type", f"expected a STRING, got {_describe(value)}"
                )
            return True, value
        if isinstance(spec, Boolean):
            if kind is not bool:
                return bad(
                    "invalid_input_type",
                    "Invalid input type",
                    f"expected a BOOLEAN (true or false), got {_describe(value)}",
                )
            return True, value
        if isinstance(spec, Combo):
            choices = self.choices.get(id(spec))
            if choices is None:
                choices = self.choices[id(spec)] = spec.choices()
            if kind is not str or value not in choices:
                listed = choices if len(choices) <= MAX_LISTED_OPTIONS else f"a list of length {len(choices)}"
                return bad("value_not_in_list", "Value not in list", f"{_describe(value)} not in {listed}")
            return True, value
        assert not isinstance(spec, Socket)
        return True, value

    @staticmethod
    def check_range(name: str, spec: Int | Float, value: Any, bad: Any) -> tuple[bool, Any]:
        if value < spec.min:
            return bad(
                "value_smaller_than_min",
                "Value smaller than min",
                f"{value} is smaller than the minimum {spec.min}",
            )
        if value > spec.max:
            return bad(
                "value_bigger_than_max",
                "Value bigger than max",
                f"{value} is bigger than the maximum {spec.max}",
            )
        return True, value


def _referenced_node(value: Any, prompt: dict[str, Any]) -> str | None:
    """The node a list input points at, malformed links included (``[1, 0]``, ``["1"]``, ``["1", 0, 0]``).

    A broken link is reported on its own node; following it anyway keeps the nodes upstream of it in
    the checked set, so their problems are reported in the same pass.
    """
    if type(value) is not list or not value or type(value[0]) not in (str, int):
        return None
    source = str(value[0])
    return source if source in prompt else None


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _safe(value: Any) -> Any:
    """A JSON-safe echo of a received value for ``extra_info``."""
    if value is None or type(value) in (bool, int, str):
        return value
    if type(value) is float:
        return value if math.isfinite(value) else repr(value)
    return repr(value)[:200]


def validate(prompt: Any, registry: Registry, outputs: Sequence[str] | None = None) -> ValidationReport:
    """Check an API-format prompt for every problem; plan the good outputs' nodes in topological order.

    ``outputs`` restricts the targets to those node ids (any node, output node or not, as for
    ``partial_execution_targets``); by default the targets are all nodes declared ``output_node``.
    """
    with gc_paused():
        return _validate(prompt, registry, outputs)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for an allocation-heavy pass that makes no reference cycles.

    On a 10,000-node prompt in a process holding torch, collections triggered by the pass's own
    small allocations cost more than the pass itself; reference counting still frees everything.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _validate(prompt: Any, registry: Registry, outputs: Sequence[str] | None) -> ValidationReport:
    report = ValidationReport()
    if type(prompt) is not dict:
        kind = type(prompt).__name__
        report.error = error_record(
            "invalid_prompt", "Invalid prompt", f"a prompt is an object of nodes, got {kind}"
        )
        return report
    checker = _Checker(prompt, registry)
    classes: dict[str, type[Node]] = {}
    graph = DependencyGraph(prompt)
    for node_id, node in prompt.items():
        class_type = node.get("class_type") if type(node) is dict else None
        if type(class_type) is not str:
            checker.add(
                node_id,
                "invalid_prompt",
                "Node has no class_type",
                f"node {node_id!r} needs a string class_type",
            )
            continue
        cls = registry.get(class_type)
        if cls is None:
            details = f"no node type named {class_type!r} is registered (is its node pack installed?)"
            checker.add(
                node_id,
                "missing_node_type",
                f"Node type {class_type!r} not found",
                details,
                class_type=class_type,
            )
            continue
        classes[node_id] = cls
        inputs = node.get("inputs", {})
        if type(inputs) is dict:
            for value in inputs.values():
                source = _referenced_node(value, prompt)
                if source is not None:
                    graph.add_edge(source, node_id)

    if outputs is not None:
        targets = list(dict.fromkeys(outputs))
        missing = [t for t in targets if t not in prompt]
        if missing:
            details = f"no node {', '.join(map(repr, missing))} in the prompt"
            report.error = error_record("invalid_prompt", "Requested outputs are not in the prompt", details)
    else:
        targets = [n for n, cls in classes.items() if cls.output_node]
    targets = [t for t in targets if t in prompt]
    report.outputs = targets

    relevant = graph.ancestors(targets) if targets else set(prompt)
    for node_id in prompt:
        if node_id in relevant and node_id in classes:
            report.nodes[node_id] = checker.check_node(node_id, prompt[node_id], classes[node_id])
    order, stuck = graph.order(relevant)
    if stuck:
        for members in graph.cycles(stuck):
            extra = len(members) - MAX_NAMED_CYCLE_NODES
            named = ", ".join(members[:MAX_NAMED_CYCLE_NODES]) + (f" and {extra} more" if extra > 0 else "")
            for node_id in members:
                details = f"nodes {named} depend on each other in a cycle"
                checker.add(
                    node_id,
                    "dependency_cycle",
                    "Dependency cycle",
                    details,
                    cycle=members[:MAX_NAMED_CYCLE_NODES],
                )
    report.warnings = checker.warnings
    _finish(report, checker.errors, graph, order, relevant, prompt, targets, outputs is None)
    return report


def _finish(
    report: ValidationReport,
    errors: dict[str, list[dict[str, Any]]],
    graph: DependencyGraph,
    order: list[str],
    relevant: set[str],
    prompt: dict[str, Any],
    targets: list[str],
    default_targets: bool,
) -> None:
    """Decide the good outputs, the dependent outputs of each failing node, the plan and the error."""
    dependents: dict[str, list[str]] = {n: [] for n in errors}
    good: list[str] = []
    for target in targets:
        if not errors:
            good.append(target)
            continue
        failing = [n for n in graph.ancestors([target]) if n in errors]
        for n in failing:
            dependents[n].append(target)
        if not failing:
            good.append(target)
    report.good_outputs = good
    for node_id, errs in errors.items():
        node = prompt.get(node_id)
        class_type = node.get("class_type") if type(node) is dict else None
        report.node_errors[node_id] = {
            "errors": errs,
            "dependent_outputs": dependents[node_id],
            "class_type": class_type,
        }
    if not good:
        needed: set[str] = set()
    else:
        needed = relevant if len(good) == len(targets) else graph.ancestors(good)
    report.order = [n for n in order if n in needed]
    report.nodes = {n: report.nodes[n] for n in report.order}
    if report.error is not None:
        return
    if not targets:
        what = "the prompt has no output node" if default_targets else "no outputs were asked for"
        report.error = error_record("prompt_no_outputs", "Prompt has no outputs", what)
    elif not good:
        report.error = error_record(
            "prompt_outputs_failed_validation",
            "Prompt outputs failed validation",
            "\n".join(report.messages()),
        )
