"""The server's log for the editor's Console panel: a bounded buffer of recent lines, pushed to subscribers.

:class:`LogBuffer` is a logging handler on the root logger while the server runs. It keeps the last
``capacity`` lines as ``{"t": ISO time, "m": text}`` entries (``/internal/logs/raw``) and forwards new
ones as ``logs`` WebSocket messages to the clients that subscribed (``PATCH /internal/logs/subscribe``).
Records may come from any thread; they reach the event loop through ``call_soon_threadsafe``, batched
per loop tick. Absolute paths are redacted as everywhere else. The access log is left out: the editor
polls several routes every second, and those lines would bury everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import threading
from collections import deque
from datetime import UTC, datetime
from typing import Any

from server.hub import Hub
from server.redact import redact

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEFT_OUT = ("aiohttp.access",)


class LogBuffer(logging.Handler):
    """Recent log lines, and the clients that follow them."""

    def __init__(self, capacity: int = 2000, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter(FORMAT))
        self._entries: deque[dict[str, str]] = deque(maxlen=capacity)
        self._pending: list[dict[str, str]] = []
        self._guard = threading.Lock()
        self._subscribers: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hub: Hub | None = None

    def attach(self, loop: asyncio.AbstractEventLoop, hub: Hub) -> None:
        """Start collecting from the root logger and pushing through ``hub``."""
        self._loop, self._hub = loop, hub
        logging.getLogger().addHandler(self)

    def detach(self) -> None:
        logging.getLogger().removeHandler(self)
        self._loop = self._hub = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(LEFT_OUT):
            return
        try:
            text = redact(self.format(record))
        except Exception:
            self.handleError(record)
            return
        entry = {"t": datetime.fromtimestamp(record.created, UTC).isoformat(), "m": text + "\n"}
        with self._guard:
            self._entries.append(entry)
            first = not self._pending
            if self._subscribers:
                self._pending.append(entry)
        loop = self._loop
        if first and self._subscribers and loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the server is stopping
                loop.call_soon_threadsafe(self._flush)

    def entries(self) -> list[dict[str, str]]:
        with self._guard:
            return list(self._entries)

    def subscribe(self, client_id: str, enabled: bool) -> None:
        with self._guard:
            if enabled:
                self._subscribers.add(client_id)
            else:
                self._subscribers.discard(client_id)

    def _flush(self) -> None:
        with self._guard:
            batch, self._pending = self._pending, []
            subscribers = list(self._subscribers)
        hub = self._hub
        if not batch or hub is None:
            return
        for client_id in subscribers:
            if hub.connected(client_id):
                hub.send("logs", {"entries": batch, "size": terminal_size()}, client_id)
            else:  # gone: it subscribes again when it reconnects (the editor resyncs then)
                self.subscribe(client_id, False)


def terminal_size() -> dict[str, Any]:
    """``{cols, rows}`` of the server's terminal (80×24 when it has none)."""
    size = shutil.get_terminal_size()
    return {"cols": size.columns, "rows": size.lines}
