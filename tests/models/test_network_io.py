"""Safetensors I/O: metadata round-trips, pickles and look-alikes are refused with a clear error."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from families.shapes.networks import (
    ARCHITECTURES,
    Evaluator,
    ModelMetadataError,
    NoisyClassifier,
    UnsafeModelFileError,
    load_network,
    save_network,
)

META = {
    "kind": "evaluator",
    "config": {"channels": [8, 8, 8, 8], "blocks_per_level": 1, "labels": ["a", "b"]},
    "labels": ["a", "b"],
}


def small_evaluator() -> Evaluator:
    return Evaluator(channels=[8, 8, 8, 8], blocks_per_level=1, labels=["a", "b"])


def test_save_then_load_round_trips_weights_and_metadata(tmp_path: Path) -> None:
    module = small_evaluator()
    meta = dict(META, metrics={"accuracy": 0.5})
    path = save_network(module, tmp_path / "e.safetensors", meta, half=False)
    loaded = load_network(path)
    assert loaded.metadata["architecture"] == "evaluator"
    assert loaded.metadata["metrics"] == {"accuracy": 0.5}
    assert loaded.kind == "evaluator"
    assert not loaded.module.training
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.module(x), module.eval()(x))


def test_half_precision_files_load_as_float32(tmp_path: Path) -> None:
    path = save_network(small_evaluator(), tmp_path / "e.safetensors", META, half=True)
    loaded = load_network(path)
    assert all(p.dtype == torch.float32 for p in loaded.module.parameters())


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin", ".pkl"])
def test_refuses_pickle_suffixes_without_reading_them(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(UnsafeModelFileError, match="pickle"):
        load_network(path)


def test_refuses_a_pickle_renamed_to_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "sneaky.safetensors"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(UnsafeModelFileError, match="not safetensors"):
        load_network(path)


def test_refuses_a_torch_save_archive_renamed_to_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "archive.safetensors"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(UnsafeModelFileError):
        load_network(path)


def test_refuses_garbage_bytes(tmp_path: Path) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(UnsafeModelFileError, match="not a safetensors file"):
        load_network(path)


def test_unsafe_model_error_is_a_value_error() -> None:
    assert issubclass(UnsafeModelFileError, ValueError)


def test_metadata_must_name_kind_architecture_and_config(tmp_path: Path) -> None:
    with pytest.raises(ModelMetadataError, match="kind"):
        save_network(small_evaluator(), tmp_path / "x.safetensors", {"config": {}})
    with pytest.raises(ModelMetadataError, match="schedule"):
        save_network(
            NoisyClassifier(channels=[8, 8, 8, 8]),
            tmp_path / "y.safetensors",
            {"kind": "denoiser", "config": {}, "parametrization": "eps"},
        )


def test_every_architecture_is_registered() -> None:
    assert set(ARCHITECTURES) == {"shapes_unet", "noisy_classifier", "shapes_clip", "evaluator"}
