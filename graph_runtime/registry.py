"""The set of node classes a runtime knows, and the editor's view of them (``/object_info``).

Node packs arrive through the ``guidegraph.nodes`` entry-point group; each entry point names a
:class:`~graph_runtime.api.NodePack` or a callable returning one. Everything the editor reads about
a node (``input``, ``input_order``, ``output`` ...) is derived here from the one declaration.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

from graph_runtime.api import Boolean, Combo, Float, Input, Int, Node, NodePack, Socket, String
from graph_runtime.docs import summary
from graph_runtime.folders import register_folders

log = logging.getLogger(__name__)

NODE_GROUP = "guidegraph.nodes"


class Registry:
    """Node classes by class_type (the class name). Build one per process; it is read-only after."""

    def __init__(self, nodes: Iterable[type[Node]] = ()) -> None:
        self._classes: dict[str, type[Node]] = {}
        self._packs: dict[str, str] = {}
        self.load_errors: list[str] = []
        """Packs or classes that could not be registered, one line each (also logged)."""
        for cls in nodes:
            self.add(cls)

    def add(self, cls: type[Node], pack: str = "") -> None:
        """Register one node class; a second class of the same name is refused."""
        if not (isinstance(cls, type) and issubclass(cls, Node)):
            raise TypeError(f"{cls!r} is not a Node subclass")
        if not callable(getattr(cls, "run", None)):
            raise TypeError(f"{cls.__name__} has no run(ctx, **inputs)")
        name = cls.__name__
        known = self._classes.get(name)
        if known is not None and known is not cls:
            raise ValueError(f"two node classes named {name!r}: {known.__module__} and {cls.__module__}")
        self._classes[name] = cls
        if pack:
            self._packs[name] = pack

    @classmethod
    def from_entry_points(cls, group: str = NODE_GROUP) -> Registry:
        """Load every node pack of the entry-point group and register its model folders.

        A pack that fails to import or declares a clashing class is skipped and recorded in
        ``load_errors`` (and logged), so one broken third-party pack does not take the others down.
        """
        registry = cls()
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            try:
                loaded = ep.load()
                pack = loaded() if callable(loaded) and not isinstance(loaded, NodePack) else loaded
                if not isinstance(pack, NodePack):
                    raise TypeError(f"entry point {ep.value} gave {type(pack).__name__}, not a NodePack")
            except Exception as exc:
                registry._record(f"node pack {ep.name!r} ({ep.value}) failed to load: {exc!r}")
                continue
            register_folders(pack.model_folders)
            for node_cls in pack.nodes:
                try:
                    registry.add(node_cls, pack.name)
                except (TypeError, ValueError) as exc:
                    registry._record(f"node pack {pack.name!r}: {exc}")
        return registry

    def _record(self, message: str) -> None:
        self.load_errors.append(message)
        log.warning(message)

    def get(self, class_type: str) -> type[Node] | None:
        return self._classes.get(class_type)

    @property
    def classes(self) -> dict[str, type[Node]]:
        return dict(self._classes)

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._classes

    def __len__(self) -> int:
        return len(self._classes)

    def object_info(self) -> dict[str, Any]:
        """``GET /object_info``: every class; a class whose options source fails is logged and left out."""
        out: dict[str, Any] = {}
        for name, node_cls in sorted(self._classes.items()):
            try:
                out[name] = node_info(node_cls, self.pack(name))
            except Exception as exc:
                log.warning("object_info for %s failed: %r", name, exc)
        return out

    def object_info_one(self, name: str) -> dict[str, Any]:
        """``GET /object_info/{name}``: ``{name: entry}``, or ``{}`` for an unknown class (as ComfyUI)."""
        node_cls = self._classes.get(name)
        return {} if node_cls is None else {name: node_info(node_cls, self.pack(name))}

    def pack(self, class_type: str) -> str:
        """The node pack that registered ``class_type`` ('' when it was added directly)."""
        return self._packs.get(class_type, "")


def editor_order(cls: type[Node]) -> list[Input]:
    """Inputs in the order the editor lays out widgets: required ones first, then optional ones."""
    return [s for s in cls.inputs if not s.optional] + [s for s in cls.inputs if s.optional]


def input_spec(spec: Input) -> list[Any]:
    """One input as ``[TYPE, {options}]``; a combo's TYPE is its list of choices (the legacy form)."""
    opts: dict[str, Any] = {}
    if spec.tooltip:
        opts["tooltip"] = spec.tooltip
    if isinstance(spec, Int):
        opts.update(default=spec.default, min=spec.min, max=spec.max, step=spec.step)
        if spec.control_after_generate:
            opts["control_after_generate"] = True
    elif isinstance(spec, Float):
        opts.update(default=spec.default, min=spec.min, max=spec.max, step=spec.step, round=spec.round)
    elif isinstance(spec, String):
        opts.update(default=spec.default, multiline=spec.multiline)
        if spec.placeholder:
            opts["placeholder"] = spec.placeholder
    elif isinstance(spec, Boolean):
        opts.update(default=spec.default, label_on=spec.label_on, label_off=spec.label_off)
    elif isinstance(spec, Combo):
        choices = list(spec.choices())
        if spec.default is not None:
            opts["default"] = spec.default
        if spec.upload:
            opts[f"{spec.upload}_upload"] = True
        return [choices, opts]
    elif isinstance(spec, Socket):
        return [spec.type, opts]
    return [spec.type_name, opts]


def node_info(cls: type[Node], pack: str = "") -> dict[str, Any]:
    """The ``/object_info`` entry of one class, with every key the editor reads.

    ``python_module`` is ``custom_nodes.<pack>`` for a class from a node pack: the editor then badges
    it with the pack's name (not as a ComfyUI core node) and asks the server for its help page at
    ``/extensions/<pack>/docs/<class>.md``. ``description`` is the plain summary of the docstring.
    """
    required = [s for s in cls.inputs if not s.optional]
    optional = [s for s in cls.inputs if s.optional]
    return {
        "input": {
            "required": {s.name: input_spec(s) for s in required},
            "optional": {s.name: input_spec(s) for s in optional},
            "hidden": {},
        },
        "input_order": {"required": [s.name for s in required], "optional": [s.name for s in optional]},
        "output": [o.type for o in cls.outputs],
        "output_is_list": [o.is_list for o in cls.outputs],
        "output_name": [o.name for o in cls.outputs],
        "output_tooltips": [o.tooltip or None for o in cls.outputs],
        "name": cls.__name__,
        "display_name": cls.display_name or cls.__name__,
        "description": summary(cls.description),
        "python_module": f"custom_nodes.{pack}" if pack else cls.__module__,
        "category": cls.category,
        "output_node": bool(cls.output_node),
        "deprecated": bool(cls.deprecated),
        "experimental": bool(cls.experimental),
        "api_node": False,
    }
