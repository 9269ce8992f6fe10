"""Validation collects every problem, in ComfyUI's shape, and never coerces."""

from __future__ import annotations

from typing import Any

import pytest

from graph_runtime import Registry, validate
from graph_runtime.api import Context, Int, Node


def _errors(report: Any, node_id: str) -> list[str]:
    return [e["type"] for e in report.node_errors.get(node_id, {}).get("errors", [])]


def _chain_to_show(node_inputs: dict[str, Any], class_type: str = "Scale") -> dict[str, Any]:
    return {
        "1": {"class_type": "Number", "inputs": {"value": 1.0}},
        "2": {"class_type": class_type, "inputs": node_inputs},
        "9": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }


def test_a_valid_prompt_is_ok_and_planned_in_topological_order(registry: Registry) -> None:
    report = validate(_chain_to_show({"x": ["1", 0], "factor": 3.0}), registry)
    assert report.ok and report.runnable and report.error is None
    assert report.good_outputs == ["9"]
    assert report.order == ["1", "2", "9"]


def test_a_reposted_graph_checks_only_its_literals(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second post of a clean graph's shape skips the graph checks; a refused literal still gets
    the full pass and its ComfyUI-shaped error."""
    validate(_chain_to_show({"x": ["1", 0], "factor": 3.0}), registry)
    import graph_runtime.validation as validation

    full_passes = []
    real = validation._validate
    monkeypatch.setattr(validation, "_validate", lambda *a: full_passes.append(1) or real(*a))
    again = validate(_chain_to_show({"x": ["1", 0], "factor": 2.5}), registry)
    assert again.ok and again.order == ["1", "2", "9"] and not full_passes
    assert again.nodes["2"].literals == {"factor": 2.5} and again.nodes["2"].links == {"x": ("1", 0)}
    refused = validate(_chain_to_show({"x": ["1", 0], "factor": 99.0}), registry)
    assert _errors(refused, "2") == ["value_bigger_than_max"] and full_passes == [1]
    relinked = validate(_chain_to_show({"x": "1", "factor": 2.0}), registry)  # another shape
    assert _errors(relinked, "2") == ["invalid_input_type"] and full_passes == [1, 1]


def test_unknown_class_does_not_hide_the_problems_of_other_nodes(registry: Registry) -> None:
    prompt = {
        "1": {"class_type": "NoSuchNode", "inputs": {}},
        "2": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": 99.0}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    report = validate(prompt, registry)
    assert _errors(report, "1") == ["missing_node_type"]
    assert _errors(report, "2") == ["value_bigger_than_max"]
    assert report.error is not None and report.error["type"] == "prompt_outputs_failed_validation"


def test_reports_missing_inputs_and_warns_of_unknown_ones_as_comfyui_ignores_them(registry: Registry) -> None:
    report = validate(_chain_to_show({"factr": 2.0}), registry)
    errors = report.node_errors["2"]["errors"]
    assert report.warnings == [
        "node 2 (Scale), input 'factr': not an input of Scale, ignored (inputs: x, factor)"
    ]
    assert {(e["type"], e["extra_info"]["input_name"]) for e in errors} == {
        ("required_input_missing", "x"),
        ("required_input_missing", "factor"),
    }
    assert report.node_errors["2"]["class_type"] == "Scale"
    assert report.node_errors["2"]["dependent_outputs"] == ["9"]


def test_an_optional_input_may_be_left_out(registry: Registry) -> None:
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": 1.0}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    assert validate(prompt, registry).ok


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        (["7", 0], "links to node '7', which is not in the prompt"),
        (["1", 3], "has no output 3"),
        (["1", "nope"], "has no output 'nope'"),
        (["1", -1], "negative"),
        (["1", 0.5], "output must be an index or an output name"),
    ],
)
def test_rejects_dangling_links(registry: Registry, link: list[Any], expected: str) -> None:
    report = validate(_chain_to_show({"x": link, "factor": 1.0}), registry)
    (error,) = report.node_errors["2"]["errors"]
    assert error["type"] == "bad_linked_input"
    assert expected in error["details"]


def test_accepts_links_by_output_name(registry: Registry) -> None:
    report = validate(_chain_to_show({"x": ["1", "value"], "factor": 1.0}), registry)
    assert report.ok
    assert report.nodes["2"].links == {"x": ("1", 0)}


def test_rejects_a_link_whose_type_does_not_match(registry: Registry) -> None:
    prompt = {
        "1": {"class_type": "Count", "inputs": {"count": 2}},
        "2": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": 1.0}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    (error,) = validate(prompt, registry).node_errors["2"]["errors"]
    assert error["type"] == "return_type_mismatch"
    assert "expects FLOAT" in error["details"] and "is INT" in error["details"]


def test_a_widget_may_take_a_link_of_its_type(registry: Registry) -> None:
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": 0.5}},
        "2": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    assert validate(prompt, registry).ok


@pytest.mark.parametrize(
    ("inputs", "kind"),
    [
        ({"flag": "false"}, "invalid_input_type"),
        ({"flag": 0}, "invalid_input_type"),
        ({"seed": 1.5}, "invalid_input_type"),
        ({"seed": True}, "invalid_input_type"),
        ({"seed": "3"}, "invalid_input_type"),
        ({"seed": 2**64}, "value_bigger_than_max"),
        ({"seed": -1}, "value_smaller_than_min"),
        ({"seed": float("nan")}, "invalid_input_type"),
        ({"weight": float("nan")}, "value_not_finite"),
        ({"weight": float("inf")}, "value_not_finite"),
        ({"weight": 10**400}, "value_bigger_than_max"),
        ({"weight": 1.5}, "value_bigger_than_max"),
        ({"weight": "0.5"}, "invalid_input_type"),
        ({"text": 3}, "invalid_input_type"),
        ({"mode": "d"}, "value_not_in_list"),
        ({"mode": 1}, "value_not_in_list"),
        ({"x": 1.0}, "invalid_input_type"),
        ({"text": ["a", "b", "c"]}, "bad_linked_input"),
        ({"text": {"__value__": ["a"]}}, "invalid_input_type"),
    ],
)
def test_rejects_literal_values_without_coercing(
    registry: Registry, inputs: dict[str, Any], kind: str
) -> None:
    good = {"seed": 1, "text": "t", "flag": True, "mode": "a"}
    report = validate(_chain_to_show(good | inputs, "Options"), registry)
    assert _errors(report, "2") == [kind]
    assert report.node_errors["2"]["errors"][0]["extra_info"]["input_name"] == next(iter(inputs))


def test_accepts_a_lossless_float_for_an_int(registry: Registry) -> None:
    report = validate(
        _chain_to_show({"seed": 3.0, "text": "", "flag": False, "mode": "b"}, "Options"), registry
    )
    assert report.ok and report.nodes["2"].literals["seed"] == 3


def test_combo_error_lists_the_options(registry: Registry) -> None:
    report = validate(
        _chain_to_show({"seed": 1, "text": "", "flag": False, "mode": "z"}, "Options"), registry
    )
    assert "['a', 'b', 'c']" in report.node_errors["2"]["errors"][0]["details"]


def test_rejects_cycle_and_names_its_nodes(registry: Registry) -> None:
    prompt = {
        "1": {"class_type": "Add", "inputs": {"a": ["3", 0]}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0]}},
        "3": {"class_type": "Add", "inputs": {"a": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }
    report = validate(prompt, registry)
    for node_id in ("1", "2", "3"):
        (error,) = report.node_errors[node_id]["errors"]
        assert error["type"] == "dependency_cycle"
        assert "nodes 1, 2, 3" in error["details"]
    assert "4" not in report.node_errors
    assert not report.runnable


def test_detects_a_self_loop(registry: Registry) -> None:
    prompt = {
        "1": {"class_type": "Add", "inputs": {"a": ["1", 0]}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    assert _errors(validate(prompt, registry), "1") == ["dependency_cycle"]


def test_validates_a_10000_node_chain_without_recursion(registry: Registry) -> None:
    prompt: dict[str, Any] = {"0": {"class_type": "Number", "inputs": {"value": 1.0}}}
    for i in range(1, 10_000):
        prompt[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0]}}
    prompt["out"] = {"class_type": "Show", "inputs": {"value": ["9999", 0]}}
    report = validate(prompt, registry)
    assert report.ok and len(report.order) == 10_001
    prompt["0"]["inputs"] = {"value": 1.0}
    prompt["0"] = {"class_type": "Add", "inputs": {"a": ["9999", 0]}}
    cyclic = validate(prompt, registry)
    assert len(cyclic.node_errors) == 10_000
    assert "and 9980 more" in cyclic.node_errors["5"]["errors"][0]["details"]


def test_no_output_node_is_an_error(registry: Registry) -> None:
    report = validate({"1": {"class_type": "Number", "inputs": {"value": 1.0}}}, registry)
    assert report.error is not None and report.error["type"] == "prompt_no_outputs"
    assert not report.runnable


def test_good_outputs_run_while_a_broken_branch_is_reported(registry: Registry) -> None:
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": 1.0}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": 50.0}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }
    report = validate(prompt, registry)
    assert report.runnable and not report.ok
    assert report.good_outputs == ["2"] and report.order == ["1", "2"]
    assert report.node_errors["3"]["dependent_outputs"] == ["4"]


def test_only_the_asked_outputs_are_checked_in_depth(registry: Registry) -> None:
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": 1.0}},
        "2": {"class_type": "Scale", "inputs": {"x": ["1", 0]}},  # factor missing, but not needed
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    report = validate(prompt, registry, outputs=["1"])
    assert report.ok and report.order == ["1"]
    missing = validate(prompt, registry, outputs=["42"])
    assert missing.error is not None and "'42'" in missing.error["details"]


def test_malformed_nodes_are_reported_not_raised(registry: Registry) -> None:
    prompt = {"1": 5, "2": {"inputs": {}}, "3": {"class_type": "Show", "inputs": [1]}}
    report = validate(prompt, registry)
    assert _errors(report, "1") == ["invalid_prompt"]
    assert _errors(report, "2") == ["invalid_prompt"]
    assert _errors(report, "3") == ["invalid_prompt"]
    assert validate([1, 2], registry).error["type"] == "invalid_prompt"  # type: ignore[index]


def test_to_comfy_has_the_400_body_shape(registry: Registry) -> None:
    body = validate(_chain_to_show({"x": ["1", 0], "factor": -11.0}), registry).to_comfy()
    assert set(body) == {"error", "node_errors"}
    assert set(body["error"]) == {"type", "message", "details", "extra_info"}
    entry = body["node_errors"]["2"]
    assert set(entry) == {"errors", "dependent_outputs", "class_type"}
    assert set(entry["errors"][0]) == {"type", "message", "details", "extra_info"}


def test_messages_name_node_class_and_input(registry: Registry) -> None:
    report = validate(_chain_to_show({"x": ["1", 0], "factor": 11.0}), registry)
    assert report.messages() == [
        "node 2 (Scale), input 'factor': 11.0 is bigger than the maximum 10.0 [value_bigger_than_max]"
    ]


@pytest.mark.parametrize("broken", [[1, 0], ["1", 0, 0], ["1"], ["1", 7]])
def test_problems_upstream_of_a_broken_link_are_reported_too(registry: Registry, broken: list[Any]) -> None:
    prompt = {
        "1": {"class_type": "Scale", "inputs": {"x": ["0", 0], "factor": 99.0}},
        "0": {"class_type": "Number", "inputs": {"value": "one"}},
        "2": {"class_type": "Show", "inputs": {"value": broken}},
    }
    report = validate(prompt, registry)
    assert _errors(report, "2") == ["bad_linked_input"]
    assert _errors(report, "1") == ["value_bigger_than_max"]
    assert _errors(report, "0") == ["invalid_input_type"]
    assert report.node_errors["0"]["dependent_outputs"] == ["2"]


class _Sized(Node):
    """An INT on a step grid, and a 64-bit unsigned seed."""

    category = "test"
    output_node = True
    inputs = (Int("width", default=64, min=8, max=4096, step=8), Int("seed", default=0, min=0, max=2**64 - 1))

    @staticmethod
    def run(ctx: Context, width: int, seed: int) -> tuple[()]:
        return ()


@pytest.mark.parametrize(
    ("width", "seed", "problem"),
    [
        (64, 2**64 - 1, None),
        (64, 2**63, None),
        (16, 0, None),
        (12, 0, "value_not_multiple_of_step"),
        (64, 2**64, "value_bigger_than_max"),
        (64, -1, "value_smaller_than_min"),
    ],
)
def test_int_steps_are_enforced_on_the_editors_grid_and_seeds_are_unsigned_64_bit(
    width: int, seed: int, problem: str | None
) -> None:
    report = validate(
        {"1": {"class_type": "_Sized", "inputs": {"width": width, "seed": seed}}}, Registry([_Sized])
    )
    assert _errors(report, "1") == ([problem] if problem else [])
    if problem == "value_not_multiple_of_step":
        assert "nearest: 8 or 16" in report.node_errors["1"]["errors"][0]["details"]


def test_a_declared_int_default_off_its_step_grid_fails_at_import() -> None:
    with pytest.raises(TypeError, match="default 12 is off its step grid"):

        class _OffGrid(Node):
            inputs = (Int("width", default=12, min=8, step=8),)

            @staticmethod
            def run(ctx: Context, width: int) -> tuple[()]:
                return ()
