"""Fixtures for the shipped workflows: the real node library, the shipped models, a CPU executor.

The shapes workflows read the shipped weights in ``models/`` (they are part of the repository), so
these tests run exactly what a user runs. The Stable Diffusion workflows name the checkpoints users
keep; here those names hold tiny random-weight checkpoints made by ``guidegraph make-checkpoint``'s
code (:data:`SD_FILES`). ``reduced`` cuts sampler steps, batch sizes and SD image sizes for speed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from graph_runtime import Executor, Registry
from graph_runtime.context import Paths
from graph_runtime.folders import register_folders
from nodes import node_pack

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
NAMES = (
    "cfg",
    "cfg_negative",
    "classifier",
    "clip",
    "cfg_classifier",
    "cfg_clip",
    "composable",
    "cfg_window",
    "scale_sweep",
    "showcase",
    "sd15_txt2img",
    "sd15_negative_prompt",
    "sd15_clip_guided",
    "sd15_instruct_pix2pix",
    "sdxl_txt2img",
    "apg",
    "cfg_zero_star",
    "cfg_pp",
    "cfg_rescale",
    "cfg_interval",
    "cfg_schedule",
    "pag",
    "seg",
    "sag",
    "perp_neg",
    "tcfg",
    "autoguidance",
    "universal_guidance",
)
# What the SD workflows name, as (folder kind, file name, what to write there).
SD_FILES = (
    ("checkpoints", "v1-5-pruned-emaonly.safetensors", "sd1"),
    ("checkpoints", "sd_xl_base_1.0.safetensors", "sdxl"),
    ("clip", "clip_vit_b32.safetensors", "clip"),
    ("checkpoints", "instruct-pix2pix-00-22000.safetensors", "sd1_ip2p"),
    ("input", "ip2p_example.png", "image"),
)
SD_SIZE = 64  # pixels; the tiny VAE downscales by 2


def load_api(name: str) -> dict[str, Any]:
    """The shipped API prompt ``workflows/<name>.api.json``."""
    data: dict[str, Any] = json.loads((WORKFLOWS / f"{name}.api.json").read_text(encoding="utf-8"))
    return data


def load_ui(name: str) -> dict[str, Any]:
    """The shipped editor workflow ``workflows/<name>.ui.json``."""
    data: dict[str, Any] = json.loads((WORKFLOWS / f"{name}.ui.json").read_text(encoding="utf-8"))
    return data


def nodes_of(prompt: dict[str, Any], class_type: str) -> list[str]:
    return [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]


def reduced(prompt: dict[str, Any], steps: int = 2, batch: int = 1) -> dict[str, Any]:
    """A copy of ``prompt`` with every Sampler at ``steps`` steps and every EmptyLatent of ``batch``."""
    out = json.loads(json.dumps(prompt))
    for node_id in nodes_of(out, "Sampler"):
        out[node_id]["inputs"]["steps"] = steps
    for node_id in nodes_of(out, "EmptyLatent"):
        inputs = out[node_id]["inputs"]
        inputs["batch_size"] = batch
        if inputs["width"] > SD_SIZE:  # a Stable Diffusion workflow, here on a tiny random checkpoint
            inputs["width"] = inputs["height"] = SD_SIZE
    for node_id in nodes_of(out, "Decode"):
        if out[node_id]["inputs"].get("tile_size"):
            out[node_id]["inputs"]["tile_size"] = SD_SIZE // 2  # still tiled, in 4 tiles
    return out


def write_sd_models(root: Path) -> dict[str, list[Path]]:
    """Tiny random checkpoints (a CLIP, an image to edit) under the names the SD workflows use;
    folders by kind."""
    from families.clip import write_random_clip
    from families.sd.make import make_checkpoint

    for kind, name, what in SD_FILES:
        path = root / kind / name
        if what == "clip":
            write_random_clip(path, "tiny")
        elif what == "image":  # the picture an InstructPix2Pix workflow edits, at the tiny size
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (SD_SIZE, SD_SIZE), (40, 90, 200)).save(path)
        else:
            make_checkpoint(what, path, size="tiny")
    return {kind: [root / kind] for kind in {k for k, _, _ in SD_FILES}}


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """The built-in nodes, with the shipped model folders registered (as the entry point does) and
    the random SD checkpoints the SD workflows name."""
    pack = node_pack()
    register_folders(pack.model_folders)
    register_folders(write_sd_models(tmp_path_factory.mktemp("sd-models")))
    return Registry(pack.nodes)


@pytest.fixture(scope="session")
def executor(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Executor:
    """One CPU executor for the directory, so models load once; outputs go to a temp folder."""
    root = tmp_path_factory.mktemp("workflow-runs")
    paths = Paths(output=root / "output", temp=root / "temp", input=root / "input")
    return Executor(registry, device="cpu", paths=paths)
