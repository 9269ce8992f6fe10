"""What ComfyUI API clients rely on: undeclared inputs ignored with a warning (ComfyUI ignores them;
exports carry ``"upload": "image"`` on LoadImage)."""

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
