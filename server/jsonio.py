"""Reading request bodies defensively and answering errors as JSON.

Every input fault becomes a 4xx with ``{"error": {"type", "message", "details", "extra_info"}}``:
bodies over the size cap (413), malformed JSON, NaN or Infinity, nesting beyond the depth cap, and
values of the wrong shape (400).
"""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn

from aiohttp import web

SECRET_KEYS = frozenset({"auth_token_comfy_org", "api_key_comfy_org"})


class BadRequest(Exception):
    """An input fault; the error middleware answers it as JSON with ``status``."""

    def __init__(
        self, message: str, *, type: str = "bad_request", status: int = 400, details: str = ""
    ) -> None:
        super().__init__(message)
        self.type = type
        self.status = status
        self.details = details

    def body(self) -> dict[str, Any]:
        return error_body(self.type, str(self), self.details)


def error_body(type: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    return {"error": {"type": type, "message": message, "details": details, "extra_info": {}}, **extra}


def fail(message: str, *, type: str = "bad_request", status: int = 400, details: str = "") -> NoReturn:
    raise BadRequest(message, type=type, status=status, details=details)


def _reject_constant(name: str) -> Any:
    fail(f"{name} is not allowed in JSON", type="invalid_json")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        fail(f"number {text[:40]} is out of range", type="invalid_json")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def parse_json(raw: bytes, max_depth: int) -> Any:
    """Strict JSON: UTF-8, no NaN or Infinity, no number that overflows, at most ``max_depth`` deep."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        fail("the body is not UTF-8", type="invalid_json")
    try:
        value = _DECODER.decode(text)
    except BadRequest:
        raise
    except RecursionError:
        fail(f"the JSON body is nested deeper than {max_depth} levels", type="invalid_json")
    except ValueError as exc:
        fail("the body is not valid JSON", type="invalid_json", details=str(exc)[:200])
    # a body with no more brackets than the cap cannot nest deeper (the walk costs more than the parse)
    if raw.count(b"[") + raw.count(b"{") > max_depth and _depth(value) > max_depth:
        fail(f"the JSON body is nested deeper than {max_depth} levels", type="invalid_json")
    return value


def _depth(value: Any) -> int:
    """Deepest nesting of lists and objects, walked iteratively."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item)
    return deepest


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The raw body, refusing more than ``max_bytes`` before reading it all."""
    length = request.content_length
    if length is not None:
        if length > max_bytes:
            fail(f"the body is larger than {max_bytes} bytes", type="too_large", status=413)
        return await request.read()  # its declared length is within the cap: read at once
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            fail(f"the body is larger than {max_bytes} bytes", type="too_large", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(
    request: web.Request, max_bytes: int, max_depth: int, *, empty: Any = ..., kind: type | None = dict
) -> Any:
    """Parse the body as JSON; ``empty`` is returned for an empty body (else that is an error)."""
    raw = await read_body(request, max_bytes)
    if not raw.strip():
        if empty is ...:
            fail("a JSON body is required", type="invalid_json")
        return empty
    value = parse_json(raw, max_depth)
    if kind is not None and not isinstance(value, kind):
        fail(f"the JSON body must be an object, not {type(value).__name__}", type="invalid_json")
    return value


def strip_secrets(value: Any) -> Any:
    """A copy of ``value`` without the Comfy.org credentials, at any depth."""
    if isinstance(value, dict):
        return {k: strip_secrets(v) for k, v in value.items() if k not in SECRET_KEYS}
    if isinstance(value, list):
        return [strip_secrets(v) for v in value]
    return value


def query_int(request: web.Request, name: str, default: int, *, low: int = 0, high: int = 10**9) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        fail(f"query parameter {name} must be an integer", type="invalid_query")
    if not low <= value <= high:
        fail(f"query parameter {name} must be between {low} and {high}", type="invalid_query")
    return value


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    return raw.lower() in ("1", "true", "yes", "on")


# one encoder, not one per call (json.dumps builds one whenever it is given options)
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=str)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_ENCODER.encode)
