"""Property-based tests: the validator and the editor-format conversion on random graphs."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtime_testnodes import TEST_NODES

from graph_runtime import Registry, to_api_prompt, validate
from graph_runtime.registry import editor_order

REGISTRY = Registry(TEST_NODES)
FLOAT_SOURCES = ("Number", "Scale", "Add")
OUTPUT_NAME = {"Number": "value", "Scale": "scaled", "Add": "sum"}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 25) -> dict[str, Any]:
    """A valid random prompt: FLOAT-producing nodes linking to earlier ones, Options and Show nodes."""
    prompt: dict[str, Any] = {}
    floats: list[str] = []
    for i in range(draw(st.integers(1, max_nodes))):
        node_id = str(i + 1)
        kind = draw(
            st.sampled_from(["Number", "Scale", "Add", "Options"] if floats else ["Number", "Options"])
        )
        if kind == "Number":
            inputs: dict[str, Any] = {"value": draw(st.floats(-1000, 1000))}
        elif kind == "Scale":
            inputs = {"x": [draw(st.sampled_from(floats)), 0], "factor": draw(st.floats(-10, 10))}
        elif kind == "Add":
            inputs = {"a": [draw(st.sampled_from(floats)), 0]}
            if draw(st.booleans()):
                source = draw(st.sampled_from(floats))
                inputs["b"] = [source, draw(st.sampled_from([0, OUTPUT_NAME[prompt[source]["class_type"]]]))]
        else:
            inputs = {
                "seed": draw(st.integers(0, 2**63 - 1)),
                "text": draw(st.text(max_size=5)),
                "flag": draw(st.booleans()),
                "mode": draw(st.sampled_from("abc")),
            }
            if floats and draw(st.booleans()):
                inputs["x"] = [draw(st.sampled_from(floats)), 0]
            if draw(st.booleans()):
                inputs["weight"] = draw(st.floats(0, 1))
        prompt[node_id] = {"class_type": kind, "inputs": inputs}
        if kind in FLOAT_SOURCES:
            floats.append(node_id)
    for j in range(draw(st.integers(1, 3))):
        prompt[f"out{j}"] = {
            "class_type": "Show",
            "inputs": {"value": [draw(st.sampled_from(sorted(k for k in prompt if k[0] != "o"))), 0]},
        }
    return prompt


def _sources(node: dict[str, Any]) -> list[str]:
    return [v[0] for v in node["inputs"].values() if isinstance(v, list) and v[0] != "nowhere"]


def _ancestors(prompt: dict[str, Any], targets: list[str]) -> set[str]:
    seen, stack = set(targets), list(targets)
    while stack:
        for src in _sources(prompt[stack.pop()]):
            if src not in seen:
                seen.add(src)
                stack.append(src)
    return seen


@SETTINGS
@given(dags())
def test_valid_random_dags_validate_and_plan_in_topological_order(prompt: dict[str, Any]) -> None:
    report = validate(prompt, REGISTRY)
    assert report.ok, report.messages()
    outputs = [n for n in prompt if n.startswith("out")]
    assert sorted(report.good_outputs) == sorted(outputs)
    assert set(report.order) == _ancestors(prompt, outputs)
    position = {n: i for i, n in enumerate(report.order)}
    for node_id in report.order:
        assert all(position[src] < position[node_id] for src in _sources(prompt[node_id]))


BREAKAGES = {
    "unknown class": lambda node: node.update(class_type="Missing"),
    "dangling link": lambda node: node["inputs"].update({next(iter(node["inputs"]), "x"): ["nowhere", 0]}),
    "wrong type": lambda node: node["inputs"].update({k: "false" for k in list(node["inputs"])[:1]}),
    "missing input": lambda node: node.update(inputs={}),
}


@SETTINGS
@given(dags(), st.data())
def test_one_broken_node_is_reported_and_fails_only_its_dependent_outputs(
    prompt: dict[str, Any], data: Any
) -> None:
    candidates = [n for n in prompt if not n.startswith("out")]
    victim = data.draw(st.sampled_from(candidates))
    breakage = data.draw(st.sampled_from(sorted(BREAKAGES)))
    BREAKAGES[breakage](prompt[victim])
    report = validate(prompt, REGISTRY)
    outputs = [n for n in prompt if n.startswith("out")]
    dependent = sorted(o for o in outputs if victim in _ancestors(prompt, [o]))
    assert sorted(report.good_outputs) == sorted(set(outputs) - set(dependent))
    if dependent:
        assert victim in report.node_errors, breakage
        assert sorted(report.node_errors[victim]["dependent_outputs"]) == dependent
    assert set(report.node_errors) <= {victim}


@SETTINGS
@given(dags(), st.data())
def test_a_back_edge_makes_a_cycle_that_names_its_nodes(prompt: dict[str, Any], data: Any) -> None:
    linkers = {n for n, node in prompt.items() if node["class_type"] in ("Scale", "Add")}
    if not linkers:
        return
    tail = data.draw(st.sampled_from(sorted(linkers)))
    head = data.draw(
        st.sampled_from(sorted(_ancestors(prompt, [tail]) & linkers))
    )  # tail itself: a self-loop
    cycle = _ancestors(prompt, [tail]) & _descendants(prompt, head)
    prompt[head]["inputs"]["x" if prompt[head]["class_type"] == "Scale" else "a"] = [tail, 0]
    report = validate(prompt, REGISTRY)
    needed = _ancestors(prompt, [n for n in prompt if n.startswith("out")])
    flagged = {
        n
        for n, entry in report.node_errors.items()
        if any(e["type"] == "dependency_cycle" for e in entry["errors"])
    }
    assert flagged == (cycle if cycle & needed else set())
    for node_id in flagged:
        details = report.node_errors[node_id]["errors"][0]["details"]
        assert all(member in details for member in cycle)


def _descendants(prompt: dict[str, Any], start: str) -> set[str]:
    children: dict[str, list[str]] = {}
    for node_id, node in prompt.items():
        for src in _sources(node):
            children.setdefault(src, []).append(node_id)
    seen, stack = {start}, [start]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)


INPUT_NAMES = st.sampled_from(["value", "x", "a", "factor", "seed", "mode", "zz"])
ANY_NODE = st.fixed_dictionaries(
    {
        "class_type": st.sampled_from([c.__name__ for c in TEST_NODES] + ["X"]),
        "inputs": st.dictionaries(
            INPUT_NAMES, JSON | st.tuples(st.sampled_from("123"), st.integers(-1, 2)).map(list)
        ),
    }
)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["1", "2", "3"]), ANY_NODE))
def test_validation_never_raises_on_arbitrary_values(prompt: dict[str, Any]) -> None:
    report = validate(prompt, REGISTRY)
    assert report.ok or report.messages()


@SETTINGS
@given(dags(), st.data())
def test_a_prompt_shaped_like_a_clean_one_gets_the_report_a_fresh_pass_gives(
    prompt: dict[str, Any], data: Any
) -> None:
    """Re-posting a graph with other literal values (valid or not) reuses its shape's graph checks; the
    report must be the one a registry that never saw the shape gives."""
    shared = Registry(TEST_NODES)
    assert validate(prompt, shared).ok
    literals = [
        (n, k) for n, node in prompt.items() for k, v in node["inputs"].items() if type(v) is not list
    ]
    for node_id, name in data.draw(st.lists(st.sampled_from(literals), max_size=3)) if literals else []:
        prompt[node_id]["inputs"][name] = data.draw(JSON)
    reused, fresh = validate(prompt, shared), validate(prompt, Registry(TEST_NODES))
    assert reused.node_errors == fresh.node_errors
    assert (reused.error, reused.outputs, reused.good_outputs) == (
        fresh.error,
        fresh.outputs,
        fresh.good_outputs,
    )
    assert reused.order == fresh.order and reused.warnings == fresh.warnings
    assert {n: (p.cls, p.literals, p.links) for n, p in reused.nodes.items()} == {
        n: (p.cls, p.literals, p.links) for n, p in fresh.nodes.items()
    }


# The editor format, built from an API prompt the way the editor saves it.

CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")


def api_to_ui(prompt: dict[str, Any], draw: Any) -> dict[str, Any]:
    """An editor workflow for ``prompt``: positional widgets, link arrays, optional reroutes and extras."""
    ids = {node_id: i + 1 for i, node_id in enumerate(prompt)}
    nodes: list[dict[str, Any]] = []
    links: list[list[Any]] = []
    next_id = len(ids) + 1
    for node_id, node in prompt.items():
        cls = REGISTRY.get(node["class_type"])
        assert cls is not None
        widgets: list[Any] = []
        slots: list[dict[str, Any]] = []
        for spec in editor_order(cls):
            value = node["inputs"].get(spec.name, getattr(spec, "default", None))
            linked = isinstance(value, list)
            if spec.is_widget:
                widgets.append(getattr(spec, "default", None) if linked else value)
                if getattr(spec, "control_after_generate", False):
                    widgets.append(draw(st.sampled_from(CONTROL_VALUES)))
            if not linked:
                if not spec.is_widget:
                    slots.append({"name": spec.name, "type": spec.type_name, "link": None})
                continue
            link_id = len(links) + 1
            origin, slot = ids[value[0]], _slot(prompt, value)
            if draw(st.booleans()):  # route this link through a Reroute node
                reroute = next_id
                next_id += 1
                links.append([link_id, origin, slot, reroute, 0, "*"])
                nodes.append(
                    {
                        "id": reroute,
                        "type": "Reroute",
                        "mode": 0,
                        "inputs": [{"name": "", "type": "*", "link": link_id}],
                        "outputs": [{"name": "", "type": "*", "links": [link_id + 1]}],
                    }
                )
                link_id += 1
                origin, slot = reroute, 0
            links.append([link_id, origin, slot, ids[node_id], len(slots), spec.type_name])
            slot_entry = {"name": spec.name, "type": spec.type_name, "link": link_id}
            if spec.is_widget:
                slot_entry["widget"] = {"name": spec.name}
            slots.append(slot_entry)
        nodes.append(
            {
                "id": ids[node_id],
                "type": node["class_type"],
                "mode": 0,
                "inputs": slots,
                "outputs": [{"name": o.name, "type": o.type, "links": []} for o in cls.outputs],
                "widgets_values": widgets,
            }
        )
    if draw(st.booleans()):
        nodes.append({"id": next_id, "type": "Note", "mode": 0, "widgets_values": ["a note"]})
        nodes.append({"id": next_id + 1, "type": "Number", "mode": 2, "widgets_values": [1.0]})
    order = draw(st.permutations(range(len(nodes))))
    return {"version": 0.4, "nodes": [nodes[i] for i in order], "links": links}  # fmt: skip


def _slot(prompt: dict[str, Any], link: list[Any]) -> int:
    """The output index of a link given by index or by output name (the editor knows only indices)."""
    if isinstance(link[1], int):
        return link[1]
    source = REGISTRY.get(prompt[link[0]]["class_type"])
    assert source is not None
    return [o.name for o in source.outputs].index(link[1])


def _with_defaults(prompt: dict[str, Any]) -> dict[str, Any]:
    """What the editor would send: every widget present (the editor always serialises them)."""
    out: dict[str, Any] = {}
    for node_id, node in prompt.items():
        cls = REGISTRY.get(node["class_type"])
        assert cls is not None
        inputs = {
            k: [v[0], _slot(prompt, v)] if isinstance(v, list) else v for k, v in node["inputs"].items()
        }
        for spec in cls.inputs:
            if spec.is_widget and spec.name not in inputs:
                inputs[spec.name] = getattr(spec, "default", None)
        out[node_id] = inputs
    return out


@SETTINGS
@given(dags(), st.data())
def test_editor_format_converts_back_to_the_same_api_prompt(prompt: dict[str, Any], data: Any) -> None:
    ui = api_to_ui(prompt, data.draw)
    converted = to_api_prompt(ui, REGISTRY)
    ids = {str(i + 1): node_id for i, node_id in enumerate(prompt)}
    back = {
        ids[k]: {n: [ids[v[0]], v[1]] if isinstance(v, list) else v for n, v in node["inputs"].items()}
        for k, node in converted.items()
    }
    assert back == _with_defaults(prompt)
    assert validate(converted, REGISTRY).ok
