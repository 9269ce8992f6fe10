"""End to end in a real browser: Debian's headless Chromium drives the editor served by ``guidegraph serve``.

The server runs with the built-in node pack and the shipped ``workflows/``. The editor boots with no
console errors and no request leaving the machine, shows our ``guidegraph/...`` categories, opens the
default workflow (``showcase``), lists every shipped workflow with its thumbnail in its template
browser, opens ``cfg`` from there, runs it with the Run button and shows the image in the output node.
To keep the run short on a CPU, the Sampler's steps are lowered in the page (through ``app.graph``,
as a user would edit the widget) before pressing Run. Skipped where Chromium or Playwright is missing
(CI installs both: ``make browser-deps``).

``GUIDEGRAPH_SCREENSHOTS=<folder>`` keeps the screenshots; ``GUIDEGRAPH_BROWSER_STEPS=20`` runs the
workflow with the steps it ships with (as for ``benchmarks/results/editor.png``).
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
WORKFLOWS = ROOT / "workflows"
RUN = "cfg"  # the shipped workflow the test runs: one Sampler, one SaveImage
STEPS = int(os.environ.get("GUIDEGRAPH_BROWSER_STEPS", "2"))
SHOTS = os.environ.get("GUIDEGRAPH_SCREENSHOTS")  # a folder to keep screenshots in, for people

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (make browser-deps)"),
]
playwright_api = pytest.importorskip("playwright.sync_api")

# The editor's own harmless chatter; anything else at error level fails the test.
BENIGN = re.compile(r"deprecated|Invalid layout total size", re.I)


def shipped() -> list[str]:
    return sorted(p.name.removesuffix(".ui.json") for p in WORKFLOWS.glob("*.ui.json"))


@pytest.fixture(params=["local", "ray"])
def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """``guidegraph serve`` itself, over the built-in nodes, the shipped workflows and a fresh profile.

    Twice: prompts run in the server's worker thread, then on a Ray worker (``--ray``: a local cluster).
    """
    ray = ["--ray", "--workers", "1"] if request.param == "ray" else []
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "graph_runtime.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "user"),
            "--workflows-dir",
            str(WORKFLOWS),
            "--device",
            "cpu",
            *ray,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/prompt", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None, "guidegraph serve exited"
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(15)


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


def node_types(workflow: str) -> list[str]:
    return sorted(n["type"] for n in json.loads((WORKFLOWS / f"{workflow}.ui.json").read_text())["nodes"])


def shipped_steps(workflow: str) -> int:
    prompt = json.loads((WORKFLOWS / f"{workflow}.api.json").read_text())
    return next(n["inputs"]["steps"] for n in prompt.values() if n["class_type"] == "Sampler")


GRAPH_TYPES = "() => (window.app?.graph?._nodes || []).map(n => n.type).sort()"

# Put the whole graph in view, centred below the top bar, at a zoom the editor still draws text at.
FRAME_GRAPH = """() => {
  const nodes = app.graph._nodes, c = app.canvas, el = c.canvas;
  const x0 = Math.min(...nodes.map(n => n.pos[0])), y0 = Math.min(...nodes.map(n => n.pos[1] - 30));
  const x1 = Math.max(...nodes.map(n => n.pos[0] + n.size[0]));
  const y1 = Math.max(...nodes.map(n => n.pos[1] + n.size[1]));
  const w = el.clientWidth - 120, h = el.clientHeight - 160;
  const scale = Math.max(0.62, Math.min(1, w / (x1 - x0), h / (y1 - y0)));
  c.ds.scale = scale;
  c.ds.offset = [
    (el.clientWidth / scale - (x1 - x0)) / 2 - x0 + 30,
    (el.clientHeight / scale - (y1 - y0)) / 2 - y0,
  ];
  c.setDirty(true, true);
}"""


def test_editor_boots_clean_and_runs_a_shipped_workflow_from_its_template_browser(server_url: str) -> None:
    assert RUN in shipped() and "showcase" in shipped(), f"shipped workflows: {shipped()}"
    problems: list[str] = []
    outside: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1920, "height": 1000})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on(
            "request",
            lambda r: outside.append(r.url) if not r.url.startswith((server_url, "data:", "blob:")) else None,
        )
        page.goto(server_url + "/")

        # the default workflow (showcase) replaces the blank canvas / stock graph
        showcase = json.dumps(",".join(node_types("showcase")))
        page.wait_for_function(f"() => ({GRAPH_TYPES})().join() === {showcase}", timeout=60_000)
        # a fresh profile also opens the template browser (listing ours); it is modal, so close it
        # once it is up, or it covers the buttons below whenever it opens a little late
        browser_dialog = page.get_by_test_id("template-workflows-content")
        browser_dialog.wait_for(timeout=30_000)
        shot(page, "1-booted")
        page.keyboard.press("Escape")
        browser_dialog.wait_for(state="hidden", timeout=10_000)

        # our node categories are in the editor's node library
        categories = page.evaluate(
            "() => Object.values(LiteGraph.registered_node_types).map(t => t.category)"
        )
        assert {"guidegraph/guidance", "guidegraph/sampling", "guidegraph/image"} <= set(categories)
        library = page.get_by_role("button", name=re.compile("node library", re.I)).first
        library.click()
        page.get_by_text("guidegraph", exact=True).first.click(timeout=10_000)
        for folder in ("guidance", "sampling", "image"):
            page.get_by_text(folder, exact=True).first.wait_for(timeout=10_000)
        shot(page, "2-library")
        library.click()

        # every shipped workflow is a template with its own thumbnail; open cfg from there
        page.get_by_role("button", name="Templates", exact=True).click()
        for name in shipped():
            card = page.get_by_test_id(f"template-workflow-{name}")
            card.scroll_into_view_if_needed(timeout=10_000)  # thumbnails load as they scroll in
            thumbnail = card.locator("img")
            thumbnail.wait_for(timeout=10_000)
            thumbnail.evaluate("img => img.decode()")  # fails unless the picture loaded and decodes
        first = page.get_by_test_id(f"template-workflow-{shipped()[0]}")
        first.scroll_into_view_if_needed()
        first.locator("img").evaluate("img => img.decode()")
        page.wait_for_timeout(1000)  # the cards fade in
        shot(page, "3-templates")
        page.get_by_test_id(f"template-workflow-{RUN}").click()
        opened = json.dumps(",".join(node_types(RUN)))
        page.wait_for_function(f"() => ({GRAPH_TYPES})().join() === {opened}", timeout=30_000)

        if STEPS:  # fewer steps, so the CPU run takes seconds; the widget edit goes into the prompt
            page.evaluate(
                "steps => { const w = app.graph._nodes.find(n => n.type === 'Sampler')"
                ".widgets.find(w => w.name === 'steps'); w.value = steps; w.callback?.(steps); }",
                STEPS,
            )

        # Run, then wait for the image to arrive in the output node
        image_served = lambda r: "/api/view" in r.url and r.status == 200  # noqa: E731
        with page.expect_response(image_served, timeout=180_000) as viewed:
            page.get_by_role("button", name=re.compile(r"^\s*Run\s*$")).first.click()
        assert viewed.value.headers["content-type"] == "image/png"
        page.wait_for_function(
            "() => { const n = app.graph._nodes.find(n => n.type === 'SaveImage');"
            " return n && n.imgs && n.imgs.length > 0 && n.imgs[0].complete && n.imgs[0].naturalWidth > 0 }",
            timeout=30_000,
        )
        page.get_by_role("button", name=re.compile("hide minimap", re.I)).first.click()
        page.evaluate(FRAME_GRAPH)
        page.wait_for_timeout(500)
        shot(page, "4-ran")
        history = json.loads(urllib.request.urlopen(f"{server_url}/history").read())
        [entry] = history.values()
        assert entry["status"]["status_str"] == "success"
        sampler = next(n for n in entry["prompt"][2].values() if n["class_type"] == "Sampler")
        assert sampler["inputs"]["steps"] == (STEPS or shipped_steps(RUN))
        browser.close()
    assert outside == [], f"requests left the machine: {outside}"
    noisy = [text for text in problems if not BENIGN.search(text)]
    assert noisy == [], f"console errors: {noisy}"
