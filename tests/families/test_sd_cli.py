"""``guidegraph make-checkpoint`` and ``guidegraph convert-checkpoint``, end to end in process."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from families.base import LoadOptions, Source
from families.sd.detect import detect_variant
from families.sd.files import load_components
from graph_runtime.cli import main


def test_make_checkpoint_writes_a_detectable_loadable_single_file(tmp_path: Path) -> None:
    out = tmp_path / "xl.safetensors"
    assert main(["make-checkpoint", "sdxl", "--size", "tiny", "--seed", "3", "-o", str(out)]) == 0
    source = Source.open(out)
    assert detect_variant(source) == "sdxl"
    assert source.shape("conditioner.embedders.1.model.positional_embedding") == (77, 48)
    again = tmp_path / "again.safetensors"
    assert main(["make-checkpoint", "sdxl", "--seed", "3", "-o", str(again)]) == 0
    assert all(torch.equal(v, load_file(again)[k]) for k, v in load_file(out).items())  # seeded


def test_make_checkpoint_folder_in_half_precision(tmp_path: Path) -> None:
    out = tmp_path / "sd2v"
    args = ["make-checkpoint", "sd2_v", "--format", "diffusers", "--dtype", "float16", "-o", str(out)]
    assert main(args) == 0
    assert detect_variant(Source.open(out)) == "sd2_v"
    got = load_components(Source.open(out), "sd2_v", LoadOptions(dtype=torch.float16))
    assert next(got.unet.parameters()).dtype == torch.float16
    assert got.scheduler_config["prediction_type"] == "v_prediction"


def test_make_checkpoint_refuses_to_overwrite_and_bad_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "a.safetensors"
    out.write_bytes(b"keep")
    assert main(["make-checkpoint", "sd1", "-o", str(out)]) == 2
    assert out.read_bytes() == b"keep"
    assert main(["make-checkpoint", "sd1", "-o", str(tmp_path / "a.ckpt")]) == 2
    assert main(["make-checkpoint", "sd7", "-o", str(tmp_path / "b.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "exists; pass --overwrite" in err and "written as .safetensors" in err
    assert "Traceback" not in err


def test_convert_checkpoint_unwraps_state_dict_and_writes_safetensors(tmp_path: Path) -> None:
    shared = torch.arange(12.0).reshape(3, 4)
    state = {"model.diffusion_model.out.2.weight": shared, "tied": shared, "view": shared[1]}
    torch.save({"state_dict": state, "global_step": 875000, "epoch": 3}, tmp_path / "m.ckpt")
    assert main(["convert-checkpoint", str(tmp_path / "m.ckpt")]) == 0
    written = load_file(tmp_path / "m.safetensors")
    assert set(written) == set(state) and all(torch.equal(written[k], v) for k, v in state.items())


class Payload:
    """Any class: weights_only unpickling refuses to rebuild it."""


def test_convert_checkpoint_refuses_code_corruption_and_non_tensors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "callback": Payload()}, tmp_path / "code.ckpt")
    (tmp_path / "broken.ckpt").write_bytes(b"PK\x03\x04 not really a zip")
    torch.save({"w": torch.zeros(2), "note": "text"}, tmp_path / "mixed.pt")
    torch.save(collections.OrderedDict(), tmp_path / "empty.pt")
    for name in ("code.ckpt", "broken.ckpt", "mixed.pt", "empty.pt", "missing.ckpt"):
        assert main(["convert-checkpoint", str(tmp_path / name), str(tmp_path / "out.safetensors")]) == 1
    assert not (tmp_path / "out.safetensors").exists()
    err = capsys.readouterr().err
    assert "code.ckpt: refused: it holds objects other than tensors" in err
    assert "broken.ckpt: not a readable torch checkpoint" in err
    assert "mixed.pt: entries that are not named tensors: note" in err
    assert "empty.pt: expected a state dict" in err and "missing.ckpt: no such file" in err
    assert "Traceback" not in err


def test_make_checkpoint_writes_a_clip_for_clip_guidance(tmp_path: Path) -> None:
    from families.clip import load_clip_model

    out = tmp_path / "clip.safetensors"
    assert main(["make-checkpoint", "clip", "-o", str(out)]) == 0
    clip = load_clip_model(out, LoadOptions())
    assert clip.encode_text(["a lighthouse"]).shape[0] == 1
    assert main(["make-checkpoint", "clip", "--format", "diffusers", "-o", str(tmp_path / "c")]) == 2
