"""Perturbed-prediction leaves (PAG, SEG, skip-layer) on the shipped UNet architecture: one batched
forward per step, the perturbation confined to its own slice, and SEG's blur against diffusers'."""

from __future__ import annotations

import pytest
import torch
from diffusers.hooks.smoothed_energy_guidance_utils import _gaussian_blur_2d

from families.shapes.family import ShapesText
from nodes.diffusion.conventions import Denoiser
from nodes.diffusion.guidance import Difference, Prediction, cfg
from nodes.diffusion.perturbation import (
    INFINITE_BLUR,
    Perturbation,
    blur_queries,
    check_layers,
    matching_layers,
)
from nodes.diffusion.program import CompiledGuidance
from nodes.diffusion.types import Conditioning

CPU = torch.device("cpu")
PERTURBATIONS = [
    Perturbation("identity_attention", ("mid",)),
    Perturbation("blurred_queries", ("mid",), 1.0),
    Perturbation("blurred_queries", ("mid",), INFINITE_BLUR),
    Perturbation("skip_layer", ("mid", "up.0")),
]


def conditions(model: Denoiser) -> tuple[Conditioning, Conditioning]:
    text = ShapesText(model.network, model.name)
    return text.encode_text("a red circle"), text.encode_text("")


def evaluate(program, x: torch.Tensor, max_batch: int = 0) -> tuple[torch.Tensor, CompiledGuidance]:
    compiled = CompiledGuidance(program, seeds=range(x.shape[0]), device=CPU, max_batch=max_batch)
    with torch.no_grad():
        return compiled(x, torch.full((x.shape[0],), 3.0)), compiled


@pytest.mark.parametrize("perturbation", PERTURBATIONS, ids=lambda p: f"{p.kind}-{p.blur_sigma:g}")
def test_pag_plus_cfg_is_one_forward_and_perturbs_only_its_slice(unet: Denoiser, perturbation) -> None:
    pos, null = conditions(unet)
    c, u = Prediction(unet, pos), Prediction(unet, null)
    perturbed = Prediction(unet, pos, perturbation=perturbation)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    out, compiled = evaluate(Difference(cfg(c, u, 5.0), c, perturbed, 3.0), x)
    assert compiled.stats.model_calls == 1 and compiled.stats.rows == 6  # [c, u, c̃] in one forward
    dc, du, dp = (evaluate(leaf, x)[0] for leaf in (c, u, perturbed))  # each alone
    assert torch.allclose(out, du + 5.0 * (dc - du) + 3.0 * (dc - dp), atol=5e-4)  # |values| ≈ 5, weights 9
    assert (dc - dp).abs().max() > 1e-3  # the perturbation changes the prediction
    split, _ = evaluate(Difference(cfg(c, u, 5.0), c, perturbed, 3.0), x, max_batch=3)
    assert torch.allclose(split, out, atol=5e-4)  # chunk boundaries cut through the slices


def test_identity_attention_returns_the_values() -> None:
    q, k, v = (torch.randn(2, 2, 16, 4) for _ in range(3))
    assert torch.equal(Perturbation("identity_attention", ("mid",)).attend(q, k, v, (4, 4)), v)
    assert Perturbation("skip_layer", ("mid",)).attend(q, k, v, (4, 4)) is None


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_seg_query_blur_matches_diffusers(sigma: float) -> None:
    q = torch.randn(2, 3, 64, 4)  # (B, heads, H·W, d) on an 8×8 grid
    ours = blur_queries(q, (8, 8), sigma)
    reach = torch.tensor(6 * sigma).ceil().int().item()
    kernel = reach + 1 - reach % 2
    flat = q.permute(0, 1, 3, 2).reshape(2, 12, 64).permute(0, 2, 1)  # (B, H·W, heads·d)
    # diffusers blurs when σ exceeds its "infinite" threshold and takes the mean otherwise (the two
    # branches are swapped there); a threshold below σ selects its blur
    theirs = _gaussian_blur_2d(flat.clone(), kernel, sigma, sigma_threshold_inf=0.0)
    theirs = theirs.permute(0, 2, 1).reshape(2, 3, 4, 64).permute(0, 1, 3, 2)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(blur_queries(q, (8, 8), INFINITE_BLUR), q.mean(dim=2, keepdim=True).expand_as(q))


def test_layer_patterns_match_at_module_boundaries() -> None:
    names = ["mid.attn", "up.1.attn", "up.10.attn", "unet.mid_block.attentions.0.attn1", "unet.midway.attn1"]
    assert matching_layers(names, ("mid",)) == ["mid.attn", "unet.mid_block.attentions.0.attn1"]
    assert matching_layers(names, ("up.1",)) == ["up.1.attn"]


def test_unknown_layers_fail_listing_the_choices(unet: Denoiser) -> None:
    with pytest.raises(ValueError, match=r"mid\.attn"):
        check_layers(unet.network, ("middle",), "tiny")
    with pytest.raises(ValueError, match="unknown perturbation"):
        Perturbation("dropout", ("mid",))


def test_a_condition_from_another_encoder_is_refused(unet: Denoiser) -> None:
    other = ShapesText(unet.network, "other.safetensors").encode_text("a red circle")
    with pytest.raises(ValueError, match=r"encoded by 'other\.safetensors'.*reads conditions of 'tiny'"):
        Prediction(unet, other)
    assert Prediction(unet, conditions(unet)[0]).model is unet
