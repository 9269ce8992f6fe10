"""Workflows in, API prompts out: format detection, file loading, and building prompts in code.

:func:`to_api_prompt` accepts the API format, the editor's format (converted by input name, see
:mod:`graph_runtime.ui_format`) and a ``POST /prompt`` body (``{"prompt": ...}``); a wrong shape
raises :class:`WorkflowFormatError` with a one-line message, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from graph_runtime.links import wrap
from graph_runtime.registry import Registry
from graph_runtime.schema import ApiPrompt, UiWorkflow
from graph_runtime.ui_format import ConversionError, ui_to_api

SHAPE_HINT = (
    "a workflow is a JSON object: API format {node_id: {class_type, inputs}} or the editor's {nodes, links}"
)


class WorkflowFormatError(ValueError):
    """The data is not a workflow in either format; the message is one line."""


def _first_problem(exc: ValidationError, prefix: str) -> str:
    err = exc.errors()[0]
    loc = ".".join(
        str(part)
        for part in err["loc"]
        if part not in ("tuple[int, union[int,str], int, union[int,str], int, any]",)
    )
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return f"{prefix}{loc}: {err['msg']}{more}"


def is_ui_format(data: Any) -> bool:
    """True for the editor's graph (a ``nodes`` list), False otherwise."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def to_api_prompt(data: Any, registry: Registry) -> dict[str, dict[str, Any]]:
    """An API-format prompt from ``data``: API format, editor format (auto-detected) or a JSON string."""
    if isinstance(data, (str, bytes)):
        data = parse_json(data)
    if not isinstance(data, dict):
        raise WorkflowFormatError(f"{SHAPE_HINT}; got {type(data).__name__}")
    if isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
        data = data["prompt"]  # a POST /prompt body
    if is_ui_format(data):
        try:
            workflow = UiWorkflow.model_validate(data)
        except ValidationError as exc:
            raise WorkflowFormatError(_first_problem(exc, "editor workflow: ")) from None
        try:
            return ui_to_api(workflow, registry)
        except ConversionError as exc:
            raise WorkflowFormatError(f"editor workflow: {exc}") from None
    if "nodes" in data and "links" in data:
        raise WorkflowFormatError(
            f"editor workflow: nodes must be a list, got {type(data['nodes']).__name__}"
        )
    if not all(_plain_api_node(node) for node in data.values()):  # pydantic decides, and says why
        try:
            ApiPrompt.model_validate(data)
        except ValidationError as exc:
            raise WorkflowFormatError(_first_problem(exc, "node ")) from None
    return {str(node_id): _api_node(node) for node_id, node in data.items()}


def _api_node(node: dict[str, Any]) -> dict[str, Any]:
    """The node's class_type, a copy of its inputs and its ``_meta`` when present (nothing else)."""
    out = {"class_type": node["class_type"], "inputs": dict(node.get("inputs", {}))}
    if "_meta" in node:
        out["_meta"] = node["_meta"]
    return out


def _plain_api_node(node: Any) -> bool:
    """A node ``ApiPrompt`` accepts, seen without pydantic (a quarter of a small POST's checking)."""
    return (
        type(node) is dict
        and type(node.get("class_type")) is str
        and type(node.get("inputs", {})) is dict
        and (node.get("_meta") is None or type(node["_meta"]) is dict)
        and "meta" not in node
    )


def parse_json(text: str | bytes, source: str = "workflow") -> Any:
    """Parse JSON or raise :class:`WorkflowFormatError` naming the line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowFormatError(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except UnicodeDecodeError as exc:
        raise WorkflowFormatError(f"{source} is not UTF-8 text: {exc.reason}") from None
    except RecursionError:
        raise WorkflowFormatError(f"{source} is nested too deeply to be a workflow") from None


def read_workflow(path: str | Path) -> Any:
    """The JSON data of a workflow file; a PNG yields its embedded ``prompt`` (else ``workflow``) chunk."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WorkflowFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw.startswith(b"\x89PNG"):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                text = image.info.get("prompt") or image.info.get("workflow")
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise WorkflowFormatError(f"{path}: not a readable PNG ({exc})") from None
        if not isinstance(text, str):
            raise WorkflowFormatError(f"{path}: PNG has no embedded prompt or workflow")
        return parse_json(text, str(path))
    return parse_json(raw, str(path))


def load_workflow(path: str | Path, registry: Registry) -> dict[str, dict[str, Any]]:
    """:func:`to_api_prompt` of a workflow file (JSON in either format, or a PNG with metadata)."""
    try:
        return to_api_prompt(read_workflow(path), registry)
    except WorkflowFormatError as exc:
        message = str(exc)
        raise WorkflowFormatError(
            message if message.startswith(str(path)) else f"{path}: {message}"
        ) from None


class OutputRef(list[Any]):
    """A link ``[node_id, output]`` made by indexing a :class:`NodeRef` (a plain JSON list on the wire)."""


class NodeRef:
    """A node added to a :class:`WorkflowBuilder`; index it to link an output: ``ref[0]``, ``ref["x"]``."""

    __slots__ = ("id",)

    def __init__(self, node_id: str) -> None:
        self.id = node_id

    def __getitem__(self, output: int | str) -> OutputRef:
        return OutputRef([self.id, output])

    def __repr__(self) -> str:
        return f"NodeRef({self.id!r})"


class WorkflowBuilder:
    """Build an API prompt in code.

    >>> wb = WorkflowBuilder()
    >>> a = wb.add("Number", value=2.0)
    >>> wb.add("Show", x=a[0]) and sorted(wb.prompt)
    ['1', '2']

    A :class:`NodeRef` passed as a value links its first output; a list ``[node_id, output]`` is a
    link (as on the wire); other lists and all tuples are literals (wrapped as ``__value__``).
    Given a registry, ``add`` refuses unknown node types and input names at once and fills widget
    inputs left out with their declared defaults.
    """

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry
        self.prompt: dict[str, dict[str, Any]] = {}
        self._next = 1

    def add(
        self, class_type: str, /, *, node_id: str | None = None, title: str | None = None, **inputs: Any
    ) -> NodeRef:
        """Add a node; returns its reference for linking."""
        if node_id is None:
            while str(self._next) in self.prompt:
                self._next += 1
            node_id = str(self._next)
        if node_id in self.prompt:
            raise ValueError(f"node id {node_id!r} is already used")
        values = {name: self._value(v) for name, v in inputs.items()}
        if self.registry is not None:
            cls = self.registry.get(class_type)
            if cls is None:
                raise ValueError(f"unknown node type {class_type!r}")
            unknown = [name for name in values if cls.input(name) is None]
            if unknown:
                raise ValueError(
                    f"{class_type} has no input {unknown[0]!r}; inputs: {[s.name for s in cls.inputs]}"
                )
            for spec in cls.inputs:
                if spec.name not in values and spec.is_widget and spec.has_default:
                    values[spec.name] = wrap(getattr(spec, "default", None))
        node: dict[str, Any] = {"class_type": class_type, "inputs": values}
        if title is not None:
            node["_meta"] = {"title": title}
        self.prompt[node_id] = node
        return NodeRef(node_id)

    def set(self, node: NodeRef | str, name: str, value: Any) -> None:
        """Set (or re-link) one input of a node already added."""
        node_id = node.id if isinstance(node, NodeRef) else node
        self.prompt[node_id]["inputs"][name] = self._value(value)

    @staticmethod
    def _value(value: Any) -> Any:
        if isinstance(value, NodeRef):
            return [value.id, 0]
        if isinstance(value, OutputRef):
            return list(value)
        if type(value) is list and len(value) == 2 and type(value[0]) is str:
            return value  # a link, as on the wire; a tuple is always a literal
        return wrap(value)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.prompt, indent=indent)
