"""``guidegraph run --sweep``: values read as ranges, lists or words; their product; one index file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graph_runtime import Registry, cli
from graph_runtime.sweep import SweepBar, SweepError, expand, parse_sweep

PROMPT = {
    "1": {"class_type": "Number", "inputs": {"value": 2.0}, "_meta": {"title": "start"}},
    "2": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": 3.0}},
    "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
}


@pytest.fixture(autouse=True)
def _test_registry(monkeypatch: pytest.MonkeyPatch, registry: Registry) -> None:
    monkeypatch.setattr(cli, "_registry", lambda: registry)


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("3.seed=0..4", [0, 1, 2, 3, 4]),
        ("3.seed=-1..1", [-1, 0, 1]),
        ("4.scale=[1, 2.5, 7]", [1, 2.5, 7]),
        ("4.scale=1,2.5,7", [1, 2.5, 7]),
        ("5.text=a red circle,a blue square", ["a red circle", "a blue square"]),
    ],
)
def test_reads_ranges_json_lists_and_comma_separated_values(text: str, values: list[object]) -> None:
    assert parse_sweep(text) == (text.partition("=")[0], values)


@pytest.mark.parametrize("text", ["seed=1..3", "3.seed", "3.seed=", "3.seed=5..1", "3.seed={}"])
def test_refuses_what_it_cannot_read_and_says_how_to_write_it(text: str) -> None:
    with pytest.raises(SweepError, match="--sweep"):
        parse_sweep(text)


def test_several_sweeps_run_their_product_and_leave_the_base_prompt_alone() -> None:
    points = expand(PROMPT, ["2.factor=1..3", "start.value=[10, 20]"], cli.apply_assignments)
    assert [(p.prompt["2"]["inputs"]["factor"], p.prompt["1"]["inputs"]["value"]) for p in points] == [
        (f, v) for f in (1, 2, 3) for v in (10, 20)
    ]
    assert PROMPT["2"]["inputs"]["factor"] == 3.0
    assert points[1].label() == "2.factor=1 start.value=20"


def test_the_bar_counts_the_whole_sweep() -> None:
    bar = SweepBar(4, live=False)
    bar.update(started=2)
    bar.update(finished=1)
    bar.update(finished=1, failed=1)
    assert bar.text().startswith("sweep [##############--------------] 2/4, 0 running, 1 failed")


def test_run_sweep_writes_one_index_for_every_point(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(PROMPT))
    out = tmp_path / "out"
    assert (
        cli.main(["run", str(path), "--sweep", "2.factor=1..3", "--output", str(out), "--device", "cpu"]) == 0
    )
    assert "3 of 3 points succeeded" in capsys.readouterr().out
    index = json.loads((out / "sweep.json").read_text())
    assert [(e["values"], e["status"]) for e in index] == [({"2.factor": f}, "success") for f in (1, 2, 3)]


def test_run_sweep_names_the_point_whose_values_are_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(PROMPT))
    assert cli.main(["run", str(path), "--sweep", "start.value=[1, -2000]", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "[start.value=-2000]" in err and "[start.value=1]" not in err
    assert cli.main(["run", str(path), "--sweep", "2.factor=9..1"]) == 2
    assert (
        "--workers needs --ray"
        in (cli.main(["run", str(path), "--workers", "2"]), capsys.readouterr().err)[1]
    )


def test_a_lane_with_nothing_to_take_waits_for_points_that_may_come_back_to_it() -> None:
    """Lane a finished its point while lane b still runs one; b's worker lacks that point's file and
    gives it back for a: a must still be there to take it (it used to stop, leaving it never run)."""
    import threading
    from collections import deque

    from graph_runtime.context import CancelToken
    from graph_runtime.sweep import Point, _Queue

    queue = _Queue(deque(Point(i, {}, {}) for i in range(2)))
    cancel = CancelToken()
    first, second = queue.take("a", cancel), queue.take("b", cancel)
    assert first is not None and second is not None
    queue.finish(first)
    taken: list[Point | None] = []
    waiting = threading.Thread(target=lambda: taken.append(queue.take("a", cancel)))
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive()  # b's point is still out: a waits rather than stopping
    queue.give_back(second, lacking="b")
    waiting.join(5)
    assert taken == [second]
    queue.finish(second)
    assert queue.take("a", cancel) is None and queue.take("b", cancel) is None  # nothing left anywhere
    cancel.cancel()
    assert _Queue(deque([Point(0, {}, {})]), lacking={0: {"b"}}).take("b", cancel) is None  # cancelled
