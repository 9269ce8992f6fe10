"""Server settings: where it listens, where it keeps its state, and the limits it enforces."""

from __future__ import annotations

import ipaddress
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1024 * 1024


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``create_app`` needs to know; the CLI fills it from flags and the environment.

    ``data_dir`` holds the SQLite database and the user's settings and saved workflows; ``output``,
    ``input`` and ``temp`` default to folders beside it. ``token`` is required when ``listen`` is not
    a loopback address.
    """

    listen: str = "127.0.0.1"
    port: int = 8188
    token: str | None = None
    data_dir: Path = Path("user")
    output_dir: Path | None = None
    input_dir: Path | None = None
    temp_dir: Path | None = None
    workflows_dir: Path | None = None  # None: the workflows shipped with the package
    default_workflow: str | None = None  # a template name; None: "showcase" if present, else the first
    device: str | None = None
    cache: str = "lru"
    extra_hosts: tuple[str, ...] = ()  # more Host names to accept (e.g. behind a reverse proxy)
    max_upload_bytes: int = 32 * MiB
    max_json_bytes: int = 16 * MiB
    max_json_depth: int = 64
    history_limit: int = 10_000
    history_page_default: int = 1_000
    max_prompt_nodes: int = 100_000  # larger prompts are refused with a 400
    ws_queue_size: int = 256  # unsent frames per client before its chatter is merged and previews dropped
    ws_queue_max_bytes: int = 64 * MiB  # unsent bytes per client before it is disconnected
    ws_send_timeout_s: float = 10.0
    ws_status_interval_s: float = 0.02  # queue-length broadcasts are coalesced to at most one per interval
    preview_max_side: int = 512
    # torch's CPU threads; None: one fewer than the CPUs, so the event loop keeps a core. A thread pool
    # as wide as the machine makes every small op wait for a core the loop holds (milliseconds each).
    cpu_threads: int | None = None
    memory_budget_bytes: int | None = None  # a prompt estimated above this is refused; None: memory free now
    rerun_interrupted: bool = False  # on start, queue again a prompt a crash left running
    argv: tuple[str, ...] = ("guidegraph", "serve")  # as shown in /system_stats (secrets redacted)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def output(self) -> Path:
        return self.output_dir or self.data_dir.parent / "output"

    @property
    def input(self) -> Path:
        return self.input_dir or self.data_dir.parent / "input"

    @property
    def temp(self) -> Path:
        return self.temp_dir or self.data_dir.parent / "temp"

    @property
    def torch_threads(self) -> int:
        return self.cpu_threads or max(1, (os.cpu_count() or 2) - 1)

    @property
    def requires_token(self) -> bool:
        return bool(self.token) or not is_loopback(self.listen)

    def check(self) -> None:
        """Refuse unsafe combinations before anything binds."""
        if not is_loopback(self.listen) and not self.token:
            raise ValueError(
                f"--listen {self.listen} is not a loopback address: pass --token or set GUIDEGRAPH_TOKEN"
            )
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"--cpu-threads must be at least 1, not {self.cpu_threads}")
        if self.token is not None and len(self.token) < 16:
            raise ValueError("the access token must be at least 16 characters")

    def prepare_folders(self) -> None:
        """Create the data, output, input and temp folders and prove each one writable.

        Raises ValueError naming the folder (a path that is a file, a read-only disk, ...), so the
        CLI can refuse to start with one clear line instead of failing on the first request.
        """
        for kind, path in (
            ("data", self.data_dir),
            ("output", self.output),
            ("input", self.input),
            ("temp", self.temp),
        ):
            try:
                path.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=path):
                    pass
            except OSError as exc:
                reason = exc.strerror or str(exc)
                if path.exists() and not path.is_dir():
                    reason = "it is a file, not a folder"
                raise ValueError(f"the {kind} folder {os.fspath(path)} cannot be used: {reason}") from None
