"""Inputs a node does not declare are ignored with a warning, as ComfyUI ignores them (its own API
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
