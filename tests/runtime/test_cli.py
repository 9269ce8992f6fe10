"""The guidegraph command line: exit codes 0 / 1 / 2, every problem printed, progress and summary."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest

from graph_runtime import Registry, cli
from graph_runtime.events import Executing, Progress
from graph_runtime.progress import ProgressPrinter

GOOD = {
    "1": {"class_type": "Number", "inputs": {"value": 2.0}, "_meta": {"title": "start"}},
    "2": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": 3.0}},
    "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
}


@pytest.fixture(autouse=True)
def _test_registry(monkeypatch: pytest.MonkeyPatch, registry: Registry) -> None:
    monkeypatch.setattr(cli, "_registry", lambda: registry)


def _write(tmp_path: Path, data: Any, name: str = "wf.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_run_succeeds_and_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", _write(tmp_path, GOOD), "--device", "cpu"]) == 0
    assert "success: 3 nodes run, 0 cached, 0 outputs written" in capsys.readouterr().out


def test_run_applies_set_by_id_or_title(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, GOOD)
    assert cli.main(["run", path, "--set", "2.factor=11", "--device", "cpu"]) == 2
    assert "node 2 (Scale), input 'factor': 11.0 is bigger than the maximum 10.0" in capsys.readouterr().err
    assert cli.main(["run", path, "--set", "start.value=-2000", "--device", "cpu"]) == 2
    assert "node 1 (Number), input 'value'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "9.factor=1"], "no node '9' in the workflow"),
        (["--set", "factor=1"], "expected NODE.INPUT=VALUE"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_run_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert cli.main(["run", _write(tmp_path, GOOD), *args]) == 2
    assert message in capsys.readouterr().err


def test_run_exits_1_when_a_node_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    failing = GOOD | {"2": {"class_type": "Fail", "inputs": {"x": ["1", 0]}}}
    assert cli.main(["run", _write(tmp_path, failing), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "node 2 (Fail) failed: RuntimeError: boom at 2.0" in err
    assert "not run because something upstream failed: 3" in err


def test_malformed_json_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{")
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.json is not valid JSON" in err and "Traceback" not in err


def test_validate_prints_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", _write(tmp_path, GOOD)]) == 0
    assert capsys.readouterr().out.startswith("ok: 3 nodes")
    broken = {
        "1": {"class_type": "Nope", "inputs": {}},
        "2": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": "big"}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    assert cli.main(["validate", _write(tmp_path, broken)]) == 2
    out = capsys.readouterr().out
    assert "invalid workflow: 2 problems" in out
    assert "node 1 (Nope): no node type named 'Nope'" in out
    assert "node 2 (Scale), input 'factor': expected a FLOAT, got str 'big' [invalid_input_type]" in out
    assert cli.main(["validate", "--json", _write(tmp_path, broken)]) == 2
    assert set(json.loads(capsys.readouterr().out)["node_errors"]) == {"1", "2"}


def test_nodes_lists_types_with_inputs_and_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["nodes", "Scale"]) == 0
    out = capsys.readouterr().out
    assert (
        "Scale  [test]" in out
        and "in  factor: FLOAT = 2.0 [-10.0, 10.0]" in out
        and "out scaled: FLOAT" in out
    )
    assert cli.main(["nodes", "--json"]) == 0
    assert "Options" in json.loads(capsys.readouterr().out)
    assert cli.main(["nodes", "Nope"]) == 2


def test_schema_prints_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema", "--format", "ui"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "UiWorkflow"


def test_no_command_or_a_bad_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert cli.main(["run"]) == 2
    assert cli.main(["--help"]) == 0


class _EntryPoint:
    def __init__(self, name: str, obj: Any) -> None:
        self.name, self.value, self.obj = name, f"pkg:{name}", obj

    def load(self) -> Any:
        if isinstance(self.obj, Exception):
            raise self.obj
        return self.obj


def test_plugin_commands_load_only_when_named_and_broken_ones_say_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded: list[str] = []

    def register(sub: Any) -> None:
        loaded.append("hello")
        hello = sub.add_parser("hello")
        hello.set_defaults(func=lambda args: 7)

    eps = [
        _EntryPoint("broken", ModuleNotFoundError("No module named 'server.cli'")),
        _EntryPoint("hello", register),
    ]
    monkeypatch.setattr(cli, "entry_points", lambda group: eps)
    assert cli.main(["--help"]) == 0
    assert loaded == [] and "hello" in capsys.readouterr().out  # listed, not loaded
    assert cli.main(["hello"]) == 7 and loaded == ["hello"]
    assert cli.main(["broken"]) == 2
    assert "No module named 'server.cli'" in capsys.readouterr().err


def test_progress_bar_redraws_one_line(registry: Registry) -> None:
    stream = io.StringIO()
    printer = ProgressPrinter(GOOD, stream=stream, live=True)
    printer(Executing("p", node="2"))
    printer(Progress("p", node="2", value=1, max=2))
    printer(Progress("p", node="2", value=2, max=2))
    printer(Executing("p", node="3"))
    text = stream.getvalue()
    assert text.count("\r") == 2 and "node 2 (Scale) [" in text and "2/2" in text and text.endswith("\n")


def test_summary_lists_written_files(tmp_path: Path) -> None:
    from graph_runtime.executor import RunResult
    from graph_runtime.progress import summary

    result = RunResult(
        "p", "success", ui={"9": {"images": [{"filename": "a.png", "subfolder": "x", "type": "output"}]}}
    )
    assert summary(result, tmp_path) == [
        "success: 0 nodes run, 0 cached, 1 outputs written",
        f"  wrote {tmp_path / 'x' / 'a.png'}",
    ]


def test_parse_assignment_reads_json_or_text() -> None:
    assert cli.parse_assignment("3.steps=20") == ("3", "steps", 20)
    assert cli.parse_assignment("82:193.text=a cat") == ("82:193", "text", "a cat")
    assert cli.parse_assignment("a.b.flag=false") == ("a.b", "flag", False)
    assert cli.parse_assignment("1.sizes=[1, 2]") == ("1", "sizes", {"__value__": [1, 2]})
    with pytest.raises(cli.UsageError):
        cli.parse_assignment("nodot=1")
    assert isinstance(cli.build_parser(), argparse.ArgumentParser)


@pytest.mark.parametrize("command", ["validate", "run", "convert"])
def test_hostile_files_are_one_clear_line_never_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    for path, message in ((deep, "nested too deeply"), (fake, "not a readable PNG")):
        extra = [str(tmp_path / "out.json")] if command == "convert" else []
        assert cli.main([command, str(path), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("target", ["missing/folder/out.json", "."])
def test_convert_into_a_missing_folder_or_onto_a_folder_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    assert cli.main(["convert", _write(tmp_path, GOOD), str(tmp_path / target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("guidegraph convert: cannot write") and "Traceback" not in err
