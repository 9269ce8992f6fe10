"""Workflow formats: the API format, the editor's format converted by name, files, and the builder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from graph_runtime import (
    Registry,
    WorkflowBuilder,
    WorkflowFormatError,
    load_workflow,
    to_api_prompt,
    validate,
)
from graph_runtime.schema import workflow_json_schema


def _node(
    node_id: int, kind: str, widgets: Any = None, inputs: Any = (), outputs: Any = (), mode: int = 0
) -> dict:
    return {
        "id": node_id,
        "type": kind,
        "mode": mode,
        "pos": [0, 0],
        "size": [100, 50],
        "inputs": [dict(i) for i in inputs],
        "outputs": [dict(o) for o in outputs],
        "widgets_values": widgets if widgets is not None else [],
        "title": f"My {kind}",
    }


def _in(name: str, kind: str, link: int | None, widget: bool = False) -> dict[str, Any]:
    return {"name": name, "type": kind, "link": link} | ({"widget": {"name": name}} if widget else {})


def _out(name: str, kind: str, *links: int) -> dict[str, Any]:
    return {"name": name, "type": kind, "links": list(links)}


def _ui(nodes: list[dict], links: list[list[Any]], **extra: Any) -> dict[str, Any]:
    return {"version": 0.4, "last_node_id": 99, "last_link_id": 99, "nodes": nodes, "links": links, **extra}


def test_api_format_passes_through_with_meta(registry: Registry) -> None:
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 2.0}, "_meta": {"title": "n"}, "extra": 1}}
    assert to_api_prompt(prompt, registry) == {
        "1": {"class_type": "Number", "inputs": {"value": 2.0}, "_meta": {"title": "n"}}
    }


def test_a_post_prompt_body_is_unwrapped(registry: Registry) -> None:
    body = {"client_id": "c", "prompt": {"1": {"class_type": "Number", "inputs": {}}}}
    assert list(to_api_prompt(body, registry)) == ["1"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "a workflow is a JSON object"),
        ({"1": 3}, "node 1: Input should be a valid dictionary"),
        ({"1": {"inputs": {}}}, "node 1.class_type: Field required"),
        ({"1": {"class_type": "A", "inputs": [1]}}, "node 1.inputs: Input should be a valid dictionary"),
        ({"nodes": [{"id": 1}], "links": []}, "editor workflow: nodes.0.type: Field required"),
        ({"nodes": {}, "links": []}, "editor workflow: nodes must be a list"),
        ("{not json", "workflow is not valid JSON: Expecting property name"),
    ],
)
def test_wrong_shapes_get_a_one_line_error(registry: Registry, data: Any, message: str) -> None:
    with pytest.raises(WorkflowFormatError) as info:
        to_api_prompt(data, registry)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_load_workflow_names_the_file_on_bad_json(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"1": {"class_type": "Number",\n "inputs": {}')
    with pytest.raises(WorkflowFormatError, match=r"broken.json is not valid JSON: .* line 2 column"):
        load_workflow(path, registry)
    with pytest.raises(WorkflowFormatError, match="cannot read"):
        load_workflow(tmp_path / "missing.json", registry)


def test_load_workflow_reads_the_prompt_embedded_in_a_png(registry: Registry, tmp_path: Path) -> None:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps({"1": {"class_type": "Number", "inputs": {"value": 3.0}}}))
    Image.new("RGB", (4, 4)).save(tmp_path / "out.png", pnginfo=info)
    assert load_workflow(tmp_path / "out.png", registry)["1"]["inputs"] == {"value": 3.0}


def test_ui_widgets_map_by_name_skipping_control_after_generate(registry: Registry) -> None:
    opts = _node(
        2,
        "Options",
        [5, "randomize", "hello", True, "b", 0.25],
        inputs=[_in("x", "FLOAT", 1)],
        outputs=[_out("summary", "STRING", 2)],
    )
    nodes = [
        _node(1, "Number", [1.5], outputs=[_out("value", "FLOAT", 1)]),
        opts,
        _node(3, "Show", inputs=[_in("value", "*", 2)]),
    ]
    prompt = to_api_prompt(_ui(nodes, [[1, 1, 0, 2, 2, "FLOAT"], [2, 2, 0, 3, 0, "STRING"]]), registry)
    assert prompt["2"] == {
        "class_type": "Options",
        "inputs": {"seed": 5, "text": "hello", "flag": True, "mode": "b", "weight": 0.25, "x": ["1", 0]},
        "_meta": {"title": "My Options"},
    }
    assert prompt["3"]["inputs"] == {"value": ["2", 0]}
    assert validate(prompt, registry).ok


def test_ui_widget_converted_to_input_takes_the_link(registry: Registry) -> None:
    nodes = [
        _node(1, "Number", [0.5], outputs=[_out("value", "FLOAT", 1, 2)]),
        _node(
            2,
            "Scale",
            [9.0],
            inputs=[
                _in("x", "FLOAT", 1),
                _in("factor", "FLOAT", 2, widget=True),
            ],
        ),
    ]
    prompt = to_api_prompt(_ui(nodes, [[1, 1, 0, 2, 0, "FLOAT"], [2, 1, 0, 2, 1, "FLOAT"]]), registry)
    assert prompt["2"]["inputs"] == {"x": ["1", 0], "factor": ["1", 0]}


def test_ui_widgets_values_as_a_dict_map_by_name(registry: Registry) -> None:
    nodes = [_node(1, "Number", {"value": 4.0})]
    assert to_api_prompt(_ui(nodes, []), registry)["1"]["inputs"] == {"value": 4.0}


def test_ui_muted_nodes_are_dropped_and_bypassed_nodes_wired_through(registry: Registry) -> None:
    nodes = [
        _node(1, "Number", [2.0], outputs=[_out("value", "FLOAT", 1)]),
        _node(2, "Scale", [3.0], mode=4, inputs=[_in("x", "FLOAT", 1)], outputs=[_out("scaled", "FLOAT", 2)]),
        _node(3, "Keep", inputs=[_in("value", "*", 2)]),
        _node(4, "Number", [5.0], mode=2, outputs=[_out("value", "FLOAT", 3)]),
        _node(5, "Add", inputs=[_in("a", "FLOAT", None), _in("b", "FLOAT", 3)]),
    ]
    links = [[1, 1, 0, 2, 0, "FLOAT"], [2, 2, 0, 3, 0, "FLOAT"], [3, 4, 0, 5, 1, "FLOAT"]]
    prompt = to_api_prompt(_ui(nodes, links), registry)
    assert sorted(prompt) == ["1", "3", "5"]
    assert prompt["3"]["inputs"] == {"value": ["1", 0]}
    assert prompt["5"]["inputs"] == {}  # its only link came from a muted node


def test_ui_reroutes_primitives_and_notes_are_virtual(registry: Registry) -> None:
    nodes = [
        _node(1, "Number", [2.0], outputs=[_out("value", "FLOAT", 1)]),
        _node(2, "Reroute", inputs=[_in("", "*", 1)], outputs=[_out("", "FLOAT", 2)]),
        _node(3, "Reroute", inputs=[_in("", "*", 2)], outputs=[_out("", "FLOAT", 3)]),
        _node(4, "PrimitiveNode", [7.5, "fixed"], outputs=[_out("FLOAT", "FLOAT", 4)]),
        _node(
            5,
            "Scale",
            [1.0],
            inputs=[
                _in("x", "FLOAT", 3),
                _in("factor", "FLOAT", 4, widget=True),
            ],
        ),
        _node(6, "Note", ["some text"]),
        _node(7, "MarkdownNote", ["# text"]),
    ]
    links = [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 3, 0, "*"], [3, 3, 0, 5, 0, "FLOAT"], [4, 4, 0, 5, 1, "FLOAT"]]
    prompt = to_api_prompt(_ui(nodes, links), registry)
    assert sorted(prompt) == ["1", "5"]
    assert prompt["5"]["inputs"] == {"x": ["1", 0], "factor": 7.5}


def test_ui_link_objects_of_schema_version_1_are_accepted(registry: Registry) -> None:
    nodes = [
        _node(1, "Number", [2.0], outputs=[_out("value", "FLOAT", 1)]),
        _node(2, "Keep", inputs=[_in("value", "*", 1)]),
    ]
    link = {"id": 1, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "FLOAT"}
    assert to_api_prompt(_ui(nodes, [link], version=1), registry)["2"]["inputs"] == {"value": ["1", 0]}


def test_ui_unknown_node_types_reach_validation(registry: Registry) -> None:
    prompt = to_api_prompt(_ui([_node(1, "FancyCustomNode", [1, 2])], []), registry)
    assert prompt["1"]["class_type"] == "FancyCustomNode"
    assert validate(prompt, registry).node_errors["1"]["errors"][0]["type"] == "missing_node_type"


def test_ui_link_from_a_missing_node_is_a_clear_error(registry: Registry) -> None:
    nodes = [_node(2, "Keep", inputs=[_in("value", "*", 1)])]
    with pytest.raises(WorkflowFormatError, match="node 2: link 1 comes from node 9, which does not exist"):
        to_api_prompt(_ui(nodes, [[1, 9, 0, 2, 0, "FLOAT"]]), registry)


def _subgraph_workflow() -> dict[str, Any]:
    """Outer: Number(1) -> [subgraph instance 5: x -> Scale(10, factor 4) -> out] -> Keep(2)."""
    inner = {
        "id": "sg-1",
        "name": "Times four",
        "inputs": [{"id": "i0", "name": "x", "type": "FLOAT", "linkIds": [20]}],
        "outputs": [{"id": "o0", "name": "out", "type": "FLOAT", "linkIds": [21]}],
        "nodes": [
            _node(
                10,
                "Scale",
                [4.0],
                inputs=[_in("x", "FLOAT", 20)],
                outputs=[_out("scaled", "FLOAT", 21)],
            ),
        ],
        "links": [
            {
                "id": 20,
                "origin_id": -10,
                "origin_slot": 0,
                "target_id": 10,
                "target_slot": 0,
                "type": "FLOAT",
            },
            {
                "id": 21,
                "origin_id": 10,
                "origin_slot": 0,
                "target_id": -20,
                "target_slot": 0,
                "type": "FLOAT",
            },
        ],
    }
    nodes = [
        _node(1, "Number", [3.0], outputs=[_out("value", "FLOAT", 1)]),
        _node(5, "sg-1", inputs=[_in("x", "FLOAT", 1)], outputs=[_out("out", "FLOAT", 2)]),
        _node(2, "Keep", inputs=[_in("value", "*", 2)]),
    ]
    links = [[1, 1, 0, 5, 0, "FLOAT"], [2, 5, 0, 2, 0, "FLOAT"]]
    return _ui(nodes, links, definitions={"subgraphs": [inner]})


def test_ui_subgraphs_are_flattened_with_compound_ids(registry: Registry) -> None:
    prompt = to_api_prompt(_subgraph_workflow(), registry)
    assert sorted(prompt) == ["1", "2", "5:10"]
    assert prompt["5:10"]["inputs"] == {"factor": 4.0, "x": ["1", 0]}
    assert prompt["2"]["inputs"] == {"value": ["5:10", 0]}
    from graph_runtime import Executor

    assert Executor(registry, device="cpu").run(prompt).outputs["2"] == (12.0,)


def test_builder_fills_defaults_and_refuses_unknown_names(registry: Registry) -> None:
    wb = WorkflowBuilder(registry)
    number = wb.add("Number")
    wb.add("Scale", x=number, title="double")
    assert wb.prompt["2"] == {
        "class_type": "Scale",
        "inputs": {"x": ["1", 0], "factor": 2.0},
        "_meta": {"title": "double"},
    }
    with pytest.raises(ValueError, match="unknown node type 'Nope'"):
        wb.add("Nope")
    with pytest.raises(ValueError, match="Scale has no input 'fact'"):
        wb.add("Scale", fact=1.0)
    with pytest.raises(ValueError, match="already used"):
        wb.add("Number", node_id="1")


def test_builder_wraps_literal_lists_and_links_by_output_name() -> None:
    wb = WorkflowBuilder()
    a = wb.add("Anything", values=(1, 2, 3))
    wb.add("Other", source=a["image"], pair=["x", 0])
    assert wb.prompt["1"]["inputs"] == {"values": {"__value__": [1, 2, 3]}}
    assert wb.prompt["2"]["inputs"] == {"source": ["1", "image"], "pair": ["x", 0]}
    assert json.loads(wb.to_json()) == wb.prompt


def test_json_schema_covers_both_formats() -> None:
    schema = workflow_json_schema()
    assert {"ApiNode", "UiWorkflow", "UiNode"} <= set(schema["$defs"])
    assert workflow_json_schema("api")["additionalProperties"]["$ref"].endswith("ApiNode")


def test_widget_values_of_an_unknown_node_type_are_reported_not_dropped_silently(caplog: Any) -> None:
    import logging

    from graph_runtime.registry import Registry
    from graph_runtime.workflow import to_api_prompt

    ui = {
        "nodes": [{"id": 3, "type": "NoSuchNode", "inputs": [], "outputs": [], "widgets_values": [1, "a"]}],
        "links": [],
        "version": 0.4,
    }
    with caplog.at_level(logging.WARNING):
        prompt = to_api_prompt(ui, Registry([]))
    assert prompt["3"]["class_type"] == "NoSuchNode"
    assert any("node 3: unknown node type 'NoSuchNode'" in r.getMessage() for r in caplog.records)
