"""Execution: pruning, Merkle caching, failures contained to descendants, cancellation, events."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from graph_runtime import CancelToken, Executor, Registry, ValidationFailed, WorkflowBuilder
from graph_runtime.cache import OutputCache, nbytes
from graph_runtime.events import Event


def _diamond(wb: WorkflowBuilder, factor: float = 2.0) -> dict[str, Any]:
    """1 -> 2 (Scale) -> 4 (Add) <- 3 (Scale) <- 1;  5 shows 4;  6 shows 1 through its own chain."""
    one = wb.add("Number", value=1.0)
    left = wb.add("Scale", x=one[0], factor=factor)
    right = wb.add("Scale", x=one[0], factor=3.0)
    total = wb.add("Add", a=left[0], b=right[0])
    wb.add("Keep", value=total[0])
    return wb.prompt


def test_runs_in_order_and_returns_outputs(executor: Executor, registry: Registry) -> None:
    prompt = _diamond(WorkflowBuilder(registry))
    result = executor.run(prompt)
    assert result.status == "success" and result.ok
    assert result.outputs["5"] == (5.0,)
    assert result.executed == ["1", "2", "3", "4", "5"] and result.cached == []


def test_identical_rerun_executes_nothing(executor: Executor, registry: Registry) -> None:
    prompt = _diamond(WorkflowBuilder(registry))
    executor.run(prompt)
    again = executor.run(prompt)
    assert again.executed == [] and again.cached == ["1", "2", "3", "4", "5"]
    assert again.outputs["5"] == (5.0,)


def test_one_changed_input_reruns_exactly_that_node_and_its_descendants(
    executor: Executor, registry: Registry
) -> None:
    wb = WorkflowBuilder(registry)
    _diamond(wb)
    executor.run(wb.prompt)
    wb.set("2", "factor", 4.0)
    result = executor.run(wb.prompt)
    assert result.executed == ["2", "4", "5"]
    assert sorted(result.cached) == ["1", "3"]
    assert result.outputs["5"] == (7.0,)


def test_titles_and_node_ids_never_enter_the_key(executor: Executor, registry: Registry) -> None:
    first = WorkflowBuilder(registry)
    _diamond(first)
    executor.run(first.prompt)
    renamed = {f"n{k}": v | {"_meta": {"title": f"Title {k}"}} for k, v in first.prompt.items()}
    for node in renamed.values():
        node["inputs"] = {
            k: ["n" + v[0], v[1]] if isinstance(v, list) else v for k, v in node["inputs"].items()
        }
    result = executor.run(renamed)
    assert result.executed == [] and len(result.cached) == 5


def test_non_deterministic_nodes_always_run_with_their_descendants(
    executor: Executor, registry: Registry
) -> None:
    wb = WorkflowBuilder(registry)
    noise = wb.add("Noise")
    scaled = wb.add("Scale", x=noise[0], factor=1.0)
    wb.add("Keep", value=scaled[0])
    wb.add("Keep", value=wb.add("Number", value=2.0)[0])
    first = executor.run(wb.prompt)
    second = executor.run(wb.prompt)
    assert second.executed == ["1", "2", "3"] and sorted(second.cached) == ["4", "5"]
    assert first.outputs["3"] != second.outputs["3"]


def test_identical_subgraphs_in_one_prompt_run_once(executor: Executor, registry: Registry) -> None:
    wb = WorkflowBuilder(registry)
    wb.add("Keep", value=wb.add("Number", value=2.0))
    wb.add("Keep", value=wb.add("Number", value=2.0))
    result = executor.run(wb.prompt)
    assert result.executed == ["1", "2"] and result.cached == ["3", "4"]
    assert result.outputs["4"] == (2.0,)


def test_a_cached_node_needs_nothing_upstream(registry: Registry) -> None:
    executor = Executor(registry, device="cpu", cache_max_entries=1)
    prompt = _diamond(WorkflowBuilder(registry))
    executor.run(prompt, outputs=["4"])  # the cache keeps only node 4's entry
    result = executor.run(prompt)
    assert result.executed == ["5"] and result.cached == ["4"]


def test_prunes_to_the_ancestors_of_the_outputs(executor: Executor, registry: Registry) -> None:
    wb = WorkflowBuilder(registry)
    _diamond(wb)
    wb.add("Number", value=9.0)  # feeds nothing
    assert "6" not in executor.run(wb.prompt).executed
    only = executor.run(wb.prompt, outputs=["3"])
    assert only.executed == [] and sorted(only.outputs) == ["1", "3"]


def test_a_failing_node_fails_its_descendants_only(executor: Executor, registry: Registry) -> None:
    wb = WorkflowBuilder(registry)
    one = wb.add("Number", value=1.0)
    bad = wb.add("Fail", x=one[0])
    wb.add("Keep", value=wb.add("Scale", x=bad[0], factor=1.0)[0])
    wb.add("Keep", value=wb.add("Scale", x=one[0], factor=5.0)[0])
    events: list[Event] = []
    result = executor.run(wb.prompt, on_event=events.append)
    assert result.status == "error"
    assert result.skipped == ["3", "4"]
    assert result.outputs["6"] == (5.0,)
    failure = result.failures["2"]
    assert (failure.class_type, failure.exception_type, failure.message) == (
        "Fail",
        "RuntimeError",
        "boom at 1.0",
    )
    assert "RuntimeError: boom at 1.0" in failure.traceback[-1]
    (error,) = [e for e in events if e.type == "execution_error"]
    data = error.data()
    assert data["node_id"] == "2" and data["node_type"] == "Fail" and data["current_inputs"] == {"x": ["1.0"]}
    assert [e.type for e in events][-1] == "executing" and "execution_success" not in [e.type for e in events]


def test_a_node_returning_the_wrong_arity_fails_clearly(registry: Registry) -> None:
    from graph_runtime.api import Context, Node, Output

    class Broken(Node):
        output_node = True
        outputs = (Output("a", "FLOAT"), Output("b", "FLOAT"))

        @staticmethod
        def run(ctx: Context) -> tuple[float]:
            return (1.0,)

    result = Executor(Registry([Broken]), device="cpu").run({"1": {"class_type": "Broken", "inputs": {}}})
    assert result.failures["1"].message == "Broken.run returned 1 values for 2 declared outputs"


def test_event_stream_in_comfy_vocabulary(executor: Executor, registry: Registry) -> None:
    wb = WorkflowBuilder(registry)
    wb.add("Show", value=wb.add("Slow", x=wb.add("Number", value=1.0)[0], steps=2)[0])
    events: list[Event] = []
    executor.run(wb.prompt, prompt_id="p1", on_event=events.append)
    assert [(e.type, e.data().get("node")) for e in events] == [
        ("execution_start", None),
        ("execution_cached", None),
        ("executing", "1"),
        ("executing", "2"),
        ("progress", "2"),
        ("progress", "2"),
        ("executing", "3"),
        ("executed", "3"),
        ("execution_success", None),
        ("executing", None),
    ]
    assert all(e.prompt_id == "p1" for e in events)
    assert events[5].data() == {"value": 2, "max": 2, "prompt_id": "p1", "node": "2"}
    assert events[7].data()["output"] == {"text": ["1.0"]}
    cached: list[Event] = []
    executor.run(wb.prompt, prompt_id="p2", on_event=cached.append)
    assert cached[1].data()["nodes"] == ["1", "2", "3"]
    assert [e.type for e in cached] == [
        "execution_start",
        "execution_cached",
        "executed",
        "execution_success",
        "executing",
    ]


def test_context_carries_prompt_extra_pnginfo_and_device(executor: Executor, registry: Registry) -> None:
    prompt = {"7": {"class_type": "Echo", "inputs": {"tag": "x"}}}
    result = executor.run(prompt, extra_pnginfo={"workflow": {"nodes": []}})
    node_id, class_type, seen_prompt, extra, device = result.outputs["7"][0]
    assert (node_id, class_type, seen_prompt, extra, device) == (
        "7",
        "Echo",
        prompt,
        {"workflow": {"nodes": []}},
        "cpu",
    )


def test_cancel_before_the_run_interrupts_at_the_first_node(executor: Executor, registry: Registry) -> None:
    token = CancelToken()
    token.cancel()
    events: list[Event] = []
    result = executor.run(_diamond(WorkflowBuilder(registry)), cancel=token, on_event=events.append)
    assert result.status == "interrupted" and result.interrupted_at == "1" and result.executed == []
    assert [e.type for e in events][-2:] == ["execution_interrupted", "executing"]


def test_a_long_node_stops_at_its_next_progress_report(executor: Executor, registry: Registry) -> None:
    wb = WorkflowBuilder(registry)
    wb.add("Keep", value=wb.add("Slow", x=wb.add("Number", value=1.0)[0], steps=1000)[0])
    token = CancelToken()
    seen: list[int] = []

    def on_event(event: Event) -> None:
        if event.type == "progress":
            seen.append(event.data()["value"])
            if event.data()["value"] == 10:
                token.cancel()

    result = executor.run(wb.prompt, cancel=token, on_event=on_event)
    assert result.status == "interrupted" and result.interrupted_at == "2"
    assert seen[-1] == 10 and result.executed == ["1"]


def test_invalid_prompt_raises_validation_failed_with_the_report(executor: Executor) -> None:
    with pytest.raises(ValidationFailed) as info:
        executor.run({"1": {"class_type": "Nope", "inputs": {}}})
    assert "missing_node_type" in str(info.value)
    assert info.value.report.node_errors["1"]["class_type"] == "Nope"


def test_cache_policy_none_keeps_nothing_between_runs(registry: Registry) -> None:
    executor = Executor(registry, device="cpu", cache="none")
    prompt = _diamond(WorkflowBuilder(registry))
    executor.run(prompt)
    result = executor.run(prompt)
    assert len(result.executed) == 5 and len(executor.cache) == 0
    assert sorted(result.outputs) == ["5"]  # intermediates were freed as soon as they were consumed


def test_lru_cache_is_bounded_by_entries(registry: Registry) -> None:
    executor = Executor(registry, device="cpu", cache_max_entries=2)
    result = executor.run(_diamond(WorkflowBuilder(registry)))
    assert result.ok and len(executor.cache) == 2  # only 4 and 5 are left
    assert executor.run(_diamond(WorkflowBuilder(registry), factor=5.0)).executed == ["1", "2", "3", "4", "5"]


def test_cache_is_bounded_by_tensor_bytes(registry: Registry) -> None:
    executor = Executor(registry, device="cpu", cache_max_bytes=1000)
    for n in (100, 200):  # 400 and 800 bytes of float32
        wb = WorkflowBuilder(registry)
        wb.add("Keep", value=wb.add("MakeTensor", n=n)[0])
        executor.run(wb.prompt)
    assert executor.cache.bytes == 800 and len(executor.cache) == 1  # the oldest entries went first


def test_free_clears_the_cache(executor: Executor, registry: Registry) -> None:
    prompt = _diamond(WorkflowBuilder(registry))
    executor.run(prompt)
    executor.free()
    assert len(executor.run(prompt).executed) == 5


def test_unknown_cache_policy_is_refused(registry: Registry) -> None:
    with pytest.raises(ValueError, match="unknown cache policy 'fifo'"):
        Executor(registry, cache="fifo")


def test_ram_bounded_policy_has_no_entry_limit() -> None:
    cache = OutputCache("ram-bounded", max_entries=1, max_bytes=10**6, min_free_ram=0)
    from graph_runtime.cache import Entry

    for i in range(5):
        cache.put(str(i), Entry((i,), None, 0))
    assert len(cache) == 5


def test_nbytes_walks_containers_dataclasses_and_modules() -> None:
    from dataclasses import dataclass

    @dataclass
    class Holder:
        weights: torch.nn.Module
        extra: dict[str, torch.Tensor]

    t = torch.zeros(10)  # 40 bytes
    holder = Holder(torch.nn.Linear(2, 3), {"t": t})  # 6 + 3 float32 parameters = 36 bytes
    assert nbytes((holder, [t, t], "text", 3)) == 36 + 40
    assert nbytes(type("Sized", (), {"nbytes": 123})()) == 123


def test_runs_from_two_threads_are_serialised(executor: Executor, registry: Registry) -> None:
    prompt = _diamond(WorkflowBuilder(registry))
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(executor.run(prompt))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r.executed) for r in results) == [0, 0, 0, 5]
    assert all(r.outputs["5"] == (5.0,) for r in results)


def test_a_broken_event_consumer_does_not_break_the_run(executor: Executor, registry: Registry) -> None:
    def explode(event: Event) -> None:
        raise ValueError("consumer bug")

    assert executor.run(_diamond(WorkflowBuilder(registry)), on_event=explode).ok


def test_error_reports_describe_inputs_without_formatting_whole_objects() -> None:
    from graph_runtime.executor import _short

    class Network:
        def __repr__(self) -> str:
            raise AssertionError("an error report must not format a whole network")

    assert _short(2.5) == "2.5" and _short("x" * 300).endswith("...") and len(_short("x" * 300)) == 200
    assert _short(list(range(10**6))) == "list of 1000000"
    assert _short(Network()) == "<Network>"
