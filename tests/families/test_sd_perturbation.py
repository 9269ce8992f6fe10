"""PAG, SEG and SLG on a Stable Diffusion UNet (tiny random sd1 config): our self-attention processor
computes what diffusers' default one does, and its PAG slice equals diffusers' PAG processor on the
``[uncond, cond, cond_perturbed]`` batch of its PAG pipelines."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0, PAGCFGIdentitySelfAttnProcessor2_0

from families.sd.make import build_networks
from families.sd.model import SDUNet
from nodes.diffusion.perturbation import Perturbation, perturbable_layers, perturbed

B = 2


def inputs(unet, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    size = unet.config.sample_size
    x = torch.randn(B, unet.config.in_channels, size, width or size, generator=g).repeat(
        3, 1, 1, 1
    )  # (3B, …)
    t = torch.full((3 * B,), 500.0)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)  # uncond, cond
    return x, t, torch.cat([context[:1].expand(B, -1, -1), context[1:].expand(2 * B, -1, -1)])


def test_pag_slice_equals_diffusers_pag_processor_and_other_rows_are_untouched() -> None:
    _, unet, _, _ = build_networks("sd1", "tiny", seed=3)
    unet.eval()
    x, t, context = inputs(unet)
    with torch.no_grad():
        plain = unet(x, t, encoder_hidden_states=context).sample
        unet.set_attn_processor(
            {
                name: PAGCFGIdentitySelfAttnProcessor2_0()
                if name.startswith("mid_block") and name.endswith("attn1.processor")
                else AttnProcessor2_0()
                for name in unet.attn_processors
            }
        )
        theirs = unet(x, t, encoder_hidden_states=context).sample
        network = SDUNet(unet, "sd1", 8)  # installs the perturbable processors
        assert all(name.endswith("attn1") for name in perturbable_layers(network))
        ours_plain = network(x, t, context)
        pag = Perturbation("identity_attention", ("mid",))
        with perturbed(network, [(pag, slice(2 * B, 3 * B))]):
            ours = network(x, t, context)
    assert torch.allclose(ours_plain, plain, atol=1e-5)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(ours[: 2 * B], plain[: 2 * B], atol=1e-5)
    assert (ours[2 * B :] - plain[2 * B :]).abs().max() > 1e-4


@pytest.mark.parametrize("width", [32, 22], ids=["square", "non-square"])
def test_seg_and_skip_layer_change_only_their_rows(width: int) -> None:
    _, unet, _, _ = build_networks("sd1", "tiny", seed=3)
    network = SDUNet(unet.eval(), "sd1", 8)
    x, t, context = inputs(unet, width)  # 32×22: the mid block's grid is 16×11
    with torch.no_grad():
        plain = network(x, t, context)
        for p in (
            Perturbation("blurred_queries", ("mid",), 1.0),
            Perturbation("blurred_queries", ("down_blocks",), 9999.0),
            Perturbation("skip_layer", ("up_blocks.1",)),
        ):
            with perturbed(network, [(p, slice(0, B))]):
                out = network(x, t, context)
            assert torch.allclose(out[B:], plain[B:], atol=1e-5), p
            assert (out[:B] - plain[:B]).abs().max() > 1e-4, p
