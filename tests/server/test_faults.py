"""Every fault gets a clean answer: storage faults (507 naming the folder), huge numbers, dropped clients,
failed jobs the editor can still list, and an outcome recorded once the database can be written again."""

from __future__ import annotations

import asyncio
import errno
import logging
import shutil
import socket
import sqlite3
from typing import Any

import pytest

from graph_runtime.registry import Registry
from server import state
from server.app import create_app
from server.config import ServerConfig
from tests.server.conftest import failing_prompt, make_config, queue, served, square_prompt, wait_done
from tests.server.test_files import form, png_bytes
from tests.server.testnodes import NODES


async def test_a_number_of_401_digits_is_a_400_not_a_500(client) -> None:
    for number in (10**400, -(10**400), 2**53 + 1):
        response = await client.post("/prompt", json={"prompt": square_prompt(), "number": number})
        assert response.status == 400, number
        assert (await response.json())["error"]["type"] == "invalid_prompt"
    assert (await client.post("/prompt", json={"prompt": square_prompt(), "number": 2**53})).status == 200


async def test_a_failed_job_carries_every_field_the_editors_job_schema_requires(client) -> None:
    failed = await queue(client, failing_prompt())
    await wait_done(client, failed["prompt_id"])
    [job] = (await (await client.get("/api/jobs", params={"status": "failed"})).json())["jobs"]
    error = job["execution_error"]
    assert error["node_id"] == "2" and error["node_type"] == "Explode"
    assert isinstance(error["exception_message"], str) and isinstance(error["exception_type"], str)
    assert isinstance(error["traceback"], list) and all(isinstance(line, str) for line in error["traceback"])


async def test_an_old_row_without_a_traceback_is_completed_for_the_editor(client) -> None:
    from server.store import _job_error

    assert _job_error({"node_id": None, "exception_message": "x"}) == {
        "node_id": "",
        "node_type": "",
        "exception_message": "x",
        "exception_type": "Error",
        "traceback": [],
    }


async def test_an_output_folder_replaced_by_a_file_is_a_507_naming_it(make_client, tmp_path) -> None:
    client = await make_client()
    config: ServerConfig = client.app[state.CONFIG]
    shutil.rmtree(config.input)
    config.input.write_text("not a folder")
    response = await client.post("/upload/image", data=form(png_bytes()))
    assert response.status == 507
    body = await response.json()
    assert body["error"]["type"] == "insufficient_storage"
    assert body["error"]["message"].startswith("the input folder (") and str(tmp_path) not in str(body)
    view = await client.get("/view", params={"filename": "x.png", "type": "input"})
    assert view.status == 507


@pytest.mark.parametrize("on_loop", [True, False], ids=["commit on the loop", "commit in a thread"])
@pytest.mark.parametrize(
    "message", ["database or disk is full", "attempt to write a readonly database", "disk I/O error"]
)
async def test_a_database_that_cannot_be_written_is_a_507_naming_the_data_folder(
    client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, message: str, on_loop: bool
) -> None:
    def full(*args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError(message)

    store = client.app[state.STORE]  # the intake commits in batches, on the loop or else in a thread
    monkeypatch.setattr(store, "add_many_now", full if on_loop else lambda batch: None)
    monkeypatch.setattr(store, "add_many", full)
    with caplog.at_level(logging.ERROR, logger="server.security"):
        response = await client.post("/prompt", json={"prompt": square_prompt()})
    assert response.status == 507
    assert (await response.json())["error"]["message"].startswith("the data folder (")
    assert "Traceback" not in caplog.text and "the data folder" in caplog.text


async def test_an_outcome_is_recorded_once_the_database_can_be_written_again(
    client, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.app[state.STORE]
    real_finish, attempts = store.finish, []

    def full_twice(*args: Any, **kwargs: Any) -> None:
        attempts.append(args[0])
        if len(attempts) <= 2:
            raise sqlite3.OperationalError("database or disk is full")
        real_finish(*args, **kwargs)

    monkeypatch.setattr(store, "finish", full_twice)
    answer = await queue(client, square_prompt())
    entry = await wait_done(client, answer["prompt_id"], timeout=10)
    assert entry["status"]["status_str"] == "success" and len(attempts) == 3
    running, pending = store.queue()
    assert running == [] and pending == []


async def test_a_client_that_drops_mid_body_is_not_an_internal_error(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    # served as ``guidegraph serve`` runs it: run_app does not cancel handlers (the test client's does)
    app = create_app(make_config(tmp_path), registry=Registry(NODES))
    head = (
        "POST /settings/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n"
    )
    async with served(app) as port:
        with caplog.at_level(logging.INFO):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(head.encode() + b'{"a": ' + b" " * 1000)
            await asyncio.sleep(0.2)
            sock.close()
            await asyncio.sleep(0.3)
    assert "client closed the connection during POST /settings/x" in caplog.text
    assert "unexpected error" not in caplog.text and "Traceback" not in caplog.text


async def test_a_prompt_estimated_beyond_the_free_memory_is_refused_with_a_clear_400(client) -> None:
    response = await client.post(
        "/prompt", json={"prompt": {"1": {"class_type": "Allocate", "inputs": {"gigabytes": 1 << 20}}}}
    )
    assert response.status == 400
    body = await response.json()
    assert body["error"]["type"] == "memory_budget_exceeded"
    assert "estimated 1.05e+06 GiB" in body["error"]["details"]
    assert body["node_errors"]["1"]["errors"][0]["type"] == "memory_budget_exceeded"
    assert body["node_errors"]["1"]["class_type"] == "Allocate"
    assert (await (await client.get("/prompt")).json())["exec_info"]["queue_remaining"] == 0


async def test_the_memory_budget_is_configurable(make_client) -> None:
    client = await make_client(memory_budget_bytes=1 << 30)
    small = {"1": {"class_type": "Allocate", "inputs": {"gigabytes": 0}}}
    assert (await client.post("/prompt", json={"prompt": small})).status == 200
    large = {"1": {"class_type": "Allocate", "inputs": {"gigabytes": 2}}}
    assert (await client.post("/prompt", json={"prompt": large})).status == 400


async def test_an_allocation_that_fails_during_a_run_is_an_execution_error_and_the_server_goes_on(
    make_client,
) -> None:
    client = await make_client(memory_budget_bytes=1 << 62)  # let it through, as a wrong estimate would
    huge = await queue(client, {"1": {"class_type": "Allocate", "inputs": {"gigabytes": 1 << 20}}})
    entry = await wait_done(client, huge["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    [error] = [data for name, data in entry["status"]["messages"] if name == "execution_error"]
    assert error["node_id"] == "1" and "allocate" in error["exception_message"].lower()
    after = await queue(client, square_prompt())
    assert (await wait_done(client, after["prompt_id"]))["status"]["status_str"] == "success"


async def test_a_full_disk_while_writing_a_setting_is_a_507_naming_the_data_folder(
    client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() or fsync() say it: no name

    with monkeypatch.context() as patched:
        patched.setattr("server.files.os.fsync", full)
        response = await client.post("/api/settings/Comfy.Theme", json="dark")
    assert response.status == 507
    message = (await response.json())["error"]["message"]
    assert message.startswith("the data folder (") and message.endswith("No space left on device")
    assert not [p for p in client.app[state.CONFIG].data_dir.rglob("*.part")]  # no partial file left
