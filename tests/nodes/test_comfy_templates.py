"""ComfyUI's own template workflows for SDXL run unchanged (editor format, as the package ships them).

From ``comfyui-workflow-templates-json`` (ComfyUI's template package, JSON part): every template
whose nodes are all known here is run on tiny random-weight checkpoints under the names it expects,
with image sizes and step counts cut for speed (the graph itself is untouched). Measured on version
0.1.123: of 644 editor templates, these 3 are the SDXL ones; the rest need model families and nodes
guidegraph does not have (video, audio, Flux, SD3, Qwen-Image, ...).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from families.sd.make import make_checkpoint
from graph_runtime import Executor, Registry
from graph_runtime.context import Paths
from graph_runtime.validation import validate
from graph_runtime.workflow import to_api_prompt
from nodes import node_classes

SDXL_TEMPLATES = ("sdxl_simple_example", "image_sdxl_simple", "sdxl_refiner_prompt_example")
CHECKPOINTS = {"sd_xl_base_1.0.safetensors": "sdxl", "sd_xl_refiner_1.0.safetensors": "sdxl_refiner"}


def template(name: str) -> dict[str, Any]:
    folder = resources.files("comfyui_workflow_templates_json") / "templates"
    data: dict[str, Any] = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("templates")
    for name, variant in CHECKPOINTS.items():
        make_checkpoint(variant, root / name, size="tiny")
    return root


def smaller(prompt: dict[str, Any]) -> dict[str, Any]:
    """64 px and at most 4 steps (a base/refiner split moved to step 2); nothing else changes."""
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "EmptyLatentImage":
            inputs["width"] = inputs["height"] = 64
        if "steps" in inputs:
            inputs["steps"] = min(inputs["steps"], 4)
        if inputs.get("end_at_step", 10000) < 10000:
            inputs["end_at_step"] = 2
        if inputs.get("start_at_step", 0) > 0:
            inputs["start_at_step"] = 2
    return prompt


@pytest.mark.parametrize("name", SDXL_TEMPLATES)
def test_comfyui_sdxl_templates_run_unchanged(
    name: str, checkpoints: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GUIDEGRAPH_MODEL_DIRS", f"checkpoints={checkpoints}")
    registry = Registry(node_classes())
    prompt = to_api_prompt(template(name), registry)
    report = validate(prompt, registry)
    assert report.ok, report.messages()
    result = Executor(registry, device="cpu", paths=Paths(output=tmp_path)).run(smaller(prompt))
    assert result.ok, {k: f.message for k, f in result.failures.items()}
    assert any("images" in ui for ui in result.ui.values())
