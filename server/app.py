"""The app factory and its one route table.

``create_app(config)`` wires the pieces: the SQLite store, the WebSocket hub, the worker thread with its
executor (started and stopped by ``cleanup_ctx``), the middlewares, and every route, mounted both at
``/`` and under ``/api/`` as ComfyUI does.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from graph_runtime.context import Paths
from graph_runtime.folders import register_folders
from server import state
from server.config import MiB, ServerConfig
from server.files import seed_example
from server.handlers import editor, files, history, info, internal, prompts, userdata, ws
from server.hub import Hub
from server.intake import Intake
from server.logs import LogBuffer
from server.security import Guard, json_errors, security_headers
from server.store import PromptStore
from server.templates import Templates, shipped_workflows
from server.worker import PromptWorker, Workers

if TYPE_CHECKING:
    from server.ray_pool import RaySettings

log = logging.getLogger(__name__)

Route = tuple[str, str, Callable[[web.Request], Any]]

API_ROUTES: list[Route] = [
    ("GET", "/ws", ws.websocket),
    ("GET", "/prompt", prompts.get_prompt),
    ("POST", "/prompt", prompts.post_prompt),
    ("GET", "/queue", prompts.get_queue),
    ("POST", "/queue", prompts.post_queue),
    ("POST", "/interrupt", prompts.interrupt),
    ("POST", "/free", prompts.free),
    ("GET", "/history", history.get_history),
    ("GET", "/history/{prompt_id}", history.get_history_one),
    ("POST", "/history", history.post_history),
    ("GET", "/jobs", history.get_jobs),
    ("POST", "/jobs/cancel", history.cancel_jobs),
    ("GET", "/jobs/{job_id}", history.get_job),
    ("POST", "/jobs/{job_id}/cancel", history.cancel_job),
    ("GET", "/object_info", info.object_info),
    ("GET", "/object_info/{node_class}", info.object_info_one),
    ("GET", "/system_stats", info.system_stats),
    ("GET", "/features", info.features),
    ("GET", "/embeddings", info.embeddings),
    ("GET", "/models", info.models),
    ("GET", "/models/{folder}", info.models_in_folder),
    ("GET", "/experiment/models", info.experiment_models),
    ("GET", "/experiment/models/{folder}", info.experiment_models_in_folder),
    ("GET", "/experiment/models/preview/{folder}/{index}/{file:.+}", info.model_preview),
    ("GET", "/view_metadata/{folder}", info.view_metadata),
    ("GET", "/i18n", info.i18n),
    ("GET", "/view", files.view),
    ("POST", "/upload/image", files.upload_image),
    ("GET", "/users", userdata.get_users),
    ("POST", "/users", userdata.post_users),
    ("GET", "/settings", userdata.get_settings),
    ("POST", "/settings", userdata.post_settings),
    ("GET", "/settings/{setting_id}", userdata.get_setting),
    ("POST", "/settings/{setting_id}", userdata.post_setting),
    ("GET", "/userdata", userdata.list_userdata),
    ("GET", "/v2/userdata", userdata.list_userdata_v2),
    ("GET", "/userdata/{file}", userdata.get_userdata),
    ("POST", "/userdata/{file}", userdata.post_userdata),
    ("DELETE", "/userdata/{file}", userdata.delete_userdata),
    ("POST", "/userdata/{file}/move/{dest}", userdata.move_userdata),
    ("GET", "/extensions", editor.extensions),
    ("GET", "/workflow_templates", editor.workflow_templates),
    ("GET", "/workflow_templates/{module}/{file}", editor.template_file),
    ("GET", "/global_subgraphs", editor.global_subgraphs),
    ("GET", "/guidegraph/default_workflow", editor.default_workflow),
    ("GET", "/internal/logs", internal.logs),
    ("GET", "/internal/logs/raw", internal.logs_raw),
    ("PATCH", "/internal/logs/subscribe", internal.logs_subscribe),
    ("GET", "/internal/files/{directory_type}", internal.files),
    ("GET", "/internal/folder_paths", internal.folder_paths),
]

EDITOR_ROUTES: list[Route] = [
    ("GET", "/", editor.index),
    ("GET", "/user.css", editor.empty_css),
    ("GET", "/templates/index.json", editor.templates_index),
    ("GET", "/templates/index_logo.json", editor.templates_logo),
    ("GET", "/templates/{file}", editor.core_template_file),
    ("GET", "/extensions/{pack}/docs/{node}.md", editor.node_help),
    ("GET", "/extensions/{pack}/docs/{node}/{locale}.md", editor.node_help),
    ("GET", "/extensions/guidegraph/{name}", editor.extension_file),
    ("GET", "/{tail:.*}", editor.static_file),  # last: the editor's own files
]


def routes() -> list[web.RouteDef]:
    """Every API route under ``/`` and ``/api``, then the editor's routes."""
    table = [
        web.route(method, prefix + path, handler)
        for prefix in ("", "/api")
        for method, path, handler in API_ROUTES
    ]
    return table + [web.route(method, path, handler) for method, path, handler in EDITOR_ROUTES]


def create_app(
    config: ServerConfig,
    *,
    registry: Any = None,
    executor_factory: Callable[[Any, ServerConfig], Any] | None = None,
    static_root: Path | None = None,
    ray: RaySettings | None = None,
) -> web.Application:
    """Build the application; nothing runs until it starts (then ``cleanup_ctx`` brings the worker up).

    ``ray``: run prompts on Ray workers (server.ray_pool) instead of this process's worker thread.
    """
    config.check()
    if registry is None:
        from graph_runtime.registry import Registry

        registry = Registry.from_entry_points()
    app = web.Application(
        middlewares=[json_errors, Guard(config).middleware, security_headers],
        client_max_size=config.max_upload_bytes + MiB,
    )
    app[state.CONFIG] = config
    app[state.REGISTRY] = registry
    app[state.HUB] = Hub(
        config.ws_queue_size, config.ws_send_timeout_s, config.ws_status_interval_s, config.ws_queue_max_bytes
    )
    app[state.TEMPLATES] = Templates(config.workflows_dir or shipped_workflows(), config.default_workflow)
    app[state.STATIC_ROOT] = (static_root or editor.editor_root()).resolve()
    app[state.EXECUTOR_FACTORY] = executor_factory or default_executor
    app[state.SETTINGS_LOCK] = asyncio.Lock()
    app[state.LOGS] = LogBuffer()
    app.cleanup_ctx.extend((_console_log, functools.partial(_store_and_worker, ray=ray)))
    app.on_shutdown.append(_close_sockets)
    app.add_routes(routes())
    return app


def default_executor(registry: Any, config: ServerConfig) -> Any:
    """The worker's executor; torch's CPU thread pool leaves a core to the event loop (see
    ``ServerConfig.cpu_threads``)."""
    import torch

    from graph_runtime.executor import Executor

    torch.set_num_threads(config.torch_threads)
    paths = Paths(output=config.output, temp=config.temp, input=config.input)
    return Executor(registry, device=config.device, cache=config.cache, paths=paths)


async def _console_log(app: web.Application) -> AsyncIterator[None]:
    """Collect the log for the editor's Console panel while the server runs."""
    app[state.LOGS].attach(asyncio.get_running_loop(), app[state.HUB])
    try:
        yield
    finally:
        app[state.LOGS].detach()


async def _store_and_worker(app: web.Application, ray: RaySettings | None) -> AsyncIterator[None]:
    """Open the database (recovering an interrupted run), then run the worker until shutdown."""
    config = app[state.CONFIG]
    for path in (config.output, config.input, config.temp):
        path.mkdir(parents=True, exist_ok=True)
    register_folders({"input": [config.input]})  # uploads become LoadImage choices
    if await asyncio.to_thread(seed_example, config.input):
        log.info("put example.png in the empty input folder %s", config.input)
    store = await asyncio.to_thread(PromptStore, config.data_dir / "guidegraph.sqlite3", config.history_limit)
    recovered = await asyncio.to_thread(store.recover, config.rerun_interrupted)
    if recovered:
        what = "queued again" if config.rerun_interrupted else "recorded as interrupted"
        log.warning("%d prompt(s) left running by the last shutdown: %s", len(recovered), what)
    templates = app[state.TEMPLATES]
    count = len(await asyncio.to_thread(templates.names))
    if count:
        log.info("editor templates: %d workflows from %s", count, templates.root)
    else:
        log.warning(
            "no workflows (*.ui.json) in %s: the editor's template browser will be empty", templates.root
        )
    intake = Intake(store)
    worker: Workers
    if ray is not None:
        from server.ray_pool import RayPool  # imports Ray only here

        worker = RayPool(store, app[state.HUB], asyncio.get_running_loop(), app[state.REGISTRY], config, ray)
    else:
        factory: Callable[[Any, ServerConfig], Any] = app[state.EXECUTOR_FACTORY]  # type: ignore[assignment]
        executor = await asyncio.to_thread(factory, app[state.REGISTRY], config)
        worker = PromptWorker(
            store,
            executor,
            app[state.HUB],
            asyncio.get_running_loop(),
            preview_max_side=config.preview_max_side,
            posters_waiting=intake.posters_waiting,
        )
    app[state.STORE] = store
    app[state.INTAKE] = intake
    app[state.HUB].status_source = store.queue_remaining
    app[state.WORKER] = worker
    await asyncio.to_thread(worker.start)
    try:
        yield
    finally:
        await asyncio.to_thread(worker.stop)
        await asyncio.to_thread(store.close)


async def _close_sockets(app: web.Application) -> None:
    await app[state.HUB].close_all()
