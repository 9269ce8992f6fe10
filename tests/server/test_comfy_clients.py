"""What ComfyUI API clients rely on: undeclared inputs ignored with a warning (ComfyUI ignores them: its
API exports carry ``"upload": "image"`` on LoadImage), the sampler and checkpoint lists, and a
workflow saved by ComfyUI's editor running through the server."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp.test_utils import TestClient

from tests.server.conftest import queue, square_prompt, wait_done


async def test_an_undeclared_input_is_accepted_logged_and_ignored(client: TestClient, caplog: Any) -> None:
    prompt = square_prompt()
    prompt["2"]["inputs"]["upload"] = "image"
    with caplog.at_level(logging.WARNING):
        answer = await queue(client, prompt)
    done = await wait_done(client, answer["prompt_id"])
    assert done["status"]["status_str"] == "success"
    assert any("'upload': not an input of SaveSquare, ignored" in r.getMessage() for r in caplog.records)


async def test_api_clients_get_ksampler_and_checkpoint_lists(aiohttp_client: Any, tmp_path: Any) -> None:
    from graph_runtime.registry import Registry
    from nodes import node_classes
    from nodes.diffusion.names import COMFY_SAMPLER_NAMES, COMFY_SCHEDULER_NAMES
    from server.app import create_app
    from tests.server.conftest import make_config

    (tmp_path / "ckpts").mkdir()
    (tmp_path / "ckpts" / "mine.safetensors").write_bytes(b"")
    import os

    os.environ["GUIDEGRAPH_MODEL_DIRS"] = f"checkpoints={tmp_path / 'ckpts'}"
    try:
        client = await aiohttp_client(create_app(make_config(tmp_path), registry=Registry(node_classes())))
        ks = (await (await client.get("/object_info/KSampler")).json())["KSampler"]["input"]["required"]
        assert ks["sampler_name"][0] == list(COMFY_SAMPLER_NAMES) and ks["scheduler"][0] == list(
            COMFY_SCHEDULER_NAMES
        )
        loader = (await (await client.get("/api/object_info/CheckpointLoaderSimple")).json())[
            "CheckpointLoaderSimple"
        ]
        assert "mine.safetensors" in loader["input"]["required"]["ckpt_name"][0]
    finally:
        del os.environ["GUIDEGRAPH_MODEL_DIRS"]


async def test_comfyuis_classic_default_workflow_runs_through_the_server(
    aiohttp_client: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    from families.sd.make import make_checkpoint
    from graph_runtime.registry import Registry
    from nodes import node_classes
    from server.app import create_app
    from tests.nodes.test_comfy_core import CKPT, classic_default_workflow
    from tests.server.conftest import make_config

    make_checkpoint("sd1", tmp_path / "ckpts" / CKPT, size="tiny")
    monkeypatch.setenv("GUIDEGRAPH_MODEL_DIRS", f"checkpoints={tmp_path / 'ckpts'}")
    client = await aiohttp_client(create_app(make_config(tmp_path), registry=Registry(node_classes())))
    answer = await queue(client, classic_default_workflow())  # the editor's format, as ComfyUI saves it
    done = await wait_done(client, answer["prompt_id"], timeout=120)
    assert done["status"]["status_str"] == "success"
    (image,) = done["outputs"]["9"]["images"]
    view = await client.get("/view", params={"filename": image["filename"], "type": "output"})
    assert view.status == 200 and view.content_type == "image/png"
