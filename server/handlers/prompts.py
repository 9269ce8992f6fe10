"""Queueing work: ``/prompt``, ``/queue``, ``/interrupt``, ``/free``."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from aiohttp import web

from graph_runtime.memory import Estimate, available_bytes, estimate
from graph_runtime.registry import Registry
from graph_runtime.report import ValidationReport, error_record
from graph_runtime.validation import validate
from graph_runtime.workflow import WorkflowFormatError, to_api_prompt
from server import state
from server.config import ServerConfig
from server.jsonio import error_body, fail, json_response, read_json, strip_secrets
from server.messages import PREVIEW_METHODS
from server.store import DuplicatePromptId, NewPrompt, new_prompt_id

GiB = 1 << 30
MAX_NUMBER = 2**53  # a queue position; beyond this a float (and SQLite's REAL) cannot hold it exactly
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
INLINE_BYTES = 16 * 1024  # bodies up to this size are checked on the event loop (well under 1 ms)

log = logging.getLogger(__name__)


async def get_prompt(request: web.Request) -> web.Response:
    remaining = await asyncio.to_thread(request.app[state.STORE].queue_remaining)
    return json_response({"exec_info": {"queue_remaining": remaining}})


async def post_prompt(request: web.Request) -> web.Response:
    """Validate and enqueue; answer like ComfyUI (200 with partial node_errors, or 400)."""
    app = request.app
    config = app[state.CONFIG]
    body = await read_json(request, config.max_json_bytes, config.max_json_depth)
    if "prompt" not in body:
        return json_response(error_body("no_prompt", "No prompt provided", "", node_errors={}), 400)
    raw_prompt = body["prompt"]
    if not isinstance(raw_prompt, dict) or not raw_prompt:
        return _invalid("the prompt must be a non-empty object of nodes")
    registry = app[state.REGISTRY]
    targets = _targets(body.get("partial_execution_targets"))
    try:
        if (request.content_length or INLINE_BYTES + 1) <= INLINE_BYTES:  # cheaper than a thread hop
            checked = _convert_and_validate(raw_prompt, registry, targets, config)
        else:
            checked = await asyncio.to_thread(_convert_and_validate, raw_prompt, registry, targets, config)
    except WorkflowFormatError as exc:
        return _invalid("the prompt is not a valid workflow", str(exc))
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        return _invalid("the prompt could not be read", f"{type(exc).__name__}: {exc}")
    if isinstance(checked, web.Response):
        return checked
    prompt, report = checked
    if not report.runnable:
        comfy = report.to_comfy()
        return json_response({"error": comfy["error"], "node_errors": comfy["node_errors"]}, 400)

    prompt_id = body.get("prompt_id") or new_prompt_id()
    if not isinstance(prompt_id, str) or not _ID.match(prompt_id):
        fail("prompt_id must be 1-128 letters, digits or _.:-", type="invalid_prompt")
    number = _number(body.get("number"))
    client_id = body.get("client_id")
    if client_id is not None and (not isinstance(client_id, str) or len(client_id) > 128):
        fail("client_id must be a string", type="invalid_prompt")
    extra_data = body.get("extra_data") or {}
    if not isinstance(extra_data, dict):
        fail("extra_data must be an object", type="invalid_prompt")
    extra_data = strip_secrets(extra_data)
    method = extra_data.get("preview_method", "default")
    if method not in PREVIEW_METHODS:
        fail(f"extra_data.preview_method must be one of {', '.join(PREVIEW_METHODS)}", type="invalid_prompt")
    if client_id is not None:
        extra_data["client_id"] = client_id
    new = NewPrompt(
        prompt_id,
        prompt,
        extra_data,
        list(report.good_outputs),
        number=number,
        front=bool(body.get("front")),
        client_id=client_id,
        workflow_id=_workflow_id(extra_data),
    )
    try:
        number = await app[state.INTAKE].add(new, request.content_length)
    except DuplicatePromptId:
        fail(f"prompt_id {prompt_id} is already in use", type="duplicate_prompt_id", status=409)
    app[state.WORKER].wake(prompt_id, report)
    app[state.HUB].send_status()
    node_errors = {} if report.ok else report.node_errors
    return json_response({"prompt_id": prompt_id, "number": _int(number), "node_errors": node_errors})


def _convert_and_validate(
    raw_prompt: dict[str, Any], registry: Registry, targets: list[str] | None, config: ServerConfig
) -> tuple[dict[str, Any], ValidationReport] | web.Response:
    """(worker thread, or inline for small bodies) The API prompt and its report, or the answer
    refusing a prompt over the node limit or the memory budget. Free memory is read only when the
    estimate is not zero, so prompts of nodes without a footprint cost no extra read."""
    prompt = to_api_prompt(raw_prompt, registry)
    if len(prompt) > config.max_prompt_nodes:
        return _invalid(
            f"the prompt has {len(prompt)} nodes; this server runs at most {config.max_prompt_nodes}",
            "raise the server's node limit (ServerConfig.max_prompt_nodes, guidegraph serve"
            " --max-prompt-nodes) to run it",
        )
    report = validate(prompt, registry, targets)
    for warning in report.warnings:
        log.warning("prompt: %s", warning)
    if report.runnable:
        needed = estimate(report)
        if needed.total > 0:
            budget = config.memory_budget_bytes
            if budget is None:
                budget = _free_now(config.device)
            if needed.total > budget:
                return _over_budget(needed, budget, report)
    return prompt, report


_FREE_READ: dict[str | None, tuple[float, int]] = {}
FREE_MAX_AGE_S = 0.25  # a burst of posts reads free memory a few times a second, not once per post


def _free_now(device: str | None) -> int:
    """The memory free now on ``device``, read again when the last reading is older than
    ``FREE_MAX_AGE_S``."""
    now = time.monotonic()
    read_at, free = _FREE_READ.get(device, (-FREE_MAX_AGE_S, 0))
    if now - read_at >= FREE_MAX_AGE_S:
        free = available_bytes(device)
        _FREE_READ[device] = (now, free)
    return free


def _over_budget(needed: Estimate, budget: int, report: ValidationReport) -> web.Response:
    """400 in ComfyUI's shape, the error on the node that needs the most (the editor outlines it)."""
    node = needed.largest()
    details = (
        f"estimated {needed.total / GiB:.3g} GiB, the budget is {budget / GiB:.3g} GiB"
        " (--memory-budget-mb, default: the memory free now); lower the size or the batch"
        " (a Sampler's max_batch splits its batch)"
    )
    error = error_record("memory_budget_exceeded", "Prompt needs more memory than the server has", details)
    planned = report.nodes.get(node) if node else None
    node_errors = (
        {
            node: {
                "errors": [error],
                "dependent_outputs": report.good_outputs,
                "class_type": planned.cls.__name__,
            }
        }
        if node and planned
        else {}
    )
    return json_response({"error": error, "node_errors": node_errors}, 400)


def _invalid(message: str, details: str = "") -> web.Response:
    return json_response(error_body("invalid_prompt", message, details[:500], node_errors={}), 400)


def _targets(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > 10_000:
        fail("partial_execution_targets must be a list of node ids", type="invalid_prompt")
    return value or None


def _number(value: Any) -> float | None:
    if value is None:
        return None
    # ``not <=`` also refuses NaN and infinities; a huge int is compared exactly, never converted
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not abs(value) <= MAX_NUMBER:
        fail("number must be a finite number of magnitude at most 2**53", type="invalid_prompt")
    return float(value)


def _int(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _workflow_id(extra_data: dict[str, Any]) -> str | None:
    workflow = (
        (extra_data.get("extra_pnginfo") or {}).get("workflow")
        if isinstance(extra_data.get("extra_pnginfo"), dict)
        else None
    )
    found = workflow.get("id") if isinstance(workflow, dict) else None
    return found if isinstance(found, str) and len(found) <= 128 else None


async def broadcast_status(app: web.Application) -> None:
    app[state.HUB].send_status()


async def get_queue(request: web.Request) -> web.Response:
    running, pending = await asyncio.to_thread(request.app[state.STORE].queue)
    body: dict[str, Any] = {
        "queue_running": [r.queue_item() for r in running],
        "queue_pending": [r.queue_item() for r in pending],
    }
    workers = {r.id: r.worker for r in running if r.worker is not None}
    if workers:  # serve --ray: which worker runs each prompt
        body["workers"] = workers
    return json_response(body)


async def post_queue(request: web.Request) -> web.Response:
    """``{clear: true}`` empties the pending queue; ``{delete: [ids]}`` drops those pending prompts."""
    config = request.app[state.CONFIG]
    body = await read_json(request, config.max_json_bytes, config.max_json_depth)
    store = request.app[state.STORE]
    deleted = 0
    if body.get("clear") is True:
        deleted += await asyncio.to_thread(store.delete_pending, None)
    if "delete" in body:
        deleted += await asyncio.to_thread(store.delete_pending, _ids(body["delete"], "delete"))
    await broadcast_status(request.app)
    return json_response({"deleted": deleted})


def _ids(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > 10_000:
        fail(f"{name} must be a list of prompt ids", type="invalid_request")
    return value


async def interrupt(request: web.Request) -> web.Response:
    """No body or no prompt_id: stop whatever runs. With prompt_id: only if that prompt runs."""
    config = request.app[state.CONFIG]
    body = await read_json(request, config.max_json_bytes, config.max_json_depth, empty={})
    prompt_id = body.get("prompt_id")
    if prompt_id is not None and not isinstance(prompt_id, str):
        fail("prompt_id must be a string", type="invalid_request")
    interrupted = request.app[state.WORKER].interrupt(prompt_id)
    return json_response({"interrupted": interrupted})


async def free(request: web.Request) -> web.Response:
    """``{unload_models, free_memory}``: drop the node cache between prompts."""
    config = request.app[state.CONFIG]
    body = await read_json(request, config.max_json_bytes, config.max_json_depth, empty={})
    if body.get("unload_models") is True or body.get("free_memory") is True:
        request.app[state.WORKER].request_free()
    return json_response({})
