"""Starting the server: clean one-line refusals, the shipped templates from anywhere, the re-run opt-in."""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from graph_runtime import cli
from server.cli import GC_YOUNG_THRESHOLD, _freeze_startup_heap, event_loop
from server.config import ServerConfig
from server.store import PENDING, PromptStore
from server.templates import shipped_workflows
from tests.server.conftest import make_config, square_prompt, wait_done


def _serve(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> tuple[int, str, str]:
    code = cli.main(["serve", "--data-dir", str(tmp_path / "user"), "--device", "cpu", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_output_dir_that_is_a_file_is_refused_before_the_url_is_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, out, err = _serve(capsys, tmp_path, "--output-dir", str(blocker))
    assert code == 2 and out == ""
    assert (
        err == f"guidegraph serve: the output folder {blocker} cannot be used: it is a file, not a folder\n"
    )


def test_a_port_in_use_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = _serve(capsys, tmp_path, "--port", str(port))
    assert code == 2 and "the editor is at" not in out
    assert err.startswith("guidegraph serve: cannot start:") and err.count("\n") == 1


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop does not build on Windows")
def test_the_server_runs_on_uvloop_where_it_is_a_dependency() -> None:
    import uvloop

    loop = event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


async def test_startup_freezes_its_heap_and_collects_the_young_generation_less_often() -> None:
    before = gc.get_threshold()
    try:
        await _freeze_startup_heap(None)  # type: ignore[arg-type]
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_shipped_workflows_are_found_from_any_working_directory(tmp_path: Path) -> None:
    found = subprocess.run(
        [sys.executable, "-c", "from server.templates import shipped_workflows; print(shipped_workflows())"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found) == shipped_workflows() and (Path(found) / "showcase.ui.json").is_file()


async def test_without_workflows_dir_the_editor_lists_the_shipped_templates(make_client, tmp_path) -> None:
    client = await make_client(ServerConfig(data_dir=tmp_path / "user"))
    [category] = await (await client.get("/templates/index.json")).json()
    names = [card["name"] for card in category["templates"]]
    assert "showcase" in names and "cfg" in names
    default = await (await client.get("/api/guidegraph/default_workflow")).json()
    assert default["name"] == "showcase" and default["workflow"]["nodes"]


def test_store_can_queue_again_the_prompt_a_crash_left_running(tmp_path: Path) -> None:
    store = PromptStore(tmp_path / "db.sqlite3")
    for prompt_id in ("a", "b"):
        store.add(prompt_id, {"1": {}}, {}, ["1"])
    assert store.claim_next() is not None
    store.close()
    store = PromptStore(tmp_path / "db.sqlite3")
    assert store.recover(rerun=True) == ["a"]
    assert [(r.id, r.status) for r in store.queue()[1]] == [("a", PENDING), ("b", PENDING)]
    store.close()


async def test_rerun_interrupted_runs_the_prompt_a_crash_left_running(make_client, tmp_path) -> None:
    config = make_config(tmp_path, rerun_interrupted=True)
    store = PromptStore(config.data_dir / "guidegraph.sqlite3")
    store.add("crashed", square_prompt(), {}, ["2"])
    assert store.claim_next() is not None  # running when the server died
    store.close()
    client = await make_client(config)
    entry = await wait_done(client, "crashed")
    assert entry["status"]["status_str"] == "success"
    assert json.dumps(entry["outputs"]).count("filename") == 1
