"""End to end in a real browser: Debian's headless Chromium drives the editor served by our server.

The editor boots with no console errors and no request leaving the machine, shows our node
categories, opens our default workflow, runs it with the Run button and shows the image in the output
node. Skipped where Chromium or Playwright is missing (CI installs both: ``make browser-deps``).
"""

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
from typing import Any

import pytest

from tests.server.conftest import make_config
from tests.server.test_restart import ROOT, free_port

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = os.environ.get("GUIDEGRAPH_SCREENSHOTS")  # a folder to keep screenshots in, for people

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (make browser-deps)"),
]
playwright_api = pytest.importorskip("playwright.sync_api")

# The editor's own harmless chatter; anything else at error level fails the test.
BENIGN = re.compile(r"deprecated|Invalid layout total size", re.I)


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    config = make_config(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.server.serve_testnodes",
            "--port",
            str(port),
            "--data-dir",
            str(config.data_dir),
            "--workflows-dir",
            str(config.workflows_dir),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/prompt", timeout=2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


def test_editor_boots_clean_opens_our_workflow_and_runs_it(server_url: str) -> None:
    problems: list[str] = []
    outside: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on(
            "request",
            lambda r: outside.append(r.url) if not r.url.startswith((server_url, "data:", "blob:")) else None,
        )
        page.goto(server_url + "/")

        # our default workflow replaces the blank canvas / stock graph
        page.wait_for_function(
            "() => (window.app?.graph?._nodes || []).map(n => n.type).sort().join() === 'Number,SaveSquare'",
            timeout=30_000,
        )
        shot(page, "1-booted")
        page.keyboard.press("Escape")  # the first-run template browser, if it is open

        # our node categories are in the editor's node library
        categories = page.evaluate(
            "() => Object.values(LiteGraph.registered_node_types).map(t => t.category)"
        )
        assert {"testing", "testing/image"} <= set(categories)
        library = page.get_by_role("button", name=re.compile("node library", re.I)).first
        library.click()
        page.get_by_text("testing", exact=True).first.wait_for(timeout=10_000)
        shot(page, "2-library")
        library.click()

        # Run, then wait for the image to arrive in the output node
        with page.expect_response(
            lambda r: "/api/view" in r.url and r.status == 200, timeout=30_000
        ) as viewed:
            page.get_by_role("button", name=re.compile(r"^\s*Run\s*$")).first.click()
        assert viewed.value.headers["content-type"] == "image/png"
        page.wait_for_function(
            "() => { const n = app.graph._nodes.find(n => n.type === 'SaveSquare');"
            " return n && n.imgs && n.imgs.length > 0 && n.imgs[0].complete }",
            timeout=30_000,
        )
        shot(page, "3-ran")
        history = json.loads(urllib.request.urlopen(f"{server_url}/history").read())
        assert [e["status"]["status_str"] for e in history.values()] == ["success"]
        browser.close()
    assert outside == [], f"requests left the machine: {outside}"
    noisy = [text for text in problems if not BENIGN.search(text)]
    assert noisy == [], f"console errors: {noisy}"
