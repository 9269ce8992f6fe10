"""POST /prompt, /queue, /history, /jobs, /interrupt and /free, as ComfyUI clients use them."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from PIL import Image

from server.config import ServerConfig
from tests.server.conftest import (
    UI_WORKFLOW,
    chain_prompt,
    failing_prompt,
    queue,
    slow_prompt,
    square_prompt,
    wait_done,
    wait_running,
)


async def test_runs_a_prompt_and_records_its_image_in_history(client, config: ServerConfig) -> None:
    answer = await queue(client, square_prompt(value=9), client_id="abc")
    assert set(answer) == {"prompt_id", "number", "node_errors"} and answer["node_errors"] == {}
    entry = await wait_done(client, answer["prompt_id"])
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    _number, prompt_id, prompt, extra_data, outputs = entry["prompt"]
    assert prompt_id == answer["prompt_id"] and prompt["2"]["class_type"] == "SaveSquare"
    assert extra_data["client_id"] == "abc" and outputs == ["2"]
    image = entry["outputs"]["2"]["images"][0]
    assert (config.output / image["filename"]).is_file()
    view = await client.get("/view", params=image)
    assert view.status == 200 and view.content_type == "image/png"


async def test_a_prompt_without_an_id_gets_a_time_ordered_uuid(client) -> None:
    """Version 7: its first 48 bits are the time in ms, so new ids append to the id index."""
    before = time.time_ns() // 1_000_000
    first = uuid.UUID((await queue(client, square_prompt(value=1)))["prompt_id"])
    await asyncio.sleep(0.002)
    second = uuid.UUID((await queue(client, square_prompt(value=2)))["prompt_id"])
    assert (first.version, second.version) == (7, 7) and first.variant == uuid.RFC_4122
    assert before <= first.int >> 80 < second.int >> 80 <= time.time_ns() // 1_000_000
    assert str(first) < str(second)


async def test_png_carries_the_prompt_and_the_editor_workflow(client, config: ServerConfig) -> None:
    extra = {"extra_pnginfo": {"workflow": UI_WORKFLOW}}
    answer = await queue(client, square_prompt(value=11), extra_data=extra)
    entry = await wait_done(client, answer["prompt_id"])
    path = config.output / entry["outputs"]["2"]["images"][0]["filename"]
    with Image.open(path) as image:
        text = image.text  # type: ignore[attr-defined]
    assert json.loads(text["prompt"])["1"]["inputs"]["value"] == 11
    assert json.loads(text["workflow"])["id"] == UI_WORKFLOW["id"]


async def test_api_prefix_serves_the_same_routes(client) -> None:
    answer = await (await client.post("/api/prompt", json={"prompt": square_prompt(value=1)})).json()
    await wait_done(client, answer["prompt_id"])
    assert answer["prompt_id"] in await (await client.get("/api/history")).json()


async def test_accepts_the_editor_ui_format(client) -> None:
    answer = await queue(client, UI_WORKFLOW)
    entry = await wait_done(client, answer["prompt_id"])
    assert entry["status"]["status_str"] == "success"


async def test_get_prompt_reports_queue_remaining(client) -> None:
    assert await (await client.get("/prompt")).json() == {"exec_info": {"queue_remaining": 0}}


async def test_rejects_a_body_without_prompt(client) -> None:
    response = await client.post("/prompt", json={"client_id": "x"})
    body = await response.json()
    assert response.status == 400 and body["error"]["type"] == "no_prompt" and body["node_errors"] == {}


async def test_rejects_out_of_range_values_with_node_errors_for_the_editor(client) -> None:
    response = await client.post("/prompt", json={"prompt": square_prompt(size=100_000)})
    body = await response.json()
    assert response.status == 400
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    errors = body["node_errors"]["2"]
    assert errors["class_type"] == "SaveSquare" and errors["dependent_outputs"] == ["2"]
    assert errors["errors"][0]["type"] == "value_bigger_than_max"
    assert errors["errors"][0]["extra_info"]["input_name"] == "size"
    assert await (await client.get("/queue")).json() == {"queue_running": [], "queue_pending": []}


async def test_rejects_unknown_node_types(client) -> None:
    response = await client.post("/prompt", json={"prompt": {"1": {"class_type": "Nope", "inputs": {}}}})
    assert response.status == 400
    body = await response.json()
    assert "error" in body and "node_errors" in body


async def test_partial_acceptance_runs_the_good_outputs_and_reports_the_bad(client) -> None:
    prompt = {
        **square_prompt(value=5),
        "3": {"class_type": "SaveSquare", "inputs": {"value": ["1", 0], "size": -4, "prefix": "x"}},
    }
    answer = await queue(client, prompt)
    assert "3" in answer["node_errors"] and "2" not in answer["node_errors"]
    entry = await wait_done(client, answer["prompt_id"])
    assert list(entry["outputs"]) == ["2"] and entry["prompt"][4] == ["2"]


async def test_a_prompt_is_validated_once_on_post_not_again_when_it_runs(client, monkeypatch) -> None:
    import graph_runtime.executor

    validated = []
    real = graph_runtime.executor.validate
    monkeypatch.setattr(graph_runtime.executor, "validate", lambda *a: validated.append(a) or real(*a))
    answer = await queue(client, square_prompt(value=11))
    entry = await wait_done(client, answer["prompt_id"])
    assert entry["status"]["completed"] is True and validated == []


async def test_partial_execution_targets_run_only_those_outputs(client) -> None:
    third = {"value": ["1", 0], "size": 4, "prefix": "third"}
    prompt = {**square_prompt(), "3": {"class_type": "SaveSquare", "inputs": third}}
    answer = await queue(client, prompt, partial_execution_targets=["3"])
    entry = await wait_done(client, answer["prompt_id"])
    assert list(entry["outputs"]) == ["3"]


async def test_input_faults_answer_4xx_json_and_queue_nothing(client) -> None:
    bad_bodies = [
        (b"{not json", "application/json"),
        (b'{"prompt": NaN}', "application/json"),
        (b'{"prompt": {"1": {"class_type": "Number", "inputs": {"value": Infinity}}}}', "application/json"),
        (b'{"prompt": 1e999}', "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"text"', "application/json"),
        (b"", "application/json"),
        ("[" * 5000 + "]" * 5000).encode(),
        (
            json.dumps({"prompt": {"1": {"class_type": "Number", "inputs": {"value": [[[[1]]]]}}}}).encode(),
            None,
        ),
        (b'{"prompt": []}', "application/json"),
        (b'{"prompt": {"1": "Number"}}', "application/json"),
        (b'{"prompt": {"1": {"class_type": 5}}}', "application/json"),
        (b"\xff\xfe", "application/json"),
    ]
    for item in bad_bodies:
        data, content_type = item if isinstance(item, tuple) else (item, None)
        headers = {"Content-Type": content_type} if content_type else {}
        response = await client.post("/prompt", data=data, headers=headers)
        assert 400 <= response.status < 500, (data[:60], response.status)
        body = await response.json()
        assert "error" in body and "Traceback" not in json.dumps(body)
    assert (await (await client.get("/prompt")).json())["exec_info"]["queue_remaining"] == 0
    answer = await queue(client, square_prompt())  # still healthy
    await wait_done(client, answer["prompt_id"])


async def test_refuses_bodies_over_the_size_cap(make_client) -> None:
    client = await make_client(max_json_bytes=1000)
    response = await client.post("/prompt", data=b"{" + b" " * 5000 + b"}")
    assert response.status == 413 and (await response.json())["error"]["type"] == "too_large"


async def test_refuses_prompts_over_the_node_limit_and_runs_a_long_chain_within_it(make_client) -> None:
    client = await make_client(max_prompt_nodes=502)
    response = await client.post("/prompt", json={"prompt": chain_prompt(501)})
    error = (await response.json())["error"]
    assert response.status == 400 and error["type"] == "invalid_prompt"
    assert "503 nodes" in error["message"] and "at most 502" in error["message"]
    answer = await queue(client, chain_prompt(500))
    assert (await wait_done(client, answer["prompt_id"]))["status"]["completed"] is True


async def test_refuses_an_unknown_preview_method(client) -> None:
    body = {"prompt": square_prompt(), "extra_data": {"preview_method": "fancy"}}
    response = await client.post("/prompt", json=body)
    error = (await response.json())["error"]
    assert response.status == 400 and "preview_method" in error["message"]


async def test_refuses_nesting_beyond_the_depth_cap(client) -> None:
    deep = {"prompt": square_prompt(), "extra_data": {"a": json.loads("[" * 100 + "]" * 100)}}
    response = await client.post("/prompt", json=deep)
    assert response.status == 400


async def test_refuses_a_prompt_id_already_in_use(client) -> None:
    await queue(client, square_prompt(), prompt_id="fixed-id")
    response = await client.post("/prompt", json={"prompt": square_prompt(), "prompt_id": "fixed-id"})
    assert response.status == 409
    bad = await client.post("/prompt", json={"prompt": square_prompt(), "prompt_id": "../etc"})
    assert bad.status == 400


async def test_secrets_are_never_stored_or_echoed(client) -> None:
    extra = {"auth_token_comfy_org": "tok-SECRET", "api_key_comfy_org": "key-SECRET", "other": 1}
    blocker = await queue(client, slow_prompt(steps=20, delay=0.02))
    answer = await queue(client, square_prompt(), extra_data=extra)
    queued = await (await client.get("/queue")).text()
    assert "SECRET" not in queued and '"other"' in queued
    await wait_done(client, blocker["prompt_id"])
    await wait_done(client, answer["prompt_id"])
    for path in ("/history", f"/history/{answer['prompt_id']}", "/jobs", f"/jobs/{answer['prompt_id']}"):
        assert "SECRET" not in await (await client.get(path)).text(), path


async def test_queue_lists_running_and_pending_as_five_tuples_and_deletes_pending(client) -> None:
    running = await queue(client, slow_prompt(steps=40, delay=0.02))
    await wait_running(client, running["prompt_id"])
    first = await queue(client, square_prompt(value=1))
    second = await queue(client, square_prompt(value=2))
    await asyncio.sleep(0.2)
    state = await (await client.get("/queue")).json()
    assert [item[1] for item in state["queue_running"]] == [running["prompt_id"]]
    assert [item[1] for item in state["queue_pending"]] == [first["prompt_id"], second["prompt_id"]]
    assert all(len(item) == 5 for item in state["queue_pending"])
    await client.post("/queue", json={"delete": [first["prompt_id"]]})
    state = await (await client.get("/queue")).json()
    assert [item[1] for item in state["queue_pending"]] == [second["prompt_id"]]
    await client.post("/queue", json={"clear": True})
    assert (await (await client.get("/queue")).json())["queue_pending"] == []
    await client.post("/interrupt", json={})
    entry = await wait_done(client, running["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    assert any(m[0] == "execution_interrupted" for m in entry["status"]["messages"])


async def test_front_puts_a_prompt_ahead_of_the_queue(client) -> None:
    blocker = await queue(client, slow_prompt(steps=15, delay=0.02))
    await wait_running(client, blocker["prompt_id"])
    late = await queue(client, square_prompt(value=1))
    early = await queue(client, square_prompt(value=2), front=True)
    await asyncio.sleep(0.05)
    pending = (await (await client.get("/queue")).json())["queue_pending"]
    assert [item[1] for item in pending] == [early["prompt_id"], late["prompt_id"]]
    for answer in (blocker, late, early):
        await wait_done(client, answer["prompt_id"])


async def test_interrupt_by_prompt_id_only_stops_that_prompt(client) -> None:
    running = await queue(client, slow_prompt(steps=200, delay=0.01))
    await asyncio.sleep(0.2)
    other = await (await client.post("/interrupt", json={"prompt_id": "not-running"})).json()
    assert other == {"interrupted": False}
    hit = await (await client.post("/interrupt", json={"prompt_id": running["prompt_id"]})).json()
    assert hit == {"interrupted": True}
    entry = await wait_done(client, running["prompt_id"], timeout=2.0)
    assert entry["status"]["completed"] is False


async def test_a_failing_node_fails_its_prompt_and_the_next_one_runs(client) -> None:
    bad = await queue(client, failing_prompt())
    good = await queue(client, square_prompt(value=4))
    entry = await wait_done(client, bad["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    error = dict(entry["status"]["messages"])["execution_error"]
    assert error["node_id"] == "2" and error["node_type"] == "Explode"
    assert "exploded" in error["exception_message"] and "/very/secret" not in error["exception_message"]
    assert (await wait_done(client, good["prompt_id"]))["status"]["status_str"] == "success"


async def test_history_is_paginated_and_can_be_deleted_and_cleared(client) -> None:
    ids = []
    for value in range(4):
        ids.append((await queue(client, square_prompt(value=value)))["prompt_id"])
    for prompt_id in ids:
        await wait_done(client, prompt_id)
    assert list(await (await client.get("/history", params={"max_items": 2})).json()) == ids[2:]
    page = await (await client.get("/history", params={"max_items": 2, "offset": 1})).json()
    assert list(page) == ids[1:3]
    assert (await client.get("/history", params={"max_items": "x"})).status == 400
    await client.post("/history", json={"delete": [ids[0]]})
    assert await (await client.get(f"/history/{ids[0]}")).json() == {}
    await client.post("/history", json={"clear": True})
    assert await (await client.get("/history")).json() == {}


async def test_history_is_bounded(make_client) -> None:
    client = await make_client(history_limit=3)
    ids = [(await queue(client, square_prompt(value=v)))["prompt_id"] for v in range(5)]
    await wait_done(client, ids[-1])  # one worker: the others finished before it
    assert list(await (await client.get("/history")).json()) == ids[2:]


async def test_jobs_view_pages_filters_and_details(client) -> None:
    done = await queue(client, square_prompt(value=3))
    await wait_done(client, done["prompt_id"])
    failed = await queue(client, failing_prompt())
    await wait_done(client, failed["prompt_id"])
    body = await (await client.get("/api/jobs", params={"status": "completed,failed", "limit": 1})).json()
    assert body["pagination"] == {"offset": 0, "limit": 1, "total": 2, "has_more": True}
    assert body["jobs"][0]["id"] == failed["prompt_id"] and body["jobs"][0]["status"] == "failed"
    job = await (await client.get(f"/api/jobs/{done['prompt_id']}")).json()
    assert job["status"] == "completed" and job["outputs_count"] == 1
    assert job["preview_output"]["nodeId"] == "2" and job["preview_output"]["mediaType"] == "images"
    assert job["outputs"]["2"]["images"] and job["workflow"]["prompt"]["1"]["class_type"] == "Number"
    assert isinstance(job["create_time"], int) and job["execution_end_time"] >= job["execution_start_time"]
    assert (await client.get("/api/jobs/nope")).status == 404
    assert (await client.get("/api/jobs", params={"status": "weird"})).status == 400


async def test_cancel_jobs_cancels_pending_and_interrupts_running(client) -> None:
    running = await queue(client, slow_prompt(steps=200, delay=0.01))
    pending = await queue(client, square_prompt())
    await asyncio.sleep(0.2)
    body = await (await client.post("/api/jobs/cancel", json={"job_ids": [pending["prompt_id"]]})).json()
    assert body["cancelled"] == [pending["prompt_id"]]
    one = await (await client.post(f"/api/jobs/{running['prompt_id']}/cancel")).json()
    assert one["interrupted"] == [running["prompt_id"]]
    await wait_done(client, running["prompt_id"], timeout=2.0)
    job = await (await client.get(f"/api/jobs/{pending['prompt_id']}")).json()
    assert job["status"] == "cancelled"


async def test_free_clears_the_node_cache(client) -> None:
    await wait_done(client, (await queue(client, square_prompt(value=8)))["prompt_id"])
    assert (await client.post("/free", json={"unload_models": True, "free_memory": True})).status == 200
    assert (await client.post("/free", data=b"")).status == 200
    entry = await wait_done(client, (await queue(client, square_prompt(value=8)))["prompt_id"])
    cached = dict(entry["status"]["messages"])["execution_cached"]["nodes"]
    assert cached == []  # everything ran again
