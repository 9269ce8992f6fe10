"""SD single files and folders: our writer against diffusers' reader, diffusers' writer against ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from families.base import CheckpointError, LoadOptions, Source, UnsafeModelFileError
from families.sd.configs import variant_configs, write_config_folder
from families.sd.files import load_components, load_vae
from families.sd.make import build_networks, write_diffusers_folder, write_single_file
from families.sd.tokenizer import clip_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "sd1_script"


def assert_same_weights(expected: nn.Module, actual: nn.Module) -> None:
    a, b = expected.state_dict(), actual.state_dict()
    a = {k: v for k, v in a.items() if not k.endswith("position_ids")}
    b = {k: v for k, v in b.items() if not k.endswith("position_ids")}
    assert set(a) == set(b)
    unequal = [k for k in a if not torch.equal(a[k], b[k])]
    assert not unequal, unequal[:5]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, tuple]]:  # type: ignore[type-arg]
    """variant -> (single file, (configs, unet, vae, encoders)) for three variants."""
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for variant in ("sd1", "sd2_v", "sdxl"):
        built = build_networks(variant, "tiny", seed=1)
        out[variant] = (write_single_file(root / f"{variant}.safetensors", variant, *built), built)
    return out


@pytest.mark.parametrize("variant", ["sd1", "sd2_v", "sdxl"])
def test_diffusers_pipeline_reads_our_single_file_to_identical_weights(
    tiny: dict[str, tuple[Path, tuple]],  # type: ignore[type-arg]
    variant: str,
    tmp_path: Path,
) -> None:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    path, (configs, unet, vae, encoders) = tiny[variant]
    folder = str(write_config_folder(configs, tmp_path / "config"))
    common = {"config": folder, "local_files_only": True, "torch_dtype": torch.float32}
    if variant == "sdxl":
        pipe = StableDiffusionXLPipeline.from_single_file(
            str(path), tokenizer=clip_tokenizer("<|endoftext|>"), tokenizer_2=clip_tokenizer("!"), **common
        )
        loaded = [pipe.text_encoder, pipe.text_encoder_2]
    else:
        pad = "<|endoftext|>" if variant == "sd1" else "!"
        pipe = StableDiffusionPipeline.from_single_file(
            str(path),
            tokenizer=clip_tokenizer(pad),
            safety_checker=None,
            requires_safety_checker=False,
            **common,
        )
        loaded = [pipe.text_encoder]
    assert_same_weights(unet, pipe.unet)
    assert_same_weights(vae, pipe.vae)
    for expected, actual in zip(encoders.values(), loaded, strict=True):
        assert_same_weights(expected, actual)
    assert pipe.scheduler.config.prediction_type == ("v_prediction" if variant == "sd2_v" else "epsilon")


@pytest.mark.parametrize("variant", ["sd1", "sd2_v", "sdxl"])
def test_load_components_reads_our_single_file_exactly(
    tiny: dict[str, tuple[Path, tuple]],  # type: ignore[type-arg]
    variant: str,
) -> None:
    path, (_, unet, vae, encoders) = tiny[variant]
    got = load_components(Source.open(path), variant, LoadOptions())
    assert_same_weights(unet, got.unet)
    assert_same_weights(vae, got.vae)
    for expected, actual in zip(encoders.values(), got.text_encoders, strict=True):
        assert_same_weights(expected, actual)
    assert (
        got.pad_tokens == {"sd1": ["<|endoftext|>"], "sd2_v": ["!"], "sdxl": ["<|endoftext|>", "!"]}[variant]
    )
    assert not any(p.requires_grad for p in got.unet.parameters()) and not got.unet.training
    assert next(got.unet.parameters()).dtype == torch.float32


def test_reads_a_file_written_by_diffusers_converter_exactly() -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = FIXTURE / "diffusers"
    configs = {
        c: json.loads((folder / c / "config.json").read_text()) for c in ("unet", "vae", "text_encoder")
    }
    got = load_components(
        Source.open(FIXTURE / "sd1_script.safetensors"),
        "sd1",
        LoadOptions(dtype=torch.float16),
        configs=configs,
    )
    fp16 = torch.float16
    assert_same_weights(UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=fp16), got.unet)
    assert_same_weights(AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=fp16), got.vae)
    text = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=fp16)
    assert_same_weights(text, got.text_encoders[0])


def test_diffusers_folder_loads_and_diffusers_reads_it_too(tmp_path: Path) -> None:
    from diffusers import StableDiffusionXLPipeline

    configs, unet, vae, encoders = build_networks("sdxl", "tiny", seed=2)
    folder = write_diffusers_folder(tmp_path / "xl", "sdxl", configs, unet, vae, encoders)
    got = load_components(Source.open(folder), "sdxl", LoadOptions())
    assert_same_weights(unet, got.unet)
    assert_same_weights(encoders["text_encoder_2"], got.text_encoders[1])
    pipe = StableDiffusionXLPipeline.from_pretrained(str(folder), local_files_only=True)
    assert_same_weights(vae, pipe.vae)
    astronaut = [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
    assert pipe.tokenizer_2("a photograph of an astronaut riding a horse").input_ids == astronaut


def test_loading_never_opens_a_connection(
    tiny: dict[str, tuple[Path, tuple]],  # type: ignore[type-arg]
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    attempts: list[object] = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: attempts.append(address))
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: attempts.append(address))
    load_components(Source.open(tiny["sdxl"][0]), "sdxl", LoadOptions())
    built = build_networks("sd1", "tiny", seed=0)
    folder = write_diffusers_folder(tmp_path / "sd1", "sd1", *built)
    load_components(Source.open(folder), "sd1", LoadOptions())
    assert attempts == []


def test_prediction_override_and_dtype(tiny: dict[str, tuple[Path, tuple]]) -> None:  # type: ignore[type-arg]
    path = tiny["sd2_v"][0]
    assert load_components(Source.open(path), "sd2_v", LoadOptions()).scheduler_config["prediction_type"] == (
        "v_prediction"
    )
    eps = load_components(Source.open(path), "sd2_v", LoadOptions(dtype=torch.bfloat16), prediction="eps")
    assert eps.scheduler_config["prediction_type"] == "epsilon"
    assert next(eps.vae.parameters()).dtype == torch.bfloat16
    v = load_components(Source.open(tiny["sd1"][0]), "sd1", LoadOptions(prediction="v"))
    assert v.scheduler_config["prediction_type"] == "v_prediction"


def test_full_size_configs_are_the_published_models() -> None:
    sd1, xl, refiner = variant_configs("sd1"), variant_configs("sdxl"), variant_configs("sdxl_refiner")
    assert sd1["unet"]["cross_attention_dim"] == 768 and sd1["vae"].get("scaling_factor", 0.18215) == 0.18215
    assert variant_configs("sd2_v")["scheduler"]["prediction_type"] == "v_prediction"
    assert variant_configs("sd2")["scheduler"]["prediction_type"] == "epsilon"
    assert (
        variant_configs("sd2")["unet"]["sample_size"] == 64
        and variant_configs("sd2_v")["unet"]["sample_size"] == 96
    )
    assert (
        xl["unet"]["projection_class_embeddings_input_dim"] == 2816 and xl["vae"]["scaling_factor"] == 0.13025
    )
    assert xl["text_encoder_2"]["hidden_size"] == 1280 and xl["text_encoder_2"]["num_hidden_layers"] == 32
    assert refiner["unet"]["projection_class_embeddings_input_dim"] == 2560 and "text_encoder" not in refiner
    tiny = variant_configs("sdxl", "tiny")
    assert tiny["text_encoder"]["hidden_size"] != tiny["text_encoder_2"]["hidden_size"]
    assert tiny["text_encoder"]["vocab_size"] == 49408 and tiny["text_encoder"]["eos_token_id"] == 49407


# ---- separate VAE files ------------------------------------------------------------------------------


def test_vae_files_in_every_layout_load_to_the_same_weights(
    tiny: dict[str, tuple[Path, tuple]],  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    path, (configs, _, vae, _) = tiny["sd1"]
    prefixed = {k: v for k, v in load_file(path).items() if k.startswith("first_stage_model.")}
    save_file(prefixed, tmp_path / "ldm.safetensors")
    save_file(
        {k.removeprefix("first_stage_model."): v for k, v in prefixed.items()}, tmp_path / "bare.safetensors"
    )
    save_file(dict(vae.state_dict()), tmp_path / "diffusers.safetensors")
    for name in ("ldm", "bare", "diffusers"):
        assert_same_weights(vae, load_vae(tmp_path / f"{name}.safetensors", LoadOptions(), configs["vae"]))
    assert_same_weights(vae, load_vae(path, LoadOptions(), configs["vae"]))  # a whole checkpoint's VAE


def test_a_vae_that_does_not_match_is_refused_by_name(
    tiny: dict[str, tuple[Path, tuple]],  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    path, (configs, _, vae, _) = tiny["sd1"]
    with pytest.raises(CheckpointError, match=r"sd1\.safetensors: .*first layer has 32 channels.*128"):
        load_vae(path, LoadOptions())  # a tiny VAE where the real SD architecture is expected
    state = dict(vae.state_dict())
    state["decoder.conv_in.weight"] = torch.zeros(64, 16, 3, 3)
    save_file(state, tmp_path / "flux_like.safetensors")
    with pytest.raises(CheckpointError, match=r"flux_like.safetensors: this VAE has 16 latent channels"):
        load_vae(tmp_path / "flux_like.safetensors", LoadOptions(), configs["vae"])
    save_file({"model.diffusion_model.out.2.weight": torch.zeros(4, 4)}, tmp_path / "unet.safetensors")
    with pytest.raises(CheckpointError, match=r"unet.safetensors: not a VAE"):
        load_vae(tmp_path / "unet.safetensors", LoadOptions())


# ---- bad input ---------------------------------------------------------------------------------------


def test_bad_files_give_clear_errors_naming_the_file(
    tiny: dict[str, tuple[Path, tuple]],  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    good = tiny["sd1"][0].read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match=r"cut.safetensors: truncated"):
        load_components(Source.open(tmp_path / "cut.safetensors"), "sd1", LoadOptions())
    (tmp_path / "noise.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(UnsafeModelFileError, match=r"noise.safetensors: not a safetensors file"):
        Source.open(tmp_path / "noise.safetensors")
    torch.save({"state_dict": {}}, tmp_path / "model.ckpt")
    with pytest.raises(UnsafeModelFileError, match=r"model.ckpt.*convert-checkpoint"):
        load_vae(tmp_path / "model.ckpt", LoadOptions())
    state = load_file(tiny["sd1"][0])
    del state["model.diffusion_model.out.2.weight"]
    save_file(state, tmp_path / "holey.safetensors")
    with pytest.raises(CheckpointError, match=r"holey.safetensors: .*UNet"):
        load_components(Source.open(tmp_path / "holey.safetensors"), "sd1", LoadOptions())


def test_a_file_of_another_variant_is_an_error_not_a_crash(
    tiny: dict[str, tuple[Path, tuple]],  # type: ignore[type-arg]
) -> None:
    with pytest.raises(CheckpointError, match=r"sd1.safetensors: "):
        load_components(
            Source.open(tiny["sd1"][0]), "sdxl", LoadOptions(), configs=variant_configs("sdxl", "tiny")
        )
