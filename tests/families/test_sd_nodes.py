"""Stable Diffusion checkpoints through the graph: loading, every guidance on latents, bad input.

Tiny random-weight checkpoints written by ``guidegraph make-checkpoint``'s code (the single-file
LDM layout users keep, and a diffusers folder), in temporary model folders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from families import load_checkpoint
from families.base import CheckpointError, UnsafeModelFileError
from families.clip import write_random_clip
from families.sd.make import make_checkpoint
from families.shapes.networks import NoisyClassifier, save_network
from graph_runtime import Executor, Registry, WorkflowBuilder
from graph_runtime.context import Paths
from nodes import node_classes
from server.app import create_app
from tests.server.conftest import make_config, wait_done


@pytest.fixture(scope="module")
def sd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sd")
    make_checkpoint("sd1", root / "checkpoints" / "tiny_sd1.safetensors", size="tiny")
    make_checkpoint("sdxl", root / "checkpoints" / "tiny_sdxl.safetensors", size="tiny")
    make_checkpoint("sd1", root / "checkpoints" / "tiny_sd1_folder", size="tiny", fmt="diffusers")
    write_random_clip(root / "clip" / "tiny_clip.safetensors", "tiny")
    torch.manual_seed(0)
    config = {"channels": [8, 8], "blocks_per_level": 1, "emb_dim": 16, "labels": ["a", "b"]}
    for channels in (3, 4):
        meta = {
            "kind": "noisy_classifier",
            "config": {**config, "in_channels": channels},
            "labels": ["a", "b"],
        }
        net = NoisyClassifier(**config, in_channels=channels)
        save_network(net, root / "classifiers" / f"latent{channels}.safetensors", meta, half=False)
    good = (root / "checkpoints" / "tiny_sd1.safetensors").read_bytes()
    (root / "checkpoints" / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (root / "checkpoints" / "noise.safetensors").write_bytes(b"\x07" * 64)
    (root / "checkpoints" / "old.ckpt").write_bytes(b"\x80\x04K\x01.")
    (root / "input").mkdir()
    return root


@pytest.fixture
def model_dirs(sd_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    kinds = ("checkpoints", "clip", "classifiers")
    monkeypatch.setenv("GUIDEGRAPH_MODEL_DIRS", ":".join(f"{k}={sd_root / k}" for k in kinds))
    return sd_root


@pytest.fixture
def executor(model_dirs: Path, tmp_path: Path) -> Executor:
    paths = Paths(output=tmp_path / "output", temp=tmp_path / "temp", input=model_dirs / "input")
    return Executor(Registry(node_classes()), device="cpu", paths=paths)


def txt2img(
    executor: Executor, checkpoint: str, size: int = 64, null: str = "empty prompt", **extra: Any
) -> tuple[WorkflowBuilder, Any, Any]:
    wb = WorkflowBuilder(executor.registry)
    model = wb.add("Model", checkpoint=checkpoint)
    pos = wb.add("Condition", clip=model[1], text="a lighthouse at dawn")
    neg = wb.add("NullCondition", clip=model[1], meaning=null)
    guidance = wb.add("CFGCombine", model=model, positive=pos, negative=neg, scale=6.0)
    if "classifier" in extra:
        clf = wb.add("ClassifierLoader", classifier=extra["classifier"])
        guidance = wb.add("ClassifierGrad", guidance=guidance, classifier=clf, label="a", scale=2.0)
    if "clip" in extra:
        clip = wb.add("ClipLoader", clip=extra["clip"])
        guidance = wb.add(
            "ClipLoss", guidance=guidance, clip=clip, prompt="a lighthouse",
            scale=extra.get("clip_scale", 300.0), cutouts=2, through_denoiser=False, vae=model[2],
            decode_scale=0.5,
        )  # fmt: skip
    latent = wb.add("EmptyLatent", model=model, width=size, height=size, batch_size=1)
    sampled = wb.add(
        "Sampler", guidance=guidance, latent=latent, seed=1, steps=2, sampler_name="euler", scheduler="karras"
    )
    image = wb.add("Decode", latent=sampled, vae=model[2])
    wb.add("SaveImage", images=image, filename_prefix="sd", node_id="save")
    return wb, sampled, image


@pytest.mark.parametrize(
    ("checkpoint", "null"),
    [
        ("tiny_sd1.safetensors", "empty prompt"),
        ("tiny_sdxl.safetensors", "zeroed embedding"),
        ("tiny_sd1_folder", "empty prompt"),
    ],
)  # fmt: skip
def test_a_checkpoint_runs_txt2img_in_latent_space(executor: Executor, checkpoint: str, null: str) -> None:
    wb, sampled, image = txt2img(executor, checkpoint, size=72, null=null)
    result = executor.run(wb.prompt)
    assert result.ok, {k: f.message for k, f in result.failures.items()}
    assert result.outputs[sampled.id][0].samples.shape == (1, 4, 36, 36)  # 4 channels at 1/2 (tiny VAE)
    assert result.outputs[image.id][0].shape == (1, 72, 72, 3)


def test_the_folder_lists_a_diffusers_pipeline_as_one_checkpoint(executor: Executor) -> None:
    choices = executor.registry.get("Model").input("checkpoint").choices()  # type: ignore[union-attr]
    assert "tiny_sd1_folder" in choices
    assert not any(c.startswith("tiny_sd1_folder/") for c in choices)


def test_a_file_loads_once_and_is_shared(model_dirs: Path) -> None:
    path = model_dirs / "checkpoints" / "tiny_sd1.safetensors"
    first, second = load_checkpoint(path), load_checkpoint(path)
    assert first is second and first.variant == "sd1" and first.model.parametrization == "eps"
    assert load_checkpoint(path, variant="sd1") is first  # the detected variant, named
    with pytest.raises(CheckpointError, match="not one of the sd family"):
        load_checkpoint(path, variant="shapes_unet")


def test_the_prediction_override_makes_a_v_model(executor: Executor) -> None:
    from nodes.model_nodes import Model

    ctx_model = Model.run(executor_ctx(executor), "tiny_sd1.safetensors", "v", "float32")[0]
    assert ctx_model.parametrization == "v"


def executor_ctx(executor: Executor) -> Any:
    from graph_runtime.context import Context

    return Context(paths=executor.paths)


def test_classifier_guidance_runs_on_latents_and_refuses_a_pixel_classifier(executor: Executor) -> None:
    wb, _, _ = txt2img(executor, "tiny_sd1.safetensors", classifier="latent4.safetensors")
    assert executor.run(wb.prompt).ok
    wb, _, _ = txt2img(executor, "tiny_sd1.safetensors", classifier="latent3.safetensors")
    failure = next(iter(executor.run(wb.prompt).failures.values()))
    assert failure.class_type == "ClassifierGrad"
    assert "reads 3-channel inputs" in failure.message and "4-channel latents" in failure.message


def test_clip_guidance_goes_through_the_vae_decoder_and_steers(executor: Executor) -> None:
    outs = []
    for scale in (0.0, 3000.0):
        wb, sampled, _ = txt2img(
            executor, "tiny_sd1.safetensors", clip="tiny_clip.safetensors", clip_scale=scale
        )
        result = executor.run(wb.prompt)
        assert result.ok, {k: f.message for k, f in result.failures.items()}
        outs.append(result.outputs[sampled.id][0].samples)
    assert float((outs[0] - outs[1]).abs().max()) > 1e-3  # the gradient reached the latents


@pytest.mark.parametrize(
    ("checkpoint", "expected", "error"),
    [
        ("truncated.safetensors", "truncated or corrupt", CheckpointError),
        ("noise.safetensors", "not a safetensors file", UnsafeModelFileError),
        ("old.ckpt", "convert-checkpoint", UnsafeModelFileError),
    ],
)
def test_bad_checkpoints_get_a_clear_error_naming_the_file(
    model_dirs: Path, checkpoint: str, expected: str, error: type[Exception]
) -> None:
    with pytest.raises(error, match=expected) as info:
        load_checkpoint(model_dirs / "checkpoints" / checkpoint)
    assert checkpoint in str(info.value)


def test_a_classifier_file_is_not_a_checkpoint(model_dirs: Path) -> None:
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(model_dirs / "classifiers" / "latent4.safetensors")


def test_a_vae_of_another_model_is_refused_at_decode(executor: Executor) -> None:
    from graph_runtime.context import Context
    from nodes.diffusion.types import Latent
    from nodes.image_nodes import Decode
    from nodes.model_nodes import Model

    _, _, vae = Model.run(Context(), "tiny_sd1.safetensors", "auto", "auto")
    with pytest.raises(ValueError, match="3 channels but the VAE"):
        Decode.run(Context(), Latent(torch.zeros(1, 3, 8, 8)), vae)


def test_a_width_off_the_latent_grid_is_refused_naming_the_input(executor: Executor) -> None:
    from graph_runtime.context import Context
    from nodes.model_nodes import Model
    from nodes.sampling_nodes import EmptyLatent

    model = Model.run(Context(), "tiny_sd1.safetensors", "auto", "auto")[0]
    with pytest.raises(ValueError, match="width 100 is not a multiple of 8"):
        EmptyLatent.run(Context(), model, 100, 64, 1)
    assert EmptyLatent.run(Context(), model, 72, 64, 1)[0].samples.shape == (1, 4, 32, 36)


async def test_the_server_answers_bad_checkpoints_and_keeps_serving(
    aiohttp_client: Any, model_dirs: Path, tmp_path: Path
) -> None:
    app = create_app(make_config(tmp_path), registry=Registry(node_classes()))
    client = await aiohttp_client(app)
    bad = txt2img(Executor(Registry(node_classes())), "truncated.safetensors")[0].prompt
    good = txt2img(Executor(Registry(node_classes())), "tiny_sd1.safetensors")[0].prompt
    ids = []
    for prompt in (bad, good):
        response = await client.post("/prompt", json={"prompt": prompt})
        assert response.status == 200, await response.text()
        ids.append((await response.json())["prompt_id"])
    failed = await wait_done(client, ids[0], timeout=120)
    done = await wait_done(client, ids[1], timeout=120)
    assert failed["status"]["status_str"] == "error"
    error = json.dumps(failed["status"]["messages"])
    assert "truncated.safetensors" in error and "truncated or corrupt" in error
    assert done["status"]["status_str"] == "success"


def test_a_checkpoint_is_released_once_nothing_holds_it(model_dirs: Path) -> None:
    import gc
    import weakref

    path = model_dirs / "checkpoints" / "tiny_sdxl.safetensors"
    held = weakref.ref(load_checkpoint(path))
    gc.collect()
    assert held() is None  # the node cache (and /free, which clears it) decides how long weights live
