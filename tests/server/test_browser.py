"""End to end in a real browser: Debian's headless Chromium drives the editor served by ``guidegraph serve``.

The server runs as a user would start it: outside the repository, with the built-in node pack and no
``--workflows-dir`` (the shipped workflows come with the package). The first test boots a fresh
profile (no console error, no request leaving the machine): the default workflow (``showcase``) is the
only tab, saved and fitted to the view; it lists every shipped workflow with its title and thumbnail
in the template browser, opens ``cfg``, runs it with the Run button (every node reported, so the total
progress moves), shows the image, keeps the job list working when a job fails, and after a reload has
the same tabs and the image again. The second checks what the editor shows about our nodes (badge,
names, tooltips, help), LoadImage's upload widget, the Console, Assets → Imported, the model library
and Settings → About. To keep the run short on a CPU, the Sampler's steps are lowered in the page
(through ``app.graph``, as a user would edit the widget) before pressing Run. Skipped where Chromium
or Playwright is missing (CI installs both: ``make browser-deps``).

``GUIDEGRAPH_SCREENSHOTS=<folder>`` keeps the screenshots; ``GUIDEGRAPH_BROWSER_STEPS=20`` runs the
workflow with the steps it ships with (as for ``benchmarks/results/editor.png``).
"""

from __future__ import annotations

import contextlib
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
    """``guidegraph serve`` itself, started outside the repository, over a fresh data folder.

    Twice: prompts run in the server's worker thread, then on a Ray worker (``--ray``: a local cluster).
    """
    ray = ["--ray", "--workers", "1"] if request.param == "ray" else []
    port = free_port()
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "graph_runtime.cli",
                "serve",
                "--port",
                str(port),
                "--device",
                "cpu",
                *ray,
            ],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
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


@contextlib.contextmanager
def editor(url: str) -> Iterator[tuple[Any, list[str], list[str]]]:
    """A fresh browser profile on the editor: (page, console errors, requests that left the machine)."""
    problems: list[str] = []
    outside: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1920, "height": 1000})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on(
            "request",
            lambda r: outside.append(r.url) if not r.url.startswith((url, "data:", "blob:")) else None,
        )
        yield page, problems, outside
        browser.close()


def command(page: Any, command_id: str) -> None:
    page.evaluate(f"() => app.extensionManager.command.execute({json.dumps(command_id)})")


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


OPEN_TABS = "() => app.extensionManager.workflow.openWorkflows.map(w => w.path)"

# Every node inside the visible part of the canvas (its title bar included).
ALL_IN_VIEW = """() => { const [x, y, w, h] = app.canvas.visible_area;
  return app.graph._nodes.every(n => n.pos[0] >= x && n.pos[1] - 30 >= y
    && n.pos[0] + n.size[0] <= x + w && n.pos[1] + n.size[1] <= y + h) }"""


def failing_prompt() -> dict[str, Any]:
    """The shipped cfg workflow with a class label its model does not have: it fails while running."""
    prompt = json.loads((WORKFLOWS / f"{RUN}.api.json").read_text())
    condition = next(n for n in prompt.values() if n["class_type"] == "Condition")
    condition["inputs"].update(kind="class label", text="no such class")
    next(n for n in prompt.values() if n["class_type"] == "Sampler")["inputs"]["steps"] = 1
    return prompt


def post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def test_editor_boots_clean_and_runs_a_shipped_workflow_from_its_template_browser(server_url: str) -> None:
    assert RUN in shipped() and "showcase" in shipped(), f"shipped workflows: {shipped()}"
    with editor(server_url) as (page, problems, outside):
        page.goto(server_url + "/")

        # the default workflow (showcase) replaces the blank first tab: the only tab, saved, all in view
        showcase = json.dumps(",".join(node_types("showcase")))
        page.wait_for_function(f"() => ({GRAPH_TYPES})().join() === {showcase}", timeout=60_000)
        page.wait_for_function(
            "() => { const w = app.extensionManager.workflow.activeWorkflow;"
            " return w.isPersisted && !w.isModified }",
            timeout=10_000,
        )
        assert page.evaluate(OPEN_TABS) == ["workflows/showcase.json"]
        assert page.evaluate(ALL_IN_VIEW)
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
        cards = page.locator('[data-testid^="template-workflow-"]')
        cards.first.wait_for(timeout=10_000)
        for _ in range(len(shipped())):  # 24 cards a page; the next loads when the end scrolls in view
            if cards.count() >= len(shipped()):
                break
            cards.last.scroll_into_view_if_needed(timeout=10_000)
            page.wait_for_timeout(300)
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
        titles = json.loads((WORKFLOWS / "templates.json").read_text())
        for name in shipped():  # each card has its workflow's title, not its file name
            page.get_by_test_id(f"template-workflow-{name}").get_by_text(titles[name]["title"]).wait_for()
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

        # Run, then wait for the image to arrive in the output node; every node reports when it is
        # done (that is what the editor's total progress counts)
        page.evaluate(
            "() => { window.finished = new Set();"
            " app.api.addEventListener('executed', e => window.finished.add(e.detail.node)) }"
        )
        image_served = lambda r: "/api/view" in r.url and r.status == 200  # noqa: E731
        with page.expect_response(image_served, timeout=180_000) as viewed:
            page.get_by_role("button", name=re.compile(r"^\s*Run\s*$")).first.click()
        assert viewed.value.headers["content-type"] == "image/png"
        page.wait_for_function(
            "() => { const n = app.graph._nodes.find(n => n.type === 'SaveImage');"
            " return n && n.imgs && n.imgs.length > 0 && n.imgs[0].complete && n.imgs[0].naturalWidth > 0 }",
            timeout=30_000,
        )
        every_node = sorted(
            str(n["id"]) for n in json.loads((WORKFLOWS / f"{RUN}.ui.json").read_text())["nodes"]
        )
        assert sorted(page.evaluate("() => [...window.finished]")) == every_node
        page.get_by_role("button", name=re.compile("hide minimap", re.I)).first.click()
        page.evaluate(FRAME_GRAPH)
        page.wait_for_timeout(500)
        shot(page, "4-ran")
        history = json.loads(urllib.request.urlopen(f"{server_url}/history").read())
        [entry] = history.values()
        assert entry["status"]["status_str"] == "success"
        sampler = next(n for n in entry["prompt"][2].values() if n["class_type"] == "Sampler")
        assert sampler["inputs"]["steps"] == (STEPS or shipped_steps(RUN))

        # a job that fails keeps the editor's job views working (no schema error in the console)
        failed = post(server_url, "/prompt", {"prompt": failing_prompt()})["prompt_id"]
        deadline = time.monotonic() + 60
        while not json.loads(urllib.request.urlopen(f"{server_url}/history/{failed}").read()):
            assert time.monotonic() < deadline, "the failing prompt did not finish"
            time.sleep(0.3)
        page.wait_for_timeout(1500)  # the editor re-reads its job list on the status message
        command(page, "Workspace.ToggleSidebarTab.assets")
        page.get_by_role("tab", name=re.compile("generated", re.I)).first.click()
        page.get_by_text(re.compile(r"^cfg_\d+_")).first.wait_for(timeout=10_000)
        shot(page, "5-generated")
        command(page, "Workspace.ToggleSidebarTab.assets")

        # a reload keeps the tabs as they were (no second copy of anything) and shows the image again
        tabs = page.evaluate(OPEN_TABS)
        save_id = page.evaluate("() => String(app.graph._nodes.find(n => n.type === 'SaveImage').id)")
        page.reload()
        page.wait_for_function(f"() => ({GRAPH_TYPES})().join() === {opened}", timeout=60_000)
        page.wait_for_function(f"() => !!(app.nodeOutputs || {{}})[{json.dumps(save_id)}]", timeout=20_000)
        assert page.evaluate(OPEN_TABS) == tabs
    assert outside == [], f"requests left the machine: {outside}"
    noisy = [text for text in problems if not BENIGN.search(text)]
    assert noisy == [], f"console errors: {noisy}"


def test_editor_shows_our_node_details_panels_and_about(server_url: str) -> None:
    with editor(server_url) as (page, problems, outside):
        page.goto(server_url + "/")
        page.get_by_test_id("template-workflows-content").wait_for(timeout=60_000)
        page.keyboard.press("Escape")

        # node details: our badge (not ComfyUI's core one), names, a tooltip on every input, plain
        # descriptions, and a help page where the editor looks for one
        details = page.evaluate(
            """() => Object.values(LiteGraph.registered_node_types).map(t => t.nodeData)
                .filter(d => d && d.category.startsWith('guidegraph')).map(d => ({
                  name: d.name, display: d.display_name, source: d.nodeSource.displayText,
                  kind: d.nodeSource.type, description: d.description,
                  untipped: Object.values(d.inputs).filter(i => !i.tooltip).map(i => i.name) }))"""
        )
        assert len(details) > 20
        for node in details:
            # ("essentials" is the editor's shelf for nodes named like ComfyUI's LoadImage, SaveImage ...)
            assert node["kind"] in ("custom_nodes", "essentials") and node["source"] == "guidegraph", node
            assert node["untipped"] == [] and "``" not in node["description"], node
        assert {n["name"]: n["display"] for n in details}["ClipLoss"] == "CLIP Loss"
        help_page = page.evaluate(
            "async () => { const r = await fetch('/extensions/guidegraph/docs/CFGCombine/en.md');"
            " return [r.status, await r.text()] }"
        )
        assert help_page[0] == 200 and help_page[1].startswith("# CFG Combine\n")

        # LoadImage: an upload button, and a picture to choose in a fresh input folder
        widgets = page.evaluate(
            "() => { const n = LiteGraph.createNode('LoadImage'); app.graph.add(n);"
            " const w = n.widgets.map(w => [w.name, w.type, w.value]); app.graph.remove(n); return w }"
        )
        assert widgets == [["image", "combo", "example.png"], ["upload", "button", "image"]]

        # the Console shows the server's log
        command(page, "Workspace.ToggleBottomPanelTab.logs-terminal")
        page.locator(".xterm-rows").get_by_text(re.compile(r"editor templates: \d+ workflows")).wait_for(
            timeout=10_000
        )
        shot(page, "6-console")
        command(page, "Workspace.ToggleBottomPanelTab.logs-terminal")

        # Assets → Imported lists the input folder
        command(page, "Workspace.ToggleSidebarTab.assets")
        page.get_by_role("tab", name=re.compile("imported", re.I)).first.click()
        page.get_by_text("example", exact=True).first.wait_for(timeout=10_000)
        command(page, "Workspace.ToggleSidebarTab.assets")

        # the model library: model folders only, weights only (no model cards), no 404 on opening one
        command(page, "Workspace.ToggleSidebarTab.model-library")
        for folder in ("checkpoints", "classifiers", "clip", "evaluators"):
            page.get_by_text(folder, exact=True).first.wait_for(timeout=10_000)
        assert page.get_by_text("input", exact=True).count() == 0
        page.get_by_text("checkpoints", exact=True).first.click()
        page.get_by_text(re.compile("shapes_unet")).first.wait_for(timeout=10_000)
        page.wait_for_timeout(1000)
        assert page.get_by_text(re.compile(r"\.md$")).count() == 0
        shot(page, "7-models")
        command(page, "Workspace.ToggleSidebarTab.model-library")

        # Settings → About names guidegraph and shows the real command line
        page.keyboard.press("Control+,")
        page.get_by_text("About", exact=True).first.click()
        about = page.get_by_test_id("about-panel")
        about.get_by_text(re.compile(r"guidegraph v\d")).first.wait_for(timeout=10_000)
        text = about.inner_text()
        assert "ComfyUI compatible (guidegraph" in text and "guidegraph serve --port" in text
        shot(page, "8-about")
    assert outside == [], f"requests left the machine: {outside}"
    noisy = [text for text in problems if not BENIGN.search(text)]
    assert noisy == [], f"console errors: {noisy}"
