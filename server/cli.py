"""``guidegraph serve``: the ComfyUI-compatible backend and the editor, on http://127.0.0.1:8188."""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

from server.config import MiB, ServerConfig, is_loopback
from server.redact import redact

SECRET_FLAGS = ("--token",)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the ComfyUI editor and API",
        description="Serve the ComfyUI editor and a ComfyUI-compatible HTTP/WebSocket API.",
    )
    parser.add_argument("--listen", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument(
        "--token", default=None, help="access token (or GUIDEGRAPH_TOKEN); required beyond loopback"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("user"),
        help="queue, history, settings and saved workflows (default ./user)",
    )
    parser.add_argument("--output-dir", type=Path, default=None, help="default: output/ beside --data-dir")
    parser.add_argument("--input-dir", type=Path, default=None, help="default: input/ beside --data-dir")
    parser.add_argument("--temp-dir", type=Path, default=None, help="default: temp/ beside --data-dir")
    parser.add_argument(
        "--workflows-dir", type=Path, default=None, help="editor templates (default: the shipped workflows)"
    )
    parser.add_argument(
        "--default-workflow",
        default=None,
        help="template the editor opens first (default: showcase, else the first)",
    )
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--cache", default="lru", help="node cache policy (default lru)")
    parser.add_argument("--max-upload-mb", type=int, default=32)
    parser.add_argument(
        "--max-prompt-nodes",
        type=int,
        default=ServerConfig.max_prompt_nodes,
        help=f"refuse prompts with more nodes (default {ServerConfig.max_prompt_nodes:,})",
    )
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=None,
        help="torch's CPU threads (default: one fewer than the CPUs, leaving one to the server)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every HTTP request")
    parser.add_argument(
        "--memory-budget-mb",
        type=int,
        default=None,
        help="refuse prompts estimated to need more (default: the memory free when each is queued)",
    )
    parser.add_argument(
        "--rerun-interrupted",
        action="store_true",
        help="on start, queue again a prompt that was running when the server died (default: record it"
        " as interrupted; a prompt that itself kills the server would then run again at every start)",
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run prompts on Ray workers: a cluster's address (host:6379), or none for a local cluster",
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        default=None,
        metavar="N",
        help="with --ray: how many workers (default: one per GPU, else one)",
    )
    parser.set_defaults(func=serve)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def shown_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """The command line as /system_stats shows it: token values and absolute paths redacted."""
    out = ["guidegraph"]
    hide_next = False
    for arg in argv:
        name, eq, _ = arg.partition("=")
        if hide_next or (eq and name in SECRET_FLAGS):
            out.append(f"{name}=<redacted>" if eq and not hide_next else "<redacted>")
        else:
            out.append(redact(arg))
        hide_next = arg in SECRET_FLAGS
    return tuple(out)


def event_loop() -> asyncio.AbstractEventLoop:
    """The server's event loop: uvloop's where it is installed (a dependency except on Windows), which
    accepted a burst of posts 8% faster than asyncio's own (A/B in benchmarks/results/vs_comfyui.md)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from server.app import create_app
    from server.security import AccessLog

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = args.token or os.environ.get("GUIDEGRAPH_TOKEN") or None
    config = ServerConfig(
        listen=args.listen,
        port=args.port,
        token=token,
        data_dir=args.data_dir,
        output_dir=args.output_dir,
        input_dir=args.input_dir,
        temp_dir=args.temp_dir,
        workflows_dir=args.workflows_dir,
        default_workflow=args.default_workflow,
        device=args.device,
        cache=args.cache,
        max_upload_bytes=args.max_upload_mb * MiB,
        max_prompt_nodes=args.max_prompt_nodes,
        cpu_threads=args.cpu_threads,
        rerun_interrupted=args.rerun_interrupted,
        memory_budget_bytes=args.memory_budget_mb * MiB if args.memory_budget_mb else None,
        argv=shown_argv(sys.argv[1:]),
    )
    try:
        config.check()
        config.prepare_folders()
    except ValueError as exc:
        print(f"guidegraph serve: {exc}", file=sys.stderr)
        return 2
    if args.workers is not None and args.ray is None:
        print("guidegraph serve: --workers needs --ray", file=sys.stderr)
        return 2
    ray, started_ray = None, False
    if args.ray is not None:
        if importlib.util.find_spec("ray") is None:
            print("guidegraph serve: --ray needs Ray: pip install 'guidegraph[ray]'", file=sys.stderr)
            return 2
        from graph_runtime.cluster import connect
        from server.ray_pool import RaySettings

        try:
            started_ray = connect(args.ray or None, args.workers)  # here, to fail before binding
        except ConnectionError as exc:
            print(f"guidegraph serve: {exc}", file=sys.stderr)
            return 2
        ray = RaySettings(address=args.ray or None, workers=args.workers)
    app = create_app(config, ray=ray)
    app.on_startup.append(_freeze_startup_heap)  # after the app's own startup: store, worker, torch
    host = config.listen
    shown = f"[{host}]" if ":" in host else host
    where = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{config.port}/"
    if token and not is_loopback(host):
        where += "?token=<your token>"

    def announce(_: str) -> None:  # run_app calls this once the socket is bound and the worker is up
        print(f"guidegraph: the editor is at {where}", flush=True)

    access_log = logging.getLogger("aiohttp.access") if args.access_log else None
    try:
        web.run_app(
            app,
            host=host,
            port=config.port,
            print=announce,
            handle_signals=True,
            access_log=access_log,
            access_log_class=AccessLog,
            loop=event_loop(),
        )
    except (OSError, sqlite3.Error) as exc:  # the port is taken, the database cannot be opened, ...
        print(f"guidegraph serve: cannot start: {exc}", file=sys.stderr)
        return 2
    finally:
        if started_ray:
            import ray as ray_module

            ray_module.shutdown()
    return 0


GC_YOUNG_THRESHOLD = 10_000  # Python's default is 700


async def _freeze_startup_heap(_: web.Application) -> None:
    """Keep what the server made while starting (modules, torch, the registry: ~200,000 objects that
    live as long as the process) out of the cyclic collector's full passes, which otherwise rescan
    all of it every few thousand prompts and stall every request for ~100 ms. Objects made later
    (models, cached outputs) are collected as usual.

    The youngest generation is collected after 10,000 new objects rather than 700: a post makes a few
    hundred, and at 700 a burst of posts ran a collection every few of them. Measured side by side
    (A/B, 6 rounds of 600 posts from 20 clients), accepted posts/s rose 9%. Cycles are still
    collected within 10,000 allocations, which a running prompt makes in moments.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
