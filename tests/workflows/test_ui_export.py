"""The API → editor exporter on its own: links, seed controls, linked widgets, ids, errors, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from graph_runtime import Registry
from graph_runtime.api import Context, Float, Int, Node, Output, Socket
from graph_runtime.cli import main
from graph_runtime.ui_export import ExportError, api_to_ui
from graph_runtime.workflow import to_api_prompt
from tests.workflows.conftest import WORKFLOWS, load_api


class Number(Node):
    """A float source, to feed a widget by link."""

    inputs = (Float("value", default=1.5),)
    outputs = (Output("value", "FLOAT"),)

    @staticmethod
    def run(ctx: Context, value: float) -> tuple[float]:
        return (value,)


class Seeded(Node):
    """A seed widget with the editor's control, a socket, and a float widget that may be linked."""

    inputs = (
        Socket(name="x", type="FLOAT", optional=True),
        Int("seed", default=0, control_after_generate=True),
        Float("scale", default=2.0),
    )
    outputs = (Output("y", "FLOAT"),)

    @staticmethod
    def run(ctx: Context, seed: int, scale: float, x: float | None = None) -> tuple[float]:
        return (scale,)


@pytest.fixture
def small() -> Registry:
    return Registry([Number, Seeded])


def test_a_seed_widget_is_followed_by_its_fixed_control_and_converts_back(small: Registry) -> None:
    prompt: dict[str, Any] = {"1": {"class_type": "Seeded", "inputs": {"seed": 42, "scale": 3.0}}}
    ui = api_to_ui(prompt, small)
    assert ui["nodes"][0]["widgets_values"] == [42, "fixed", 3.0]
    assert to_api_prompt(ui, small) == prompt | {"1": prompt["1"] | {"_meta": {"title": "Seeded"}}}


def test_a_linked_widget_becomes_an_input_and_links_resolve_output_names(small: Registry) -> None:
    prompt: dict[str, Any] = {
        "1": {"class_type": "Number", "inputs": {"value": 0.5}, "_meta": {"title": "half"}},
        "2": {
            "class_type": "Seeded",
            "inputs": {"x": ["1", "value"], "seed": 7, "scale": ["1", 0]},
            "_meta": {"title": "use it"},
        },
    }
    ui = api_to_ui(prompt, small)
    seeded = next(n for n in ui["nodes"] if n["id"] == 2)
    assert [(s["name"], s.get("widget")) for s in seeded["inputs"]] == [
        ("scale", {"name": "scale"}),  # required inputs first, as the editor orders them
        ("x", None),
    ]
    assert ui["links"] == [[1, 1, 0, 2, 1, "FLOAT"], [2, 1, 0, 2, 0, "FLOAT"]]
    assert next(n for n in ui["nodes"] if n["id"] == 1)["outputs"][0]["links"] == [1, 2]
    back = to_api_prompt(ui, small)
    assert back["2"]["inputs"] == {"x": ["1", 0], "seed": 7, "scale": ["1", 0]}


def test_nodes_are_laid_out_in_columns_by_depth(small: Registry) -> None:
    prompt: dict[str, Any] = {
        "1": {"class_type": "Number", "inputs": {"value": 1.0}},
        "2": {"class_type": "Seeded", "inputs": {"x": ["1", 0], "seed": 0, "scale": 1.0}},
        "3": {"class_type": "Seeded", "inputs": {"x": ["2", 0], "seed": 0, "scale": 1.0}},
        "4": {"class_type": "Number", "inputs": {"value": 2.0}},
    }
    pos = {n["id"]: n["pos"] for n in api_to_ui(prompt, small)["nodes"]}
    assert pos[1][0] == pos[4][0] < pos[2][0] < pos[3][0]
    assert pos[1][1] != pos[4][1]


def test_non_numeric_ids_are_renumbered_and_bad_prompts_are_refused(small: Registry) -> None:
    prompt: dict[str, Any] = {
        "src": {"class_type": "Number", "inputs": {"value": 1.0}},
        "dst": {"class_type": "Seeded", "inputs": {"x": ["src", 0], "seed": 1, "scale": 1.0}},
    }
    ui = api_to_ui(prompt, small)
    assert sorted(n["id"] for n in ui["nodes"]) == [1, 2]
    with pytest.raises(ExportError, match="unknown node type 'Nope'"):
        api_to_ui({"1": {"class_type": "Nope", "inputs": {}}}, small)
    with pytest.raises(ExportError, match="cycle"):
        api_to_ui(
            {
                "1": {"class_type": "Seeded", "inputs": {"x": ["2", 0], "seed": 0, "scale": 1.0}},
                "2": {"class_type": "Seeded", "inputs": {"x": ["1", 0], "seed": 0, "scale": 1.0}},
            },
            small,
        )


def test_the_convert_command_goes_both_ways(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ui_file, api_file = tmp_path / "cfg.ui.json", tmp_path / "cfg.api.json"
    assert main(["convert", str(WORKFLOWS / "cfg.api.json"), str(ui_file)]) == 0
    assert json.loads(ui_file.read_text())["nodes"]
    assert main(["convert", str(ui_file), str(api_file)]) == 0
    assert json.loads(api_file.read_text()) == load_api("cfg")
    assert "api format" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "missing.json"), str(api_file)]) == 2
