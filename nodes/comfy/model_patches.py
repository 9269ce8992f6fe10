"""ComfyUI's model-patching guidance nodes: MODEL in, MODEL out, read by the ComfyUI sampling nodes.

A patch marks the returned model (a renamed copy of the denoiser, same network); :func:`comfy_cfg`
turns the marks into GUIDANCE rules around the CFG a KSampler or CFGGuider builds, in ComfyUI's
order: RescaleCFG replaces the CFG combine (a ``sampler_cfg_function``), SelfAttentionGuidance adds
its term to the result (a ``sampler_post_cfg_function``). Patches stack: patching a patched model
keeps the earlier marks.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import TYPE_CHECKING, Any

from graph_runtime.api import Context, Float, Node, Output, Socket

if TYPE_CHECKING:
    from nodes.diffusion.conventions import Denoiser
    from nodes.diffusion.types import Conditioning

_PATCHES: weakref.WeakKeyDictionary[Any, dict[str, tuple[float, ...]]] = weakref.WeakKeyDictionary()


def patch(model: Denoiser, kind: str, values: tuple[float, ...], label: str) -> Denoiser:
    """A copy of ``model`` marked with patch ``kind`` (replacing an earlier one of that kind)."""
    patched = dataclasses.replace(model, name=f"{model.name} + {label}")
    _PATCHES[patched] = {**_PATCHES.get(model, {}), kind: values}
    return patched


def comfy_cfg(
    ctx: Context, model: Denoiser, positive: Conditioning, negative: Conditioning, cfg: float
) -> Any:
    """The CFG a ComfyUI sampling node builds: our CFGCombine, then the model's patches."""
    from nodes.diffusion.guidance import Prediction
    from nodes.diffusion.regions import predict
    from nodes.diffusion.self_attention import sag_layer, self_attention_guidance
    from nodes.guidance_nodes import CFGCombine, CFGRescale

    (program,) = CFGCombine.run(ctx, model, positive, negative, cfg)
    patches = _PATCHES.get(model, {})
    if "rescale" in patches:
        (program,) = CFGRescale.run(ctx, program, patches["rescale"][0], "v")
    if "sag" in patches:
        uncond = predict(model, negative)
        if not isinstance(uncond, Prediction):
            raise ValueError(
                "SelfAttentionGuidance reads the attention of one full-image negative condition; "
                "this negative has regional or timed entries"
            )
        scale, blur_sigma = patches["sag"]
        layer = sag_layer(model.network, "mid", model.name)
        program = self_attention_guidance(program, uncond, scale, blur_sigma, 1.0, layer)
    return program


class RescaleCFG(Node):
    """Rescale the CFG of samplers using this model (Lin et al. 2023, §3.4, in v space): the guided
    prediction's std is brought back to the conditional one's, mixed by ``multiplier``."""

    category = "advanced/model"
    inputs = (
        Socket(name="model", type="MODEL", tooltip="the model whose CFG to rescale"),
        Float(
            name="multiplier",
            default=0.7,
            min=0.0,
            max=1.0,
            step=0.01,
            tooltip="φ: 0 plain CFG, 1 fully rescaled",
        ),
    )
    outputs = (Output("MODEL", "MODEL"),)

    @staticmethod
    def run(ctx: Context, model: Denoiser, multiplier: float) -> tuple[Denoiser]:
        return (patch(model, "rescale", (multiplier,), f"RescaleCFG {multiplier:g}"),)


class SelfAttentionGuidance(Node):
    """Self-attention guidance (Hong et al. 2023) for the samplers using this model, as ComfyUI's:
    after CFG, ``+ s·(x̃0 − D(x̃, u))`` with u the negative, its x̂0 blurred (kernel 9, std
    ``blur_sigma``) where its mid-block self-attention is above average, re-noised and run again
    (a second batched forward per step; guidegraph's SAG node, with ComfyUI's defaults).

    ComfyUI skips the term when the latent's smaller side is 4 or less; here the blur kernel shrinks
    to fit instead."""

    display_name = "Self-Attention Guidance"
    category = "_for_testing"
    inputs = (
        Socket(name="model", type="MODEL", tooltip="the model whose samplers get SAG"),
        Float(name="scale", default=0.5, min=-2.0, max=5.0, step=0.01, tooltip="s in + s·(x̃0 − D(x̃, u))"),
        Float(name="blur_sigma", default=2.0, min=0.0, max=10.0, step=0.1, tooltip="std of the blur"),
    )
    outputs = (Output("MODEL", "MODEL"),)

    @staticmethod
    def run(ctx: Context, model: Denoiser, scale: float, blur_sigma: float) -> tuple[Denoiser]:
        from nodes.diffusion.self_attention import sag_layer

        sag_layer(model.network, "mid", model.name)  # fail here, naming the model, without a mid block
        return (patch(model, "sag", (scale, blur_sigma), f"SAG {scale:g}"),)


NODES: list[type[Node]] = [RescaleCFG, SelfAttentionGuidance]
