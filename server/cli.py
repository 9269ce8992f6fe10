"""``guidegraph serve``: the ComfyUI-compatible backend and the editor, on http://127.0.0.1:8188."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path

from server.config import ServerConfig, is_loopback


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
    parser.add_argument("--workflows-dir", type=Path, default=Path("workflows"))
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


def serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from server.app import create_app

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
        max_upload_bytes=args.max_upload_mb * 1024 * 1024,
        max_prompt_nodes=args.max_prompt_nodes,
        cpu_threads=args.cpu_threads,
    )
    try:
        config.check()
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
    host = config.listen
    shown = f"[{host}]" if ":" in host else host
    where = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{config.port}/"
    if token and not is_loopback(host):
        where += "?token=<your token>"
    print(f"guidegraph: the editor is at {where}", flush=True)
    access_log = logging.getLogger("aiohttp.access") if args.access_log else None
    try:
        web.run_app(app, host=host, port=config.port, print=None, handle_signals=True, access_log=access_log)
    finally:
        if started_ray:
            import ray as ray_module

            ray_module.shutdown()
    return 0
