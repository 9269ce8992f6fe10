"""SD detection from headers: real full-size key sets and shapes (built on the meta device, no weights)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from families.base import CheckpointError, Source, TensorInfo
from families.sd.configs import variant_configs, write_config_folder
from families.sd.detect import V_STATISTIC_KEY, detect_prediction, detect_variant
from families.sd.ldm import to_single_file
from families.sd.make import networks


@cache
def full_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    """Every key and shape of a full-size ``variant`` single file, as our writer lays it out."""
    configs = variant_configs(variant)
    with torch.device("meta"):
        unet, vae, encoders = networks(variant, configs)
    return {k: tuple(v.shape) for k, v in to_single_file(variant, configs, unet, vae, encoders).items()}


def header(shapes: dict[str, tuple[int, ...]], path: str = "model.safetensors", **metadata: str) -> Source:
    tensors = {k: TensorInfo("F16", s) for k, s in shapes.items()}
    return Source(Path(path), tensors, metadata)


@pytest.mark.parametrize("variant", ["sd1", "sd2", "sdxl", "sdxl_refiner", "sd1_ip2p"])
def test_full_size_layouts_are_told_apart_by_keys_and_shapes(variant: str) -> None:
    assert detect_variant(header(full_shapes(variant))) == variant


@pytest.mark.parametrize("variant", ["sd1", "sd2", "sdxl", "sdxl_refiner"])
def test_detection_agrees_with_diffusers_own_detector(variant: str) -> None:
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    meta = {k: torch.empty(s, device="meta") for k, s in full_shapes(variant).items()}
    theirs = infer_diffusers_model_type(meta)
    assert {"v1": "sd1", "v2": "sd2", "xl_base": "sdxl", "xl_refiner": "sdxl_refiner"}[theirs] == variant


def test_a_unet_only_sdxl_file_is_told_by_its_size_embedding() -> None:
    unet_only = {k: s for k, s in full_shapes("sdxl").items() if k.startswith("model.diffusion_model.")}
    assert detect_variant(header(unet_only)) == "sdxl"


@pytest.mark.parametrize(("spread", "variant"), [(0.2, "sd2_v"), (0.02, "sd2")])
def test_sd2_epsilon_or_v_from_the_weight_statistic(spread: float, variant: str, tmp_path: Path) -> None:
    shapes = full_shapes("sd2")
    path = tmp_path / "sd2.safetensors"
    generator = torch.Generator().manual_seed(0)
    save_file({V_STATISTIC_KEY: torch.randn(shapes[V_STATISTIC_KEY], generator=generator) * spread}, path)
    assert detect_variant(header(shapes, str(path))) == variant


def test_sd2_without_evidence_is_epsilon_and_modelspec_decides() -> None:
    shapes = full_shapes("sd2")
    assert detect_variant(header(shapes)) == "sd2"
    declared = {"modelspec.architecture": "stable-diffusion-v2-768-v"}
    assert detect_variant(header(shapes, **declared)) == "sd2_v"
    assert detect_variant(header(shapes, **{"modelspec.prediction_type": "v"})) == "sd2_v"


def test_our_metadata_takes_precedence_over_keys() -> None:
    assert detect_variant(header(full_shapes("sd1"), **{"guidegraph.variant": "sd2_v"})) == "sd2_v"
    with pytest.raises(CheckpointError, match=r"metadata names SD variant 'sd9'"):
        detect_variant(header(full_shapes("sd1"), **{"guidegraph.variant": "sd9"}))


def test_declared_prediction_of_sdxl_finetunes() -> None:
    shapes = full_shapes("sdxl")
    assert detect_prediction(header(shapes)) is None
    assert detect_prediction(header({**shapes, "v_pred": ()})) == "v"
    assert detect_prediction(header(shapes, **{"modelspec.prediction_type": "epsilon"})) == "eps"


def test_known_unsupported_layouts_are_named() -> None:
    inpaint = {**full_shapes("sd1"), "model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)}
    with pytest.raises(CheckpointError, match=r"model.safetensors: .*inpainting.*Supported Stable Diffusion"):
        detect_variant(header(inpaint))
    xl_ip2p = {**full_shapes("sdxl"), "model.diffusion_model.input_blocks.0.0.weight": (320, 8, 3, 3)}
    with pytest.raises(
        CheckpointError, match=r"InstructPix2Pix UNet \(8 input channels\) not built on SD 1.x"
    ):
        detect_variant(header(xl_ip2p))
    sd3 = {"model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight": (4608, 1536)}
    with pytest.raises(CheckpointError, match=r"Stable Diffusion 3"):
        detect_variant(header(sd3))
    with pytest.raises(CheckpointError, match=r"Flux"):
        detect_variant(header({"double_blocks.0.img_attn.norm.key_norm.scale": (128,)}))
    with pytest.raises(CheckpointError, match=r"Playground"):
        detect_variant(header({**full_shapes("sdxl"), "edm_mean": (1, 4, 1, 1)}))
    vae = {k: s for k, s in full_shapes("sd1").items() if k.startswith("first_stage_model.")}
    with pytest.raises(CheckpointError, match=r"a VAE on its own"):
        detect_variant(header(vae))


def test_other_files_are_not_sd() -> None:
    assert detect_variant(header({"net.0.weight": (16, 3, 3, 3)})) is None


@pytest.mark.parametrize("variant", ["sd1", "sd2", "sd2_v", "sdxl", "sdxl_refiner", "sd1_ip2p"])
def test_diffusers_folders_are_told_by_their_configs(variant: str, tmp_path: Path) -> None:
    folder = write_config_folder(variant_configs(variant), tmp_path / variant)
    assert detect_variant(Source.open(folder)) == variant


def test_unsupported_diffusers_folders_are_named(tmp_path: Path) -> None:
    configs = variant_configs("sd1")
    configs["unet"]["in_channels"] = 9
    with pytest.raises(CheckpointError, match=r"9 input channels"):
        detect_variant(Source.open(write_config_folder(configs, tmp_path / "inpaint")))
    flux = tmp_path / "flux"
    flux.mkdir()
    (flux / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    with pytest.raises(CheckpointError, match=r"flux: this looks like Flux"):
        detect_variant(Source.open(flux))
