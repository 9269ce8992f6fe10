"""The API client tests and the WebSocket tests, again, against ``serve --ray`` (one Ray worker).

Their test functions are collected here too, where ``make_client`` builds a server whose prompts run
on a Ray actor instead of the in-process worker thread. Tests that never reach a worker (the same
handlers answer them before anything is queued) are left out: here they would only pay for
starting a Ray worker each.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

import tests.server.test_prompt_api as prompt_api
import tests.server.test_websocket as websocket
from graph_runtime.registry import Registry
from server.app import create_app
from server.config import ServerConfig
from server.ray_pool import RaySettings
from tests.server.conftest import make_config
from tests.server.test_ray import all_ready
from tests.server.testnodes import NODES

NEVER_DISPATCHED = {
    "test_get_prompt_reports_queue_remaining",
    "test_rejects_a_body_without_prompt",
    "test_rejects_out_of_range_values_with_node_errors_for_the_editor",
    "test_rejects_unknown_node_types",
    "test_refuses_bodies_over_the_size_cap",
    "test_refuses_nesting_beyond_the_depth_cap",
    "test_status_with_sid_on_connect_and_a_generated_sid_when_none_is_given",
}
for _module in (prompt_api, websocket):
    for _name, _test in vars(_module).items():
        if _name.startswith("test_") and _name not in NEVER_DISPATCHED:
            globals()[_name] = _test


@pytest.fixture
async def make_client(aiohttp_client: Any, tmp_path: Path, ray_cluster: Any) -> Any:
    async def make(config: ServerConfig | None = None, **overrides: Any) -> TestClient:
        settings = RaySettings(workers=1, make_registry=functools.partial(Registry, NODES))
        app = create_app(config or make_config(tmp_path, **overrides), registry=Registry(NODES), ray=settings)
        client = await aiohttp_client(app)
        await all_ready(client)  # as a user would: the tests time prompts, not the worker's start
        return client

    return make
