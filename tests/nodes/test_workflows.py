"""Whole graphs through the runtime: guidance strategies as workflows, events, caching, PNG metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from graph_runtime import Executor, Registry
from graph_runtime.context import Paths
from graph_runtime.events import Event, Progress
from graph_runtime.workflow import WorkflowBuilder
from nodes import node_classes


@pytest.fixture
def executor(model_dirs: Path) -> Executor:
    paths = Paths(output=model_dirs / "output", temp=model_dirs / "temp", input=model_dirs / "input")
    return Executor(Registry(node_classes()), device="cpu", paths=paths)


def guided_workflow(executor: Executor, steps: int = 4) -> WorkflowBuilder:
    """Model → prompts → CFG → classifier gradient → CLIP loss → window → Sampler → Decode → grid → Save."""
    wb = WorkflowBuilder(executor.registry)
    model = wb.add("Model", checkpoint="tiny.safetensors")
    pos = wb.add("Condition", clip=model[1], text="a red circle")
    neg = wb.add("NullCondition", clip=model[1])
    cfg = wb.add("CFGCombine", model=model, positive=pos, negative=neg, scale=4.0)
    clf = wb.add("ClassifierLoader", classifier="tiny_cls.safetensors")
    grad = wb.add("ClassifierGrad", guidance=cfg, classifier=clf, label="red circle", scale=2.0)
    clip = wb.add("ClipLoader", clip="tiny_clip.safetensors")
    loss = wb.add("ClipLoss", guidance=grad, clip=clip, prompt="red", cutouts=2)
    windowed = wb.add("GuidanceWindow", guidance=loss, sigma_start=50.0, sigma_end=0.5)
    latent = wb.add("EmptyLatent", model=model, width=32, height=32, batch_size=2)
    sampled = wb.add(
        "Sampler",
        guidance=windowed,
        latent=latent,
        seed=5,
        steps=steps,
        sampler_name="dpmpp_2m",
        scheduler="karras",
        node_id="sampler",
    )
    image = wb.add("Decode", latent=sampled, vae=model[2])
    grid = wb.add("ImageGrid", images=image, column_labels="seed 5, seed 6")
    wb.add("SaveImage", images=grid, filename_prefix="test/guided", node_id="save")
    return wb


def test_a_guided_workflow_runs_reports_progress_and_embeds_itself(
    executor: Executor, model_dirs: Path
) -> None:
    events: list[Event] = []
    wb = guided_workflow(executor)
    result = executor.run(
        wb.prompt, on_event=events.append, extra_pnginfo={"workflow": {"version": 0.4}}, previews=True
    )
    assert result.ok, result.failures
    steps = [(e.value, e.max) for e in events if isinstance(e, Progress)]
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(e.preview is not None for e in events if isinstance(e, Progress))
    wb.set("sampler", "seed", 7)  # previews are made only when asked for (each one copies off the device)
    quiet: list[Event] = []
    assert executor.run(wb.prompt, on_event=quiet.append).ok
    assert [e.preview for e in quiet if isinstance(e, Progress)] == [None] * 4
    saved = result.ui["save"]["images"][0]
    with Image.open(model_dirs / "output" / saved["subfolder"] / saved["filename"]) as png:
        assert json.loads(png.text["prompt"])["save"]["class_type"] == "SaveImage"
        assert json.loads(png.text["workflow"]) == {"version": 0.4}


def test_rerunning_an_identical_workflow_executes_nothing_but_a_new_seed_resamples(
    executor: Executor,
) -> None:
    wb = guided_workflow(executor)
    first = executor.run(wb.prompt)
    again = executor.run(wb.prompt)
    assert first.ok and again.ok and again.executed == []
    sampler_id = next(i for i, n in wb.prompt.items() if n["class_type"] == "Sampler")
    wb.set(sampler_id, "seed", 6)
    third = executor.run(wb.prompt)
    assert sampler_id in third.executed and "1" not in third.executed  # the model is not reloaded


def test_negative_prompt_and_composable_workflow_batch_all_prompts(executor: Executor) -> None:
    wb = WorkflowBuilder(executor.registry)
    model = wb.add("Model", checkpoint="tiny.safetensors")
    conds = [wb.add("Condition", clip=model[1], text=t) for t in ("circle", "red", "square")]
    null = wb.add("NullCondition", clip=model[1])
    mix = wb.add(
        "Composable", model=model, unconditional=null, condition_1=conds[0], weight_1=2.0,
        condition_2=conds[1], weight_2=2.0, condition_3=conds[2], weight_3=-1.0,
    )  # fmt: skip
    latent = wb.add("EmptyLatent", model=model, width=32, height=32, batch_size=1)
    sampler = wb.add(
        "Sampler", guidance=mix, latent=latent, seed=1, steps=2, sampler_name="euler", scheduler="normal"
    )
    result = executor.run(wb.prompt, outputs=[sampler.id])
    assert result.ok, result.failures
    assert result.outputs[sampler.id][0].samples.shape == (1, 3, 32, 32)


def test_a_pickle_in_the_model_folder_fails_only_its_branch_with_a_clear_error(executor: Executor) -> None:
    wb = WorkflowBuilder(executor.registry)
    good = wb.add("Model", checkpoint="tiny.safetensors")
    latent = wb.add("EmptyLatent", model=good, width=32, height=32, batch_size=1)
    wb.add("SaveImage", images=wb.add("Decode", latent=latent, vae=good[2]), node_id="ok")
    bad_model = wb.add("Model", checkpoint="old.ckpt", node_id="bad")
    pos = wb.add("Condition", clip=bad_model[1], text="red")
    g = wb.add("Predict", model=bad_model, condition=pos)
    s = wb.add(
        "Sampler", guidance=g, latent=latent, seed=0, steps=1, sampler_name="euler", scheduler="karras"
    )
    wb.add("SaveImage", images=wb.add("Decode", latent=s, vae=bad_model[2]), node_id="doomed")
    result = executor.run(wb.prompt)
    assert "ok" in result.ui
    failure = next(iter(result.failures.values()))
    assert "pickle" in failure.message and failure.class_type == "Model"
    assert torch.is_tensor(result.outputs[latent.id][0].samples)
