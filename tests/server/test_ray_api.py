"""The API client tests and the WebSocket tests, again, against ``serve --ray`` (one Ray worker).

Importing the test functions collects them here too, where ``make_client`` builds a server whose
prompts run on a Ray actor instead of the in-process worker thread.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from graph_runtime.registry import Registry
from server.app import create_app
from server.config import ServerConfig
from server.ray_pool import RaySettings
from tests.server.conftest import make_config
from tests.server.test_prompt_api import *  # noqa: F403
from tests.server.test_ray import all_ready
from tests.server.test_websocket import *  # noqa: F403
from tests.server.testnodes import NODES


@pytest.fixture
async def make_client(aiohttp_client: Any, tmp_path: Path, ray_cluster: Any) -> Any:
    async def make(config: ServerConfig | None = None, **overrides: Any) -> TestClient:
        settings = RaySettings(workers=1, make_registry=functools.partial(Registry, NODES))
        app = create_app(config or make_config(tmp_path, **overrides), registry=Registry(NODES), ray=settings)
        client = await aiohttp_client(app)
        await all_ready(client)  # as a user would: the tests time prompts, not the worker's start
        return client

    return make
