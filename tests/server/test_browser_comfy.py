"""ComfyUI's classic default workflow (SD 1.5 txt2img, as ComfyUI's editor saves it) opens in the real
editor served by ``guidegraph serve`` and runs with the Run button, on a tiny random checkpoint under
the name the workflow expects (steps lowered in the page, as a user would edit the widget)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from families.sd.make import make_checkpoint
from tests.nodes.test_comfy_core import CKPT, classic_default_workflow
from tests.server.test_browser import BENIGN, CHROMIUM, editor
from tests.server.test_restart import free_port

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (make browser-deps)"),
]


@pytest.fixture
def sd_server(tmp_path: Path) -> Iterator[str]:
    make_checkpoint("sd1", tmp_path / "models" / CKPT, size="tiny")
    env = {**os.environ, "GUIDEGRAPH_MODEL_DIRS": f"checkpoints={tmp_path / 'models'}"}
    port = free_port()
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "graph_runtime.cli", "serve", "--port", str(port), "--device", "cpu"],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/prompt", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(15)


def test_the_editor_opens_and_runs_comfyuis_default_workflow(sd_server: str) -> None:
    workflow = classic_default_workflow()
    with editor(sd_server) as (page, problems, outside):
        page.goto(sd_server)
        page.wait_for_function("() => !!(window.app && app.graph)", timeout=60_000)
        page.evaluate("wf => app.loadGraphData(wf)", workflow)
        page.wait_for_function("() => app.graph._nodes.some(n => n.type === 'KSampler')", timeout=30_000)
        page.wait_for_timeout(1500)
        page.keyboard.press("Escape")  # a fresh profile opens the template browser; close it
        page.get_by_role("dialog").wait_for(state="detached", timeout=10_000)
        image_served = lambda r: "/api/view" in r.url and r.status == 200  # noqa: E731
        with page.expect_response(image_served, timeout=180_000) as viewed:
            page.get_by_role("button", name=re.compile(r"^\s*Run\s*$")).first.click()
        assert viewed.value.headers["content-type"] == "image/png"
    history = json.loads(urllib.request.urlopen(f"{sd_server}/history").read())
    [entry] = history.values()
    assert entry["status"]["status_str"] == "success"
    kinds = sorted(n["class_type"] for n in entry["prompt"][2].values())
    assert kinds == sorted(n["type"] for n in workflow["nodes"])
    assert outside == [], f"requests left the machine: {outside}"
    noisy = [text for text in problems if not BENIGN.search(text)]
    assert noisy == [], f"console errors: {noisy}"
