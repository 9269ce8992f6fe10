"""Registry: declarations become /object_info entries; packs load through entry points."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from runtime_testnodes import TEST_NODES, Add, Number, Options

from graph_runtime import Registry
from graph_runtime.api import Combo, Context, Float, FolderFiles, Node, NodePack, Output
from graph_runtime.folders import register_folders
from graph_runtime.registry import input_spec

EDITOR_KEYS = {
    "input", "input_order", "output", "output_is_list", "output_name", "output_tooltips", "name",
    "display_name", "description", "python_module", "category", "output_node", "deprecated",
    "experimental", "api_node",
}  # fmt: skip


def test_object_info_entry_has_every_key_the_editor_reads(registry: Registry) -> None:
    info = registry.object_info()
    assert set(info) == {cls.__name__ for cls in TEST_NODES}
    for entry in info.values():
        assert set(entry) == EDITOR_KEYS
        assert isinstance(entry["name"], str)


def test_object_info_splits_required_and_optional_in_declaration_order(registry: Registry) -> None:
    entry = registry.object_info_one("Options")["Options"]
    assert entry["input_order"] == {"required": ["seed", "text", "flag", "mode"], "optional": ["x", "weight"]}
    required = entry["input"]["required"]
    assert required["seed"] == [
        "INT",
        {"default": 0, "min": 0, "max": 2**63 - 1, "step": 1, "control_after_generate": True},
    ]
    assert required["text"][1]["multiline"] is True
    assert required["flag"][0] == "BOOLEAN"
    assert required["mode"] == [["a", "b", "c"], {"default": "a"}]
    assert entry["input"]["optional"]["x"] == ["FLOAT", {}]
    assert entry["input"]["optional"]["weight"][1]["max"] == 1.0
    assert entry["output"] == ["STRING"] and entry["output_name"] == ["summary"]
    assert entry["category"] == "test" and entry["output_node"] is False


def test_object_info_one_of_an_unknown_class_is_empty(registry: Registry) -> None:
    assert registry.object_info_one("Nope") == {}


def test_description_and_display_name_come_from_the_class(registry: Registry) -> None:
    entry = registry.object_info_one("Add")["Add"]
    assert entry["description"] == "a + b (b optional, 0 when left out)."
    assert entry["display_name"] == "Add"


def test_folder_combo_lists_files_again_when_asked(tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    register_folders({"test_weights": [folder]})

    class LoadWeights(Node):
        """Loads a file."""

        inputs = (Combo("name", options=FolderFiles("test_weights", (".safetensors",))),)
        outputs = (Output("path", "STRING"),)

        @staticmethod
        def run(ctx: Context, name: str) -> tuple[str]:
            return (name,)

    registry = Registry([LoadWeights])
    assert registry.object_info_one("LoadWeights")["LoadWeights"]["input"]["required"]["name"][0] == []
    (folder / "a.safetensors").write_bytes(b"x")
    (folder / "notes.txt").write_text("ignored")
    assert registry.object_info_one("LoadWeights")["LoadWeights"]["input"]["required"]["name"][0] == [
        "a.safetensors"
    ]


def test_folder_listing_is_kept_until_a_directory_changes(tmp_path: Path) -> None:
    """A listing is reused while no directory it read changed, and read again when one did: a file
    added in a nested folder, a folder that became a diffusers bundle, a link loop that ends."""
    import os

    from graph_runtime import folders

    root = tmp_path / "kept"
    (root / "sd" / "deep").mkdir(parents=True)
    (root / "sd" / "deep" / "a.safetensors").write_bytes(b"x")
    (root / "pipe").mkdir()
    (root / "pipe" / "unet.safetensors").write_bytes(b"x")
    (root / "sd" / "loop").symlink_to(root)
    register_folders({"test_kept": [root]})

    def age() -> None:  # directories older than the racy window, so their listing may be kept
        for d in (root, root / "sd", root / "sd" / "deep", root / "pipe"):
            os.utime(d, ns=(1_000_000_000, 1_000_000_000))

    def listed() -> list[str]:
        return folders.list_files("test_kept", (".safetensors",), "model_index.json")

    age()
    assert listed() == ["pipe/unet.safetensors", "sd/deep/a.safetensors"]
    key = next(k for k in folders._LISTINGS if k[0] == "test_kept")
    assert folders._LISTINGS[key].names == tuple(listed())  # kept, not walked again

    (root / "sd" / "deep" / "b.safetensors").write_bytes(b"x")
    (root / "pipe" / "model_index.json").write_text("{}")
    assert listed() == ["pipe", "sd/deep/a.safetensors", "sd/deep/b.safetensors"]
    age()
    (root / "pipe" / "model_index.json").unlink()  # changes pipe's time again
    assert listed() == ["pipe/unet.safetensors", "sd/deep/a.safetensors", "sd/deep/b.safetensors"]


def test_resolve_file_follows_links_and_refuses_names_that_leave_the_folder(tmp_path: Path) -> None:
    from graph_runtime.folders import resolve_file

    root, elsewhere = tmp_path / "models", tmp_path / "other_disk"
    root.mkdir()
    elsewhere.mkdir()
    (elsewhere / "big.safetensors").write_bytes(b"x")
    (root / "big.safetensors").symlink_to(elsewhere / "big.safetensors")
    (tmp_path / "secret.safetensors").write_bytes(b"x")
    register_folders({"test_linked": [root]})
    assert resolve_file("test_linked", "big.safetensors").read_bytes() == b"x"  # a link out is followed
    for name in ("../secret.safetensors", str(tmp_path / "secret.safetensors"), "", "."):
        with pytest.raises(FileNotFoundError):
            resolve_file("test_linked", name)


def test_two_classes_with_one_name_are_refused() -> None:
    class Number(Node):  # same name as the test node
        outputs = (Output("v", "FLOAT"),)

        @staticmethod
        def run(ctx: Context) -> tuple[float]:
            return (0.0,)

    with pytest.raises(ValueError, match="two node classes named 'Number'"):
        Registry([Number, globals()["Number"]])


def test_a_run_default_that_differs_from_the_declaration_is_refused_at_class_creation() -> None:
    with pytest.raises(TypeError, match=r"shift_clamp: run\(\) says 0.0, the declaration 1.0"):

        class Clamp(Node):  # the ClipLoss mistake: 1.0 declared, 0.0 in run()
            inputs = (Float("shift_clamp", default=1.0),)
            outputs = (Output("v", "FLOAT"),)

            @staticmethod
            def run(ctx: Context, shift_clamp: float = 0.0) -> tuple[float]:
                return (shift_clamp,)

    class Agreeing(Node):  # the same default, or none, is fine
        inputs = (Float("a", default=1.0), Float("b", default=2.0))
        outputs = (Output("v", "FLOAT"),)

        @staticmethod
        def run(ctx: Context, a: float, b: float = 2.0) -> tuple[float]:
            return (a + b,)

    assert Agreeing.input("b") is not None


class _FakeEntryPoint:
    def __init__(self, name: str, obj: Any) -> None:
        self.name, self.value, self.obj = name, f"fake:{name}", obj

    def load(self) -> Any:
        if isinstance(self.obj, Exception):
            raise self.obj
        return self.obj


def test_from_entry_points_loads_packs_and_skips_broken_ones(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def pack() -> NodePack:
        return NodePack("good", [Number, Add], {"test_pack_folder": [tmp_path]})

    eps = [
        _FakeEntryPoint("good", pack),
        _FakeEntryPoint("broken", ImportError("no module named nodes.missing")),
        _FakeEntryPoint("plain", NodePack("plain", [Options])),
    ]
    monkeypatch.setattr("graph_runtime.registry.entry_points", lambda group: eps)
    registry = Registry.from_entry_points()
    assert sorted(registry.classes) == ["Add", "Number", "Options"]
    assert len(registry.load_errors) == 1 and "broken" in registry.load_errors[0]
    from graph_runtime.folders import folder_paths

    assert tmp_path.resolve() in folder_paths("test_pack_folder")


def test_an_upload_combo_carries_comfyuis_image_upload_flag() -> None:
    assert input_spec(Combo("image", options=("a.png",), upload="image")) == [
        ["a.png"],
        {"image_upload": True},
    ]
    assert input_spec(Combo("mode", options=("a",))) == [["a"], {}]
