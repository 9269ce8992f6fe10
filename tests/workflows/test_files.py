"""Every shipped workflow is present in both formats, validates, and its two formats agree exactly."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph_runtime import Registry
from graph_runtime.api import Boolean, Float, Int, String
from graph_runtime.ui_export import api_to_ui
from graph_runtime.validation import validate
from graph_runtime.workflow import to_api_prompt
from tests.workflows.conftest import NAMES, WORKFLOWS, load_api, load_ui, nodes_of


def test_the_folder_ships_exactly_the_documented_workflows() -> None:
    api = sorted(p.name.removesuffix(".api.json") for p in WORKFLOWS.glob("*.api.json"))
    ui = sorted(p.name.removesuffix(".ui.json") for p in WORKFLOWS.glob("*.ui.json"))
    assert api == ui == sorted(NAMES)
    for name in NAMES:
        assert (WORKFLOWS / f"{name}.jpg").is_file(), f"{name} has no editor thumbnail"


@pytest.mark.parametrize("name", NAMES)
def test_each_workflow_validates_against_the_shipped_models(name: str, registry: Registry) -> None:
    report = validate(load_api(name), registry)
    assert report.ok, report.messages()


@pytest.mark.parametrize("name", NAMES)
def test_each_workflow_saves_under_its_own_name_and_titles_every_node(name: str) -> None:
    prompt = load_api(name)
    saves = nodes_of(prompt, "SaveImage")
    assert [prompt[s]["inputs"]["filename_prefix"] for s in saves] == [name]
    assert all(node.get("_meta", {}).get("title") for node in prompt.values())


@pytest.mark.parametrize("name", NAMES)
def test_the_editor_file_is_the_export_of_the_api_file(name: str, registry: Registry) -> None:
    """Regenerate with ``guidegraph convert workflows/NAME.api.json workflows/NAME.ui.json``."""
    assert load_ui(name) == api_to_ui(load_api(name), registry)


@pytest.mark.parametrize("name", NAMES)
def test_the_editor_file_converts_back_to_exactly_the_api_prompt(name: str, registry: Registry) -> None:
    ui = load_ui(name)
    assert ui["version"] == 0.4
    assert to_api_prompt(ui, registry) == load_api(name)


def _widget_value(spec: Any) -> st.SearchStrategy[Any]:
    if isinstance(spec, Int):
        return st.integers(min_value=max(spec.min, -(2**40)), max_value=min(spec.max, 2**40))
    if isinstance(spec, Float):
        return st.floats(min_value=max(spec.min, -1e6), max_value=min(spec.max, 1e6), allow_nan=False)
    if isinstance(spec, Boolean):
        return st.booleans()
    if isinstance(spec, String):
        return st.text(max_size=20)
    return st.sampled_from(spec.choices() or ["x"])


@st.composite
def edited_workflows(draw: st.DrawFn, registry: Registry) -> dict[str, Any]:
    """A shipped workflow with every widget of some of its nodes set to random values."""
    prompt = load_api(draw(st.sampled_from(NAMES)))
    for node_id in draw(st.lists(st.sampled_from(sorted(prompt)), max_size=6, unique=True)):
        node = prompt[node_id]
        cls = registry.get(node["class_type"])
        assert cls is not None
        for spec in cls.inputs:
            if spec.is_widget:
                node["inputs"][spec.name] = draw(_widget_value(spec))
        node["_meta"]["title"] = draw(st.text(min_size=1, max_size=30))
    return prompt


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_api_to_editor_and_back_is_the_identity_on_edited_workflows(
    data: st.DataObject, registry: Registry
) -> None:
    prompt = data.draw(edited_workflows(registry))
    assert to_api_prompt(api_to_ui(prompt, registry), registry) == prompt


def test_the_readme_documents_every_workflow_with_its_run_time() -> None:
    readme = (WORKFLOWS / "README.md").read_text(encoding="utf-8")
    for name in NAMES:
        assert f"`{name}`" in readme, f"workflows/README.md does not mention {name}"
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \|.*?\| ([\d.]+) s \|", readme, re.M)}
    assert sorted(rows) == sorted(NAMES), "the run-time table lists every workflow once"
    assert all(float(seconds) < 60 for seconds in rows.values())
