"""Looking back: ``/history`` (ComfyUI's shape) and ``/jobs`` (the editor's newer, paged view)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from server import state
from server.handlers.prompts import _ids, broadcast_status
from server.jsonio import fail, json_response, query_int, read_json
from server.store import FINISHED, STATUS_FOR_JOB


async def get_history(request: web.Request) -> web.Response:
    """``?max_items=&offset=``: without offset, the newest ``max_items`` entries (oldest first)."""
    config = request.app[state.CONFIG]
    max_items = query_int(request, "max_items", config.history_page_default, low=1, high=config.history_limit)
    offset = query_int(request, "offset", 0, low=-1, high=10**9)
    rows = await asyncio.to_thread(request.app[state.STORE].history, max_items, max(offset, 0))
    return json_response({row.id: row.history_entry() for row in rows})


async def get_history_one(request: web.Request) -> web.Response:
    """One entry, or ``{}`` while the prompt is not finished (or unknown)."""
    row = await asyncio.to_thread(request.app[state.STORE].get, request.match_info["prompt_id"])
    if row is None or row.status not in FINISHED:
        return json_response({})
    return json_response({row.id: row.history_entry()})


async def post_history(request: web.Request) -> web.Response:
    config = request.app[state.CONFIG]
    body = await read_json(request, config.max_json_bytes, config.max_json_depth)
    store = request.app[state.STORE]
    deleted = 0
    if body.get("clear") is True:
        deleted += await asyncio.to_thread(store.delete_history, None)
    if "delete" in body:
        deleted += await asyncio.to_thread(store.delete_history, _ids(body["delete"], "delete"))
    return json_response({"deleted": deleted})


async def get_jobs(request: web.Request) -> web.Response:
    """``?status=a,b&limit=&offset=&sort_by=create_time|execution_duration&sort_order=&workflow_id=``."""
    wanted = [s for s in request.query.get("status", "").split(",") if s] or list(STATUS_FOR_JOB)
    unknown = [s for s in wanted if s not in STATUS_FOR_JOB]
    if unknown:
        fail(f"unknown job status {unknown[0]!r}; use {', '.join(STATUS_FOR_JOB)}", type="invalid_query")
    statuses = [stored for s in wanted for stored in STATUS_FOR_JOB[s]]
    limit = query_int(request, "limit", 100, low=1, high=1000)
    offset = query_int(request, "offset", 0)
    sort_by = request.query.get("sort_by", "create_time")
    if sort_by not in ("create_time", "execution_duration"):
        fail("sort_by must be create_time or execution_duration", type="invalid_query")
    order = request.query.get("sort_order", "desc").lower()
    if order not in ("asc", "desc"):
        fail("sort_order must be asc or desc", type="invalid_query")
    rows, total = await asyncio.to_thread(
        request.app[state.STORE].jobs,
        statuses,
        limit,
        offset,
        sort_by=sort_by,
        descending=order == "desc",
        workflow_id=request.query.get("workflow_id"),
    )
    return json_response(
        {
            "jobs": [row.job() for row in rows],
            "pagination": {
                "offset": offset,
                "limit": limit,
                "total": total,
                "has_more": offset + len(rows) < total,
            },
        }
    )


async def get_job(request: web.Request) -> web.Response:
    row = await asyncio.to_thread(request.app[state.STORE].get, request.match_info["job_id"])
    if row is None:
        fail("no such job", type="not_found", status=404)
    return json_response(row.job(full=True))


async def cancel_jobs(request: web.Request) -> web.Response:
    """``{job_ids: [...]}``: pending jobs are cancelled, a running one is interrupted."""
    config = request.app[state.CONFIG]
    body = await read_json(request, config.max_json_bytes, config.max_json_depth)
    return await _cancel(request.app, _ids(body.get("job_ids"), "job_ids"))


async def cancel_job(request: web.Request) -> web.Response:
    return await _cancel(request.app, [request.match_info["job_id"]])


async def _cancel(app: web.Application, ids: list[str]) -> web.Response:
    cancelled = await asyncio.to_thread(app[state.STORE].cancel_pending, ids)
    worker = app[state.WORKER]
    interrupted = [i for i in ids if i not in cancelled and worker.interrupt(i)]
    await broadcast_status(app)
    return json_response({"cancelled": cancelled, "interrupted": interrupted})
