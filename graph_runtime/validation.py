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

import collections
import gc
import math
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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
        self.choices: dict[int, Sequence[str]] = {}

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
        checked, problem = self.literal_problem(spec, value)
        if problem is None:
            return True, checked
        error_type, message, details = problem
        self.add(
            node_id, error_type, message, f"{name}: {details}", input_name=name, received_value=_safe(value)
        )
        return False, None

    def literal_problem(self, spec: Input, value: Any) -> tuple[Any, tuple[str, str, str] | None]:
        """(the value as the node receives it, None), or (None, (error type, message, details))."""
        kind = type(value)
        if isinstance(spec, Int):
            if kind is float and math.isfinite(value) and value.is_integer():
                value, kind = int(value), int
            if kind is not int:
                return None, (
                    "invalid_input_type",
                    "Invalid input type",
                    f"expected an INT, got {_describe(value)}",
                )
            if not INT64_LOW <= value <= INT64_HIGH:
                return None, (
                    "value_bigger_than_max" if value > 0 else "value_smaller_than_min",
                    "Value out of range",
                    f"{value} does not fit a 64-bit integer",
                )
            problem = _range_problem(spec, value)
            if problem is None and spec.step > 1 and (value - spec.min) % spec.step:
                below = value - (value - spec.min) % spec.step
                problem = (
                    "value_not_multiple_of_step",
                    "Value not on the step grid",
                    f"{value} is not {spec.min} plus a multiple of the step {spec.step}"
                    f" (nearest: {below} or {below + spec.step})",
                )
            return value, problem
        if isinstance(spec, Float):
            if kind is not int and kind is not float:
                return None, (
                    "invalid_input_type",
                    "Invalid input type",
                    f"expected a FLOAT, got {_describe(value)}",
                )
            try:
                as_float = float(value)
            except OverflowError:
                return None, (
                    "value_bigger_than_max",
                    "Value bigger than max",
                    f"{value} is too large for a FLOAT",
                )
            if not math.isfinite(as_float):
                return None, ("value_not_finite", "Value is not a finite number", f"{value} is not finite")
            return as_float, _range_problem(spec, as_float)
        if isinstance(spec, String):
            if kind is not str:
                return None, (
                    "invalid_input_type",
                    "Invalid input type",
                    f"expected a STRING, got {_describe(value)}",
                )
            return value, None
        if isinstance(spec, Boolean):
            if kind is not bool:
                return None, (
                    "invalid_input_type",
                    "Invalid input type",
                    f"expected a BOOLEAN (true or false), got {_describe(value)}",
                )
            return value, None
        if isinstance(spec, Combo):
            choices = self.choices.get(id(spec))
            if choices is None:  # a folder listing is read once per pass
                choices = self.choices[id(spec)] = spec.choices()
            if kind is not str or value not in choices:
                choices = list(choices)
                listed = choices if len(choices) <= MAX_LISTED_OPTIONS else f"a list of length {len(choices)}"
                return None, ("value_not_in_list", "Value not in list", f"{_describe(value)} not in {listed}")
            return value, None
        assert not isinstance(spec, Socket)
        return value, None


def _range_problem(spec: Int | Float, value: float) -> tuple[str, str, str] | None:
    if value < spec.min:
        return (
            "value_smaller_than_min",
            "Value smaller than min",
            f"{value} is smaller than the minimum {spec.min}",
        )
    if value > spec.max:
        return (
            "value_bigger_than_max",
            "Value bigger than max",
            f"{value} is bigger than the maximum {spec.max}",
        )
    return None


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

    A prompt of the same shape as a recent clean one (see :class:`_Shapes`) reuses that one's graph
    checks and checks only its literal values; any problem sends it through the full pass.
    """
    shapes = _SHAPES.get(registry)
    if shapes is None:
        shapes = _SHAPES[registry] = _Shapes()
    key = _shape_key(prompt, outputs) if type(prompt) is dict and len(prompt) <= MAX_SHAPE_NODES else None
    if key is not None:
        skeleton = shapes.get(key)
        if skeleton is not None:
            report = _from_skeleton(prompt, registry, skeleton)
            if report is not None:
                return report
    with gc_paused():
        report = _validate(prompt, registry, outputs)
    if key is not None and report.ok and report.good_outputs:
        shapes.put(key, _skeleton(prompt, report))
    return report


MAX_SHAPE_NODES = 1_000  # larger prompts are rarely re-posted and would make large entries
KEPT_SHAPES = 256


@dataclass(frozen=True, slots=True)
class _Skeleton:
    """What a clean prompt's validation found that its shape alone decides: the planned nodes in order
    (class, the literal inputs to check, resolved links), its targets and its warnings."""

    nodes: tuple[tuple[str, type[Node], tuple[tuple[str, Input], ...], dict[str, tuple[str, int]]], ...]
    outputs: list[str]
    warnings: list[str]


class _Shapes:
    """The skeletons of recently validated clean prompts, by shape, least recently used dropped first.

    A shape is every node id with its class_type and its input names, each input either a link (its
    source and output) or a literal. Everything validation decides apart from the literal values
    follows from the shape and the registry, which only ever gains classes (a clean prompt stays
    clean), so two prompts of one shape differ only in what their literal checks say. Editor users and
    scripts post the same graph again and again with a new seed or text: those posts check only their
    literals. One cache per registry, held weakly.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the event loop and the worker thread both validate
        self._entries: collections.OrderedDict[tuple[Any, ...], _Skeleton] = collections.OrderedDict()

    def get(self, key: tuple[Any, ...]) -> _Skeleton | None:
        with self._lock:
            skeleton = self._entries.get(key)
            if skeleton is not None:
                self._entries.move_to_end(key)
            return skeleton

    def put(self, key: tuple[Any, ...], skeleton: _Skeleton) -> None:
        with self._lock:
            self._entries[key] = skeleton
            if len(self._entries) > KEPT_SHAPES:
                self._entries.popitem(last=False)


_SHAPES: weakref.WeakKeyDictionary[Registry, _Shapes] = weakref.WeakKeyDictionary()


def _shape_key(prompt: dict[str, Any], outputs: Sequence[str] | None) -> tuple[Any, ...] | None:
    """The prompt's shape (see :class:`_Shapes`), or None for a node that is not an object with a
    class_type and an object of inputs (such a prompt has errors, and errors are never kept)."""
    if outputs is not None and not all(type(o) is str for o in outputs):
        return None
    nodes: list[Any] = [None if outputs is None else tuple(outputs)]
    for node_id, node in prompt.items():
        if type(node) is not dict:
            return None
        class_type, inputs = node.get("class_type"), node.get("inputs", {})
        if type(class_type) is not str or type(inputs) is not dict:
            return None
        nodes += (
            node_id,
            class_type,
            tuple([(name, None if type(v) is not list else _list_shape(v)) for name, v in inputs.items()]),
        )
    return tuple(nodes)


def _list_shape(value: list[Any]) -> Any:
    """The shape of a list input: a link as (source, output), any other list as "list" (never clean);
    a literal's shape is None."""
    if len(value) == 2 and type(value[0]) is str and type(value[1]) in (int, str):
        return (value[0], value[1])
    return "list"


def _skeleton(prompt: dict[str, Any], report: ValidationReport) -> _Skeleton:
    nodes = []
    for node_id in report.order:
        planned = report.nodes[node_id]
        literal_specs = tuple(
            (name, spec)
            for name in prompt[node_id].get("inputs", {})
            if name in planned.literals and (spec := planned.cls.input(name)) is not None
        )
        nodes.append((node_id, planned.cls, literal_specs, dict(planned.links)))
    return _Skeleton(tuple(nodes), list(report.outputs), list(report.warnings))


def _from_skeleton(
    prompt: dict[str, Any], registry: Registry, skeleton: _Skeleton
) -> ValidationReport | None:
    """The report of a prompt shaped like ``skeleton``'s, or None when a literal is refused (the full
    pass then says why)."""
    literal_problem = _Checker(prompt, registry).literal_problem
    planned: dict[str, PlannedNode] = {}
    for node_id, cls, literal_specs, links in skeleton.nodes:
        inputs = prompt[node_id].get("inputs", {})
        literals = {}
        for name, spec in literal_specs:
            value = inputs[name]
            if type(value) is dict and is_wrapped(value):
                value = value[VALUE_KEY]
            value, problem = literal_problem(spec, value)
            if problem is not None:
                return None
            literals[name] = value
        planned[node_id] = PlannedNode(node_id, cls, literals, links.copy())
    return ValidationReport(
        outputs=skeleton.outputs.copy(),
        good_outputs=skeleton.outputs.copy(),
        order=list(planned),
        nodes=planned,
        warnings=skeleton.warnings.copy(),
    )


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
