"""Every shipped workflow runs end to end (with fewer steps and smaller batches) and writes its PNG."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from graph_runtime import Executor
from tests.workflows.conftest import NAMES, load_api, nodes_of, reduced


@pytest.mark.parametrize("name", NAMES)
def test_each_workflow_runs_and_saves_one_png_with_its_prompt_embedded(name: str, executor: Executor) -> None:
    prompt = reduced(load_api(name), steps=2, batch=1)
    result = executor.run(prompt)
    assert result.ok, {k: f.message for k, f in result.failures.items()}
    (save,) = nodes_of(prompt, "SaveImage")
    (image,) = result.ui[save]["images"]
    assert image["filename"].startswith(f"{name}_")
    with Image.open(executor.paths.output / image["subfolder"] / image["filename"]) as png:
        assert json.loads(png.info["prompt"]) == prompt


@pytest.mark.slow  # 16 guided runs of 4 seeds: minutes on a CPU
def test_the_showcase_grid_has_a_row_per_strategy_and_a_column_per_strength(executor: Executor) -> None:
    prompt = reduced(load_api("showcase"), steps=2, batch=4)
    result = executor.run(prompt)
    assert result.ok
    (grid,) = [n for n in nodes_of(prompt, "ImageGrid") if prompt[n]["inputs"]["row_labels"]]
    inputs = prompt[grid]["inputs"]
    rows = inputs["row_labels"].split("\n")
    columns = inputs["column_labels"].split("\n")
    assert len(rows) == 4 and len(columns) == inputs["columns"] == 4
    batch = result.outputs[inputs["images"][0]][0]  # (cells, H, W, C): every cell a 2x2 tile of seeds
    assert batch.shape[0] == len(rows) * len(columns)
    assert batch.shape[1] == batch.shape[2] == 2 * 32 + 3
    first_column = batch[:: len(columns)]  # the unguided cell, shared by every row
    assert all((cell == first_column[0]).all() for cell in first_column)
    samplers = nodes_of(prompt, "Sampler")
    assert {prompt[s]["inputs"]["seed"] for s in samplers} == {0}
    assert len({prompt[s]["inputs"]["latent"][0] for s in samplers}) == 1  # same seeds throughout
