"""The server over the test nodes, for the restart test and the server benchmark (``python -m`` it)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from aiohttp import web

from graph_runtime.registry import Registry
from server.app import create_app
from server.config import ServerConfig
from tests.server.testnodes import NODES


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--workflows-dir", type=Path, required=True)
    parser.add_argument("--builtin", action="store_true", help="use the installed node packs instead")
    parser.add_argument("--ws-status-interval", type=float, default=ServerConfig.ws_status_interval_s)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = ServerConfig(
        port=args.port,
        data_dir=args.data_dir,
        workflows_dir=args.workflows_dir,
        ws_status_interval_s=args.ws_status_interval,
    )
    registry = Registry.from_entry_points() if args.builtin else Registry(NODES)
    web.run_app(create_app(config, registry=registry), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
