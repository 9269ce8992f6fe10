"""``guidegraph run --ray``: a sweep fanned across Ray workers loses no point when a worker dies."""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path
from typing import Any

from graph_runtime.cli import apply_assignments
from graph_runtime.context import CancelToken
from graph_runtime.registry import Registry
from graph_runtime.sweep import SweepBar, expand, run_ray, write_index
from tests.server.ray_testnodes import RAY_NODES, BlobRegistry, blob_prompt

CRASHING = {
    "1": {"class_type": "Number", "inputs": {"value": 0}},
    "2": {"class_type": "SaveSquare", "inputs": {"value": ["1", 0], "size": 4, "prefix": "pt"}},
    "3": {"class_type": "CrashOnce", "inputs": {"marker": "", "value": 0}},
    # ~0.6 s per point, so the 6 points outlast a worker that starts a few seconds after the other:
    # both take some (a trivial point let the first worker up finish them all, seen in CI)
    "4": {"class_type": "SlowSteps", "inputs": {"steps": 3, "delay": 0.2}},
}


def test_a_sweep_across_two_workers_writes_every_point_even_when_one_crashes(
    ray_cluster: Any, tmp_path: Path
) -> None:
    prompt = json.loads(json.dumps(CRASHING))
    points = expand(prompt, ["1.value=0..5"], apply_assignments)
    points[2].prompt["3"]["inputs"]["marker"] = str(tmp_path / "crashed-once")  # its worker dies once
    for point in points[:2] + points[3:]:
        (tmp_path / f"no-crash-{point.index}").touch()
        point.prompt["3"]["inputs"]["marker"] = str(tmp_path / f"no-crash-{point.index}")
    stream = io.StringIO()
    bar = SweepBar(len(points), stream=stream, live=True)
    output = tmp_path / "out"
    run_ray(
        points,
        functools.partial(Registry, RAY_NODES),
        output,
        bar,
        CancelToken(),
        address=None,
        workers=2,
        device="cpu",
    )
    assert [p.result.status if p.result else None for p in points] == ["success"] * 6
    assert points[2].tries == 2 and {p.worker for p in points} == {"worker-1", "worker-2"}
    index = json.loads(write_index(points, output).read_text())
    assert [entry["values"] for entry in index] == [{"1.value": v} for v in range(6)]
    files = [f for entry in index for f in entry["files"]]
    assert len(set(files)) == 6 and all((output / f).is_file() for f in files)  # (the lost try may add one)
    assert stream.getvalue().rstrip().endswith("6/6, 0 running") or "6/6, 0 running," in stream.getvalue()


def test_a_point_needing_a_file_no_worker_has_fails_and_says_which(ray_cluster: Any, tmp_path: Path) -> None:
    from graph_runtime.folders import register_folders

    folder = tmp_path / "blobs"
    folder.mkdir()
    (folder / "here.bin").write_bytes(b"x" * 10)
    register_folders({"blobs": [folder]})
    points = expand(blob_prompt("here.bin"), ["2.seed=[1, 2]"], apply_assignments)
    points[1].prompt["1"]["inputs"]["name"] = "elsewhere.bin"
    run_ray(
        points,
        BlobRegistry(folders=(folder,)),
        tmp_path / "out",
        SweepBar(2, stream=io.StringIO()),
        CancelToken(),
        address=None,
        workers=2,
        device="cpu",
    )
    assert points[0].result is not None and points[0].result.ok
    assert points[1].result is not None and points[1].result.status == "error"
    (failure,) = points[1].result.failures.values()
    assert "no worker has this model file" in failure.message and "blobs/elsewhere.bin" in failure.message
