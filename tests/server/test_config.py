"""Server settings that are not about security: torch's CPU threads."""

from __future__ import annotations

import os

import pytest

from server.config import ServerConfig


def test_torch_threads_leave_a_core_to_the_event_loop_unless_told() -> None:
    assert ServerConfig().torch_threads == max(1, (os.cpu_count() or 2) - 1)
    assert ServerConfig(cpu_threads=3).torch_threads == 3
    with pytest.raises(ValueError, match="cpu-threads"):
        ServerConfig(cpu_threads=0).check()
