"""Routes the editor reads at boot and while editing: node definitions, settings, user files, templates."""

from __future__ import annotations

import json
from urllib.parse import quote

from server.cli import shown_argv
from server.config import ServerConfig
from tests.server.conftest import UI_WORKFLOW
from tests.server.test_restart import ROOT

BOOT_JSON = {
    "/api/users": dict,
    "/api/settings": dict,
    "/api/extensions": list,
    "/api/object_info": dict,
    "/api/system_stats": dict,
    "/api/features": dict,
    "/api/embeddings": list,
    "/api/models": list,
    "/api/experiment/models": list,
    "/api/i18n": dict,
    "/api/workflow_templates": dict,
    "/api/global_subgraphs": dict,
    "/templates/index.json": list,
    "/templates/index_logo.json": dict,
    "/api/jobs?status=in_progress,pending&limit=200&offset=0": dict,
    "/api/prompt": dict,
    "/api/queue": dict,
    "/api/history": dict,
}


async def test_every_boot_route_answers_json_under_both_prefixes(client) -> None:
    for path, kind in BOOT_JSON.items():
        for variant in {path, path.removeprefix("/api")}:
            response = await client.get(variant)
            assert response.status == 200, variant
            assert isinstance(await response.json(), kind), variant


async def test_serves_the_editor_from_the_wheel(client) -> None:
    index = await client.get("/")
    assert index.status == 200 and '<div id="vue-app">' in await index.text()
    assert index.headers["Cache-Control"] == "no-cache"
    assert (await client.get("/materialdesignicons.min.css")).status == 200
    assert (await client.get("/scripts/app.js")).status == 200
    assert (await client.get("/user.css")).content_type == "text/css"
    assert (await client.get("/api/userdata/user.css")).status == 200
    assert (await client.get("/../../etc/passwd")).status == 404
    assert (await client.get("/%2e%2e/%2e%2e/etc/passwd")).status == 404


async def test_object_info_lists_our_nodes_with_their_categories(client) -> None:
    info = await (await client.get("/object_info")).json()
    assert {"Number", "SaveSquare", "SlowSteps", "Explode"} <= set(info)
    assert info["SaveSquare"]["category"] == "testing/image" and info["SaveSquare"]["output_node"] is True
    one = await (await client.get("/api/object_info/Number")).json()
    assert list(one) == ["Number"] and one["Number"]["input"]["required"]["value"][0] == "INT"
    assert await (await client.get("/object_info/Unknown")).json() == {}


async def test_system_stats_has_the_editor_fields_and_the_redacted_command_line(
    make_client, tmp_path
) -> None:
    argv = shown_argv(["serve", "--token", "s3cret-s3cret-s3cret", f"--data-dir={tmp_path}/user", "--port=1"])
    assert argv[:4] == ("guidegraph", "serve", "--token", "<redacted>") and argv[-1] == "--port=1"
    assert "s3cret" not in str(argv) and str(tmp_path) not in str(argv)
    client = await make_client(argv=argv)
    stats = await (await client.get("/system_stats")).json()
    system = stats["system"]
    for key in (
        "os",
        "ram_total",
        "ram_free",
        "comfyui_version",
        "python_version",
        "pytorch_version",
        "embedded_python",
        "argv",
    ):
        assert key in system
    assert system["argv"] == list(argv)
    assert system["comfyui_version"].startswith("compatible (guidegraph ")
    assert stats["devices"][0]["type"] in ("cpu", "cuda", "mps")


async def test_settings_persist(client) -> None:
    assert (await client.post("/api/settings/Comfy.Theme", json="dark")).status == 200
    assert (await client.post("/api/settings", json={"A.B": 1, "C.D": [1, 2]})).status == 200
    assert await (await client.get("/api/settings/Comfy.Theme")).json() == "dark"
    assert await (await client.get("/api/settings")).json() == {
        "Comfy.Notification.ShowVersionUpdates": False,  # ComfyUI's release news: off unless asked for
        "Comfy.Theme": "dark",
        "A.B": 1,
        "C.D": [1, 2],
    }
    assert await (await client.get("/api/settings/missing")).json() is None
    assert (await client.post("/api/settings/Comfy.Notification.ShowVersionUpdates", json=True)).status == 200
    assert await (await client.get("/api/settings/Comfy.Notification.ShowVersionUpdates")).json() is True
    assert (await client.post("/api/settings", json=[1])).status == 400
    assert (await client.post("/api/settings", data=b"{bad")).status == 400


async def test_users_is_single_user_mode(client) -> None:
    assert await (await client.get("/api/users")).json() == {"storage": "server", "migrated": True}
    assert (await client.post("/api/users", json={"username": "x"})).status == 400


async def test_saved_workflows_round_trip_through_userdata(client, config: ServerConfig) -> None:
    name = quote("workflows/my flow.json", safe="")
    saved = await client.post(f"/api/userdata/{name}?overwrite=false&full_info=true", json=UI_WORKFLOW)
    assert saved.status == 200
    info = await saved.json()
    assert info["path"] == "workflows/my flow.json" and info["size"] > 0 and isinstance(info["modified"], int)
    assert (await client.post(f"/api/userdata/{name}?overwrite=false", json=UI_WORKFLOW)).status == 409
    listing = await (
        await client.get(
            "/api/userdata",
            params={"dir": "workflows", "recurse": "true", "full_info": "true", "split": "false"},
        )
    ).json()
    assert [item["path"] for item in listing] == ["my flow.json"]
    assert await (await client.get("/api/userdata", params={"dir": "workflows"})).json() == ["my flow.json"]
    v2 = await (await client.get("/api/v2/userdata", params={"path": "workflows"})).json()
    assert v2[0]["name"] == "my flow.json" and v2[0]["type"] == "file"
    assert (await (await client.get(f"/api/userdata/{name}")).json())["id"] == UI_WORKFLOW["id"]
    dest = quote("workflows/renamed.json", safe="")
    moved = await client.post(f"/api/userdata/{name}/move/{dest}")
    assert moved.status == 200 and await moved.json() == "workflows/renamed.json"
    assert (await client.get(f"/api/userdata/{name}")).status == 404
    assert (await client.delete(f"/api/userdata/{dest}")).status == 204
    assert await (await client.get("/api/userdata", params={"dir": "nothing"})).json() == []
    assert (
        await client.post(f"/api/userdata/{quote('workflows/bad.json', safe='')}", data=b"{x")
    ).status == 400


async def test_userdata_refuses_paths_that_leave_the_user_folder(client) -> None:
    for raw in (
        "../secret",
        "..%2F..%2Fetc%2Fpasswd",
        quote("../../x.json", safe=""),
        quote("/etc/passwd", safe=""),
    ):
        assert (await client.get(f"/api/userdata/{raw}")).status in (400, 404), raw
        assert (await client.post(f"/api/userdata/{raw}", data=b"x")).status in (400, 404, 405), raw
    assert (await client.get("/api/userdata", params={"dir": "../"})).status == 400


async def test_templates_list_and_serve_our_workflows_with_thumbnails(client, config: ServerConfig) -> None:
    (config.workflows_dir / "squares.jpg").write_bytes(b"\xff\xd8\xff\xe0jpeg")
    assert await (await client.get("/api/workflow_templates")).json() == {}  # ours are the editor's own
    [category] = await (await client.get("/templates/index.json")).json()
    assert category["moduleName"] == "default" and category["category"] == "guidegraph"
    [card] = category["templates"]
    assert card == {
        "name": "squares",
        "title": "squares",  # no templates.json entry: the name, no description
        "description": "",
        "mediaType": "image",
        "mediaSubtype": "jpg",
        "tags": ["guidegraph"],
    }
    for path in ("/templates/squares.json", "/api/workflow_templates/guidegraph/squares.json"):
        assert (await (await client.get(path)).json())["id"] == UI_WORKFLOW["id"]
    for path in ("/templates/squares-1.jpg", "/api/workflow_templates/guidegraph/squares.jpg"):
        thumb = await client.get(path)
        assert thumb.status == 200 and thumb.content_type == "image/jpeg"
    assert (await client.get("/templates/squares.jpg")).status == 404
    assert (await client.get("/api/workflow_templates/other/squares.json")).status == 404
    assert (await client.get("/api/workflow_templates/guidegraph/..%2Fsecret.json")).status == 404
    default = await (await client.get("/api/guidegraph/default_workflow")).json()
    assert default["name"] == "squares" and default["workflow"]["id"] == UI_WORKFLOW["id"]
    extensions = await (await client.get("/api/extensions")).json()
    script = await client.get(extensions[0])
    assert script.status == 200 and "registerExtension" in await script.text()


async def test_every_shipped_workflow_is_a_template_with_its_own_thumbnail(make_client, tmp_path) -> None:
    shipped = ROOT / "workflows"
    names = sorted(p.name.removesuffix(".ui.json") for p in shipped.glob("*.ui.json"))
    assert "showcase" in names
    client = await make_client(ServerConfig(data_dir=tmp_path / "user", workflows_dir=shipped))
    [category] = await (await client.get("/templates/index.json")).json()
    cards = {card["name"]: card for card in category["templates"]}
    assert sorted(cards) == names
    index = json.loads((shipped / "templates.json").read_text())
    assert sorted(index) == names  # every shipped workflow has a title and a description, no stale one
    for name in names:
        assert cards[name]["title"] == index[name]["title"] and cards[name]["description"], name
        assert not set("-_") & set(cards[name]["description"]), name  # the editor shows them as spaces
        thumb = await client.get(f"/templates/{name}-1.jpg")
        assert await thumb.read() == (shipped / f"{name}.jpg").read_bytes(), name
    for name in names:
        workflow = await client.get(f"/api/workflow_templates/guidegraph/{name}.json")
        assert await workflow.json() == json.loads((shipped / f"{name}.ui.json").read_text()), name
        thumb = await client.get(f"/api/workflow_templates/guidegraph/{name}.jpg")
        assert thumb.content_type == "image/jpeg", name
        assert await thumb.read() == (shipped / f"{name}.jpg").read_bytes(), f"{name}: not its own .jpg"
    default = await (await client.get("/api/guidegraph/default_workflow")).json()
    assert default["name"] == "showcase"


async def test_models_routes(client) -> None:
    kinds = await (await client.get("/models")).json()
    assert isinstance(kinds, list)
    assert (await client.get("/models/not-a-folder")).status == 404
    assert (await client.get("/experiment/models/not-a-folder")).status == 404
    for kind in kinds:
        assert isinstance(await (await client.get(f"/models/{kind}")).json(), list)
        assert isinstance(await (await client.get(f"/experiment/models/{kind}")).json(), list)


async def test_pack_nodes_have_help_pages_where_the_editor_asks_for_them(aiohttp_client, tmp_path) -> None:
    from graph_runtime.registry import Registry
    from server.app import create_app
    from tests.server.conftest import make_config
    from tests.server.testnodes import NODES

    registry = Registry()
    for cls in NODES:
        registry.add(cls, pack="testpack")
    client = await aiohttp_client(create_app(make_config(tmp_path), registry=registry))
    info = await (await client.get("/api/object_info/Number")).json()
    assert info["Number"]["python_module"] == "custom_nodes.testpack"
    for path in ("/extensions/testpack/docs/Number/en.md", "/extensions/testpack/docs/Number.md"):
        page = await client.get(path)
        assert page.status == 200 and page.content_type == "text/markdown"
        assert (await page.text()).startswith("# Number\n")
    assert (await client.get("/extensions/otherpack/docs/Number.md")).status == 404
    assert (await client.get("/extensions/testpack/docs/Nope.md")).status == 404
