"""pydantic models of the two workflow formats: the API prompt (wire format) and the editor's graph.

They check shape only (what is a node, what is a link); meaning is checked by
:mod:`graph_runtime.validation` against the node declarations. ``workflow_json_schema`` is what
``guidegraph schema`` prints.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel


class ApiNode(BaseModel):
    """One node of an API prompt. ``_meta`` (the editor's title) is carried but never read."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    class_type: str = Field(description="The registered node type (the class name).")
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description='Input name -> literal, link [source_id, output_index | "output_name"], '
        'or {"__value__": [...]} for a literal list.',
    )
    meta: dict[str, Any] | None = Field(
        default=None, alias="_meta", description="Editor-only data, e.g. title."
    )


class ApiPrompt(RootModel[dict[str, ApiNode]]):
    """ComfyUI's API format: node id -> node."""


class UiWidgetRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class UiInput(BaseModel):
    """An input slot of an editor node; ``widget`` is set when a widget was turned into an input."""

    model_config = ConfigDict(extra="allow")
    name: str
    type: Any = None
    link: int | None = None
    widget: UiWidgetRef | None = None


class UiOutput(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = ""
    type: Any = None
    links: list[int] | None = None


class UiNode(BaseModel):
    """A node of the editor's graph. mode: 0 always, 2 never (muted), 4 bypass."""

    model_config = ConfigDict(extra="allow")
    id: int | str
    type: str
    mode: int = 0
    title: str | None = None
    inputs: list[UiInput] = Field(default_factory=list)
    outputs: list[UiOutput] = Field(default_factory=list)
    widgets_values: list[Any] | dict[str, Any] | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class UiLinkObject(BaseModel):
    """A link as an object (schema version 1 and subgraph definitions)."""

    model_config = ConfigDict(extra="allow")
    id: int
    origin_id: int | str
    origin_slot: int
    target_id: int | str
    target_slot: int
    type: Any = None


UiLinkArray = tuple[int, int | str, int, int | str, int, Any]
"""A link as the 0.4 array ``[id, origin_id, origin_slot, target_id, target_slot, type]``."""


class UiSubgraphSlot(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    type: Any = None
    linkIds: list[int] = Field(default_factory=list)  # the editor's spelling


class UiSubgraph(BaseModel):
    """A subgraph definition; instances are nodes whose ``type`` is this ``id``."""

    model_config = ConfigDict(extra="allow")
    id: str
    name: str = ""
    nodes: list[UiNode] = Field(default_factory=list)
    links: list[UiLinkObject | UiLinkArray] = Field(default_factory=list)
    inputs: list[UiSubgraphSlot] = Field(default_factory=list)
    outputs: list[UiSubgraphSlot] = Field(default_factory=list)


class UiDefinitions(BaseModel):
    model_config = ConfigDict(extra="allow")
    subgraphs: list[UiSubgraph] = Field(default_factory=list)


class UiWorkflow(BaseModel):
    """The editor's workflow (schema 0.4 or 1): nodes, links, and optional subgraph definitions."""

    model_config = ConfigDict(extra="allow")
    nodes: list[UiNode]
    links: list[UiLinkObject | UiLinkArray] = Field(default_factory=list)
    version: float | None = None
    definitions: UiDefinitions | None = None


class Workflow(RootModel[ApiPrompt | UiWorkflow]):
    """Either format; the runtime accepts both everywhere a workflow is expected."""


def workflow_json_schema(kind: str = "any") -> dict[str, Any]:
    """The JSON Schema of the API format (``api``), the editor format (``ui``) or either (``any``)."""
    model: Any = {"api": ApiPrompt, "ui": UiWorkflow, "any": Workflow}[kind]
    schema = model.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema.setdefault("title", f"guidegraph {kind} workflow")
    return schema
