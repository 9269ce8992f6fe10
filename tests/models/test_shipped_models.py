"""The shipped weights: safetensors with complete metadata, a model card each, and the promised calls."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from families.shapes.data import CLASS_NAMES, ShapesDataset, caption_for
from families.shapes.networks import load_network
from nodes import MODELS_DIR
from nodes.diffusion.conventions import vp_sigmas

SHIPPED = {
    "checkpoints/shapes_unet.safetensors": "denoiser",
    "checkpoints/shapes_unet_small.safetensors": "denoiser",
    "classifiers/shapes_noisy_classifier.safetensors": "noisy_classifier",
    "clip/shapes_clip.safetensors": "clip",
    "evaluators/shapes_evaluator.safetensors": "evaluator",
}


@pytest.mark.parametrize(("name", "kind"), sorted(SHIPPED.items()))
def test_shipped_model_loads_with_its_metadata_and_card(name: str, kind: str) -> None:
    path = MODELS_DIR / name
    loaded = load_network(path)
    meta = loaded.metadata
    assert meta["kind"] == kind
    assert isinstance(meta["config"], dict) and meta["architecture"]
    training = meta["training"]
    for key in ("data", "steps", "batch", "seed", "wall_time_s", "device"):
        assert key in training, key
    assert training["steps"] > 1000 and meta["metrics"]
    assert not loaded.module.training
    assert all(p.dtype == torch.float32 for p in loaded.module.parameters())
    card = path.with_suffix(".md").read_text()
    assert str(training["steps"]) in card and "Metrics" in card


def test_denoiser_metadata_names_parametrization_and_schedule() -> None:
    meta = load_network(MODELS_DIR / "checkpoints/shapes_unet.safetensors").metadata
    assert meta["parametrization"] == "eps"
    schedule = meta["schedule"]
    assert schedule["type"] == "discrete_vp"
    assert len(vp_sigmas(schedule["beta_schedule"], schedule["timesteps"])) == schedule["timesteps"]


def test_the_weak_denoiser_is_a_smaller_less_trained_version_of_the_same_model() -> None:
    """Autoguidance (Karras et al. 2024) needs the same task, schedule and conditions, less capacity."""
    good = load_network(MODELS_DIR / "checkpoints/shapes_unet.safetensors")
    weak = load_network(MODELS_DIR / "checkpoints/shapes_unet_small.safetensors")
    for key in ("architecture", "parametrization", "schedule", "null_condition"):
        assert weak.metadata[key] == good.metadata[key], key
    assert weak.module.labels == good.module.labels and weak.module.vocab == good.module.vocab
    assert weak.metadata["training"]["parameters"] < good.metadata["training"]["parameters"] / 4
    assert weak.metadata["training"]["examples_seen"] < good.metadata["training"]["examples_seen"] / 4
    t = "t=250 (sigma=0.958)"
    assert weak.metadata["metrics"]["eps_mse_cond"][t] > good.metadata["metrics"]["eps_mse_cond"][t]


def test_denoiser_prompt_and_label_embeddings_agree() -> None:
    unet = load_network(MODELS_DIR / "checkpoints/shapes_unet.safetensors").module
    labels = torch.arange(len(CLASS_NAMES))
    by_prompt = unet.encode_prompts([caption_for(k) for k in range(len(CLASS_NAMES))])
    torch.testing.assert_close(unet.encode_labels(labels), by_prompt)
    eps = unet(torch.randn(2, 3, 32, 32), torch.tensor([10.0, 900.0]), unet.encode_prompts(["", "red"]))
    assert eps.shape == (2, 3, 32, 32) and torch.isfinite(eps).all()


def test_classifiers_carry_the_class_names() -> None:
    for name in (
        "classifiers/shapes_noisy_classifier.safetensors",
        "evaluators/shapes_evaluator.safetensors",
    ):
        loaded = load_network(MODELS_DIR / name)
        assert loaded.metadata["labels"] == list(CLASS_NAMES) == loaded.module.labels


@torch.no_grad()
def test_evaluator_and_noisy_classifier_read_fresh_pictures() -> None:
    batch = ShapesDataset(seed=123).batch(0, 64)
    judge = load_network(MODELS_DIR / "evaluators/shapes_evaluator.safetensors").module
    assert (judge(batch.images).argmax(-1) == batch.labels).float().mean() > 0.95
    noisy = load_network(MODELS_DIR / "classifiers/shapes_noisy_classifier.safetensors").module
    x = batch.images + 0.2 * torch.randn_like(batch.images)
    assert (noisy(x, torch.full((64,), 0.2)).argmax(-1) == batch.labels).float().mean() > 0.9


@torch.no_grad()
def test_clip_matches_pictures_to_their_captions() -> None:
    clip = load_network(MODELS_DIR / "clip/shapes_clip.safetensors").module
    batch = ShapesDataset(seed=321).batch(0, 64)
    texts = clip.encode_text([caption_for(k) for k in range(len(CLASS_NAMES))])
    images = clip.encode_image(batch.images)
    assert torch.allclose(images.norm(dim=-1), torch.ones(64), atol=1e-4)
    assert ((images @ texts.T).argmax(-1) == batch.labels).float().mean() > 0.95


def test_shipped_weights_stay_lean() -> None:
    total = sum((MODELS_DIR / name).stat().st_size for name in SHIPPED)
    assert total < 40 * 2**20, f"{total / 2**20:.1f} MiB of weights"


def test_models_dir_holds_no_pickles() -> None:
    suffixes = {".ckpt", ".pt", ".pth", ".bin", ".pkl"}
    assert not [p for p in Path(MODELS_DIR).rglob("*") if p.suffix in suffixes]
