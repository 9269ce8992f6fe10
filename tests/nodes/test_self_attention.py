"""Self-attention guidance on the shipped UNet architecture: two batched forwards per step (the
second for the degraded input only), the paper's formula rebuilt by hand, composition with PAG and
windows, and the blur against diffusers' SAG pipeline's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from diffusers.pipelines.deprecated.stable_diffusion_sag.pipeline_stable_diffusion_sag import gaussian_blur_2d

from families.shapes.family import ShapesText
from graph_runtime.context import Context
from nodes.composition_nodes import SAG
from nodes.diffusion.conventions import Denoiser
from nodes.diffusion.guidance import Difference, Guidance, Prediction, cfg, window
from nodes.diffusion.perturbation import Perturbation, gaussian_blur
from nodes.diffusion.program import CompiledGuidance
from nodes.diffusion.self_attention import self_attention_guidance

CPU = torch.device("cpu")
SIGMA = 3.0


@pytest.fixture
def rows_per_forward(unet: Denoiser) -> Iterator[list[int]]:
    rows: list[int] = []
    handle = unet.network.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    yield rows
    handle.remove()


def leaves(model: Denoiser) -> tuple[Prediction, Prediction]:
    text = ShapesText(model.network, model.name)
    return Prediction(model, text.encode_text("a red circle")), Prediction(model, text.encode_text(""))


def evaluate(program: Guidance, x: torch.Tensor, max_batch: int = 0) -> torch.Tensor:
    compiled = CompiledGuidance(program, seeds=range(x.shape[0]), device=CPU, max_batch=max_batch)
    with torch.no_grad():
        return compiled(x, torch.full((x.shape[0],), SIGMA))


def attention_received(model: Denoiser, x: torch.Tensor, u: Prediction) -> torch.Tensor:
    """The mid block's attention map of u's forward, head-mean, summed over queries: (B, 1, h, w)."""
    layer = model.network.mid.attn
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    evaluate(u, x)
    handle.remove()
    (h,) = seen
    b, c, hh, ww = h.shape
    qkv = layer.qkv(layer.norm(h)).reshape(b, 3, layer.heads, c // layer.heads, hh * ww)
    q, k = qkv[:, 0].transpose(-1, -2), qkv[:, 1].transpose(-1, -2)  # (B, heads, N, d)
    probs = (q @ k.transpose(-1, -2) / (c // layer.heads) ** 0.5).softmax(-1)  # (B, heads, N, N)
    return probs.mean(1).sum(1).reshape(b, 1, hh, ww)


def test_sag_plus_cfg_is_two_forwards_and_follows_the_paper(unet: Denoiser, rows_per_forward) -> None:
    c, u = leaves(unet)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * SIGMA
    out = evaluate(self_attention_guidance(cfg(c, u, 5.0), u, 0.75, 1.0, 1.0, "mid.attn"), x)
    assert rows_per_forward == [4, 2]  # [c, u] with u's map recorded, then [x̃]
    dc, du = evaluate(c, x), evaluate(u, x)
    mask = F.interpolate((attention_received(unet, x, u) > 1.0).float(), size=(16, 16))
    assert 0 < mask.mean() < 1  # some positions blurred, some kept
    x0_blurred = mask * gaussian_blur_2d(du, 9, 1.0) + (1 - mask) * du
    x_tilde = x0_blurred + (x - du)
    expected = du + 5.0 * (dc - du) + 0.75 * (x0_blurred - evaluate(u, x_tilde))
    assert torch.allclose(out, expected, atol=1e-4), (out - expected).abs().max()
    eps = lambda d, y: (y - d) / SIGMA  # noqa: E731
    eps_form = eps(du + 5.0 * (dc - du), x) + 0.75 * (eps(du, x) - eps(evaluate(u, x_tilde), x_tilde))
    assert torch.allclose(eps(out, x), eps_form, atol=1e-4)  # the paper's ε form, the same rule
    assert (out - evaluate(cfg(c, u, 5.0), x)).abs().max() > 1e-3


def test_a_batch_split_in_chunks_gives_the_same_result(unet: Denoiser) -> None:
    c, u = leaves(unet)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * SIGMA
    program = self_attention_guidance(cfg(c, u, 4.0), u, 1.0, 2.0, 1.0, "mid.attn")
    assert torch.allclose(evaluate(program, x, max_batch=2), evaluate(program, x), atol=1e-4)


def test_sag_and_pag_share_the_first_forward(unet: Denoiser, rows_per_forward) -> None:
    c, u = leaves(unet)
    pag = Difference(
        cfg(c, u, 3.0), c, Prediction(c.model, c.condition, Perturbation("identity_attention", ("mid",))), 2.0
    )
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    evaluate(self_attention_guidance(pag, u, 0.75, 1.0, 1.0, "mid.attn"), x)
    assert rows_per_forward == [6, 2]  # [c, u, c̃], then [x̃]


def test_outside_its_window_and_at_scale_zero_sag_costs_no_second_forward(
    unet: Denoiser, rows_per_forward
) -> None:
    c, u = leaves(unet)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    plain = cfg(c, u, 3.0)
    assert self_attention_guidance(plain, u, 0.0, 1.0, 1.0, "mid.attn") is plain
    windowed = window(self_attention_guidance(plain, u, 0.75, 1.0, 1.0, "mid.attn"), SIGMA / 2, 0.0)
    assert torch.equal(evaluate(windowed, x), evaluate(plain, x))
    assert rows_per_forward == [4, 4]


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_the_blur_matches_diffusers_sag_pipeline(sigma: float) -> None:
    x = torch.randn(2, 4, 12, 10)
    assert torch.allclose(gaussian_blur(x, sigma, 9), gaussian_blur_2d(x, 9, sigma), atol=1e-6)


def test_the_node_names_the_layer_choices_and_refuses_a_model_without_attention(
    unet: Denoiser, gaussian
) -> None:
    c, u = leaves(unet)
    ctx = Context()
    (program,) = SAG.run(ctx, cfg(c, u, 3.0), unet, u.condition, 0.75, 1.0, 1.0, "mid")
    assert program.children()[2].layer == "mid.attn"
    with pytest.raises(
        ValueError,
        match=r"\['middle'\] name no self-attention layer of 'tiny'; choose from \['down\.2\.attn', 'mid",
    ):
        SAG.run(ctx, c, unet, u.condition, 0.75, 1.0, 1.0, "middle")
    with pytest.raises(ValueError, match="'fake' has no perturbable self-attention layers"):
        SAG.run(ctx, c, gaussian(), u.condition, 0.75, 1.0, 1.0, "mid")
