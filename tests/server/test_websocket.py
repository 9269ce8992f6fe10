"""The WebSocket stream: handshake, event order per kind of run, previews, slow clients."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from server import state
from tests.server.conftest import chain_prompt, failing_prompt, queue, slow_prompt, square_prompt, wait_done

END = {"execution_success", "execution_error", "execution_interrupted"}


async def connect(client: TestClient, sid: str = "client-1", flags: dict[str, Any] | None = None) -> Any:
    ws = await client.ws_connect(f"/ws?clientId={sid}")
    first = await ws.receive_json(timeout=5)
    assert first["type"] == "status" and first["data"]["sid"] == sid
    if flags is not None:
        await ws.send_json({"type": "feature_flags", "data": flags})
        answer = await ws.receive_json(timeout=5)
        while answer["type"] == "status":  # a queue broadcast may overtake the answer
            answer = await ws.receive_json(timeout=5)
        assert answer["type"] == "feature_flags" and answer["data"]["supports_preview_metadata"] is True
    return ws


async def collect(ws: Any, prompt_id: str, timeout: float = 10.0) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Messages of one prompt until it ends with ``executing`` node=None; binary frames apart."""
    messages: list[dict[str, Any]] = []
    frames: list[bytes] = []
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.BINARY:
                frames.append(msg.data)
                continue
            assert msg.type == WSMsgType.TEXT, msg
            data = json.loads(msg.data)
            if data["data"].get("prompt_id") not in (prompt_id, None):
                continue
            messages.append(data)
            if data["type"] == "executing" and data["data"]["node"] is None:
                return messages, frames


def kinds(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages if m["type"] not in ("status", "progress_state")]


async def test_status_with_sid_on_connect_and_a_generated_sid_when_none_is_given(client) -> None:
    ws = await client.ws_connect("/ws")
    first = await ws.receive_json(timeout=5)
    assert first["type"] == "status" and len(first["data"]["sid"]) >= 16
    assert first["data"]["status"] == {"exec_info": {"queue_remaining": 0}}
    await ws.close()


async def test_event_order_of_a_run_then_of_the_same_run_cached(client) -> None:
    ws = await connect(client)
    answer = await queue(client, square_prompt(value=21), client_id="client-1")
    messages, _ = await collect(ws, answer["prompt_id"])
    assert kinds(messages) == [
        "execution_start",
        "execution_cached",
        "executing",
        "executed",
        "executing",
        "executed",
        "execution_success",
        "executing",
    ]
    start = messages[[m["type"] for m in messages].index("execution_start")]["data"]
    assert isinstance(start["timestamp"], int)
    # every finished node is reported, so the editor's total progress moves (output None: no UI output)
    number, saved = (m["data"] for m in messages if m["type"] == "executed")
    assert number == {"node": "1", "display_node": "1", "output": None, "prompt_id": answer["prompt_id"]}
    assert saved["node"] == "2" and saved["output"]["images"][0]["type"] == "output"
    states = [m for m in messages if m["type"] == "progress_state"]
    assert states and states[-1]["data"]["nodes"]["2"]["state"] == "finished"

    again = await queue(client, square_prompt(value=21), client_id="client-1")
    messages, _ = await collect(ws, again["prompt_id"])
    assert kinds(messages) == [
        "execution_start",
        "execution_cached",
        "executed",
        "execution_success",
        "executing",
    ]
    cached = next(m for m in messages if m["type"] == "execution_cached")["data"]
    assert "2" in cached["nodes"]
    await ws.close()


async def test_event_order_of_a_failing_run(client) -> None:
    ws = await connect(client)
    answer = await queue(client, failing_prompt(), client_id="client-1")
    messages, _ = await collect(ws, answer["prompt_id"])
    assert kinds(messages) == [
        "execution_start",
        "execution_cached",
        "executing",
        "executed",
        "executing",
        "execution_error",
        "executing",
    ]
    error = next(m for m in messages if m["type"] == "execution_error")["data"]
    assert error["node_id"] == "2" and error["node_type"] == "Explode"
    assert error["exception_type"] == "ValueError" and "exploded" in error["exception_message"]
    assert isinstance(error["traceback"], list) and error["current_inputs"]["value"] == ["3"]
    assert "/very/secret/place" not in json.dumps(error)
    await ws.close()


async def test_event_order_of_an_interrupted_run_stopping_within_a_step(client) -> None:
    ws = await connect(client)
    answer = await queue(client, slow_prompt(steps=500, delay=0.01), client_id="client-1")
    seen_progress = 0
    async with asyncio.timeout(5):
        while seen_progress < 3:
            msg = await ws.receive()
            if msg.type == WSMsgType.TEXT:
                seen_progress += json.loads(msg.data)["type"] == "progress"
    await client.post("/interrupt")
    messages, _ = await collect(ws, answer["prompt_id"], timeout=2.0)
    assert kinds(messages)[-2:] == ["execution_interrupted", "executing"]
    steps_after = [m for m in messages if m["type"] == "progress"]
    assert len(steps_after) <= 3  # stopped at the next step, not at the end
    interrupted = next(m for m in messages if m["type"] == "execution_interrupted")["data"]
    assert interrupted["node_id"] == "1" and interrupted["node_type"] == "SlowSteps"
    await ws.close()


async def test_progress_and_binary_previews_of_both_kinds(client) -> None:
    plain = await connect(client, "plain")
    rich = await connect(client, "rich", flags={"supports_preview_metadata": True})
    answer = await queue(client, slow_prompt(steps=3, delay=0.01), client_id="rich")
    messages, frames = await collect(rich, answer["prompt_id"])
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 3, "1"), (2, 3, "1"), (3, 3, "1")]
    assert len(frames) == 3
    kind, length = struct.unpack(">II", frames[0][:8])
    assert kind == 4
    meta = json.loads(frames[0][8 : 8 + length])
    assert meta["prompt_id"] == answer["prompt_id"] and meta["node_id"] == "1"
    assert frames[0][8 + length :].startswith(b"\xff\xd8")  # JPEG
    await rich.close()

    body = {"client_id": "plain", "extra_data": {"preview_method": "auto"}}  # an API client that asks
    answer = await queue(client, slow_prompt(steps=2, delay=0.01), **body)
    _, frames = await collect(plain, answer["prompt_id"])
    assert [struct.unpack(">II", f[:8]) for f in frames] == [(1, 1), (1, 1)]
    assert frames[0][8:].startswith(b"\xff\xd8")
    await plain.close()


async def test_no_previews_for_a_client_that_never_asked_nor_with_preview_method_none(client) -> None:
    plain = await connect(client, "plain")
    answer = await queue(client, slow_prompt(steps=3, delay=0.01), client_id="plain")
    messages, frames = await collect(plain, answer["prompt_id"])
    assert frames == [] and len([m for m in messages if m["type"] == "progress"]) == 3
    await plain.close()

    rich = await connect(client, "rich", flags={"supports_preview_metadata": True})
    body = {"client_id": "rich", "extra_data": {"preview_method": "none"}}
    answer = await queue(client, slow_prompt(steps=3, delay=0.01), **body)
    _, frames = await collect(rich, answer["prompt_id"])
    assert frames == []
    await rich.close()


async def test_a_large_prompt_streams_linear_bytes_and_keeps_its_client(make_client) -> None:
    """A chain of 2,000 nodes: the submitter stays connected, sees every lifecycle message, and gets
    far fewer progress_state bytes than one full state per node would cost (quadratic)."""
    client = await make_client(ws_queue_size=16)
    ws = await connect(client, "big")
    nodes = 2000
    answer = await queue(client, chain_prompt(nodes), client_id="big")
    received = 0
    states = []
    async with asyncio.timeout(30):
        while True:
            msg = await ws.receive()
            assert msg.type == WSMsgType.TEXT, msg
            received += len(msg.data)
            data = json.loads(msg.data)
            if data["type"] == "progress_state":
                states.append(data["data"]["nodes"])
            if data["type"] == "executing" and data["data"]["node"] is None:
                break
    assert not ws.closed
    full_state_bytes = len(json.dumps(states[-1], separators=(",", ":")))
    assert len(states[-1]) == nodes + 2 and all(n["state"] == "finished" for n in states[-1].values())
    assert received < 10 * full_state_bytes  # one full state per node would be ~1,000 times that
    assert (await wait_done(client, answer["prompt_id"]))["status"]["completed"] is True
    await ws.close()


async def test_status_is_broadcast_and_late_clients_get_the_queue_length(client) -> None:
    running = await queue(client, slow_prompt(steps=30, delay=0.02))
    await queue(client, square_prompt())
    ws = await client.ws_connect("/ws?clientId=late")
    first = await ws.receive_json(timeout=5)
    assert first["data"]["status"]["exec_info"]["queue_remaining"] == 2 and first["data"]["sid"] == "late"
    await client.post("/interrupt", json={"prompt_id": running["prompt_id"]})
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            data = json.loads(msg.data) if msg.type == WSMsgType.TEXT else {"type": "binary"}
            if data["type"] == "status" and data["data"]["status"]["exec_info"]["queue_remaining"] == 0:
                break
    await ws.close()


async def test_a_client_that_never_reads_does_not_block_the_others(make_client) -> None:
    client = await make_client(ws_queue_size=64)
    stuck = await client.ws_connect("/ws?clientId=stuck")  # never reads
    ws = await connect(client, "reader")
    answers = [await queue(client, slow_prompt(steps=200, delay=0.0), client_id="stuck") for _ in range(3)]
    answers.append(await queue(client, square_prompt(value=99), client_id="reader"))
    messages, _ = await collect(ws, answers[-1]["prompt_id"])
    assert "execution_success" in kinds(messages)
    for answer in answers[:-1]:
        assert (await wait_done(client, answer["prompt_id"]))["status"]["completed"] is True
    await stuck.close()
    await ws.close()


async def test_a_reconnecting_client_can_catch_up_from_jobs_and_history(client) -> None:
    ws = await connect(client, "flaky")
    answer = await queue(client, square_prompt(value=33), client_id="flaky")
    await ws.close()
    await wait_done(client, answer["prompt_id"])
    ws = await connect(client, "flaky")
    jobs = await (await client.get("/api/jobs", params={"status": "completed"})).json()
    assert jobs["jobs"][0]["id"] == answer["prompt_id"]
    assert jobs["jobs"][0]["preview_output"]["filename"].startswith("sq_")
    await ws.close()


async def test_ignores_garbage_from_clients(client) -> None:
    ws = await connect(client)
    await ws.send_str("not json")
    await ws.send_bytes(b"\x00\x01")
    await ws.send_json({"type": "feature_flags", "data": "nonsense"})
    answer = await ws.receive_json(timeout=5)
    assert answer["type"] == "feature_flags"
    await ws.close()


async def statuses_until_quiet(ws: Any, quiet: float = 0.3) -> list[int]:
    """queue_remaining of every status frame until nothing arrives for ``quiet`` seconds."""
    seen: list[int] = []
    while True:
        try:
            msg = await ws.receive(timeout=quiet)
        except TimeoutError:
            return seen
        data = json.loads(msg.data) if msg.type == WSMsgType.TEXT else {"type": "binary"}
        if data["type"] == "status":
            seen.append(data["data"]["status"]["exec_info"]["queue_remaining"])


async def test_status_changes_in_one_tick_reach_each_client_once_with_the_latest_value(client) -> None:
    first, second = await connect(client, "first"), await connect(client, "second")
    hub = client.app[state.HUB]
    before = hub.status_broadcasts
    for remaining in (3, 2, 1):
        hub.status_source = lambda remaining=remaining: remaining
        hub.send_status()
    assert await statuses_until_quiet(first) == [1]
    assert await statuses_until_quiet(second) == [1]
    assert hub.status_broadcasts == before + 1
    await first.close()
    await second.close()


async def test_status_broadcasts_are_spaced_by_the_interval(make_client) -> None:
    client = await make_client(ws_status_interval_s=0.25)
    ws = await connect(client, "watcher")
    hub = client.app[state.HUB]
    hub.status_source = lambda: 5
    hub.send_status()
    assert (await ws.receive_json(timeout=5))["data"]["status"]["exec_info"]["queue_remaining"] == 5
    loop = asyncio.get_running_loop()
    sent = loop.time()
    for remaining in (4, 3):
        hub.status_source = lambda remaining=remaining: remaining
        hub.send_status()
    later = await ws.receive_json(timeout=5)
    assert later["data"]["status"]["exec_info"]["queue_remaining"] == 3
    assert loop.time() - sent >= 0.2
    await ws.close()


async def test_queue_empty_status_arrives_after_the_last_prompts_success(make_client) -> None:
    client = await make_client(ws_status_interval_s=0.1)
    ws = await connect(client, "editor")
    answers = [await queue(client, square_prompt(value=40 + n), client_id="editor") for n in range(6)]
    last = answers[-1]["prompt_id"]
    order: list[tuple[str, Any]] = []
    async with asyncio.timeout(10):
        while True:
            data = await ws.receive_json()
            if data["type"] == "status":
                order.append(("status", data["data"]["status"]["exec_info"]["queue_remaining"]))
            elif data["type"] == "execution_success":
                order.append(("success", data["data"]["prompt_id"]))
            if order[-1:] == [("status", 0)] and ("success", last) in order:
                break
    succeeded = order.index(("success", last))
    assert ("status", 0) in order[succeeded:]
    assert [kind for kind, _ in order].count("status") < 3 * len(answers)  # 18 changes, coalesced
    assert await statuses_until_quiet(ws) == []  # nothing stale after the final 0
    await ws.close()
