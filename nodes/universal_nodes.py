"""Universal guidance (Bansal et al. 2023): steer any sampler with a differentiable image network.

``ImageClassifierLoader`` loads a clean-image network (the shipped evaluator stands in for the
detectors, segmenters and face models of the paper); ``UniversalGuidance`` adds its forward and
backward guidance to any GUIDANCE program.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graph_runtime.api import Boolean, Combo, Context, Float, FolderFiles, Int, Node, Output, Socket, String
from nodes.guidance_nodes import CATEGORY, GUIDANCE_OUT, SCALE_LIMIT
from nodes.model_nodes import MODEL_FILES, _shapes_network

if TYPE_CHECKING:
    from nodes.diffusion.guidance import Guidance
    from nodes.diffusion.types import ImageClassifier


class ImageClassifierLoader(Node):
    """Load a clean-image classifier f(x0) → logits from ``models/evaluators`` (safetensors; metadata
    kind 'evaluator') → IMAGE_CLASSIFIER, for universal guidance."""

    category = "guidegraph/loaders"
    inputs = (
        Combo(
            name="network",
            options=FolderFiles("evaluators", MODEL_FILES),
            tooltip="a clean-image classifier file in models/evaluators",
        ),
    )
    outputs = (Output("IMAGE_CLASSIFIER", "IMAGE_CLASSIFIER"),)

    @staticmethod
    def run(ctx: Context, network: str) -> tuple[ImageClassifier]:
        from nodes.diffusion.types import ImageClassifier

        module, metadata = _shapes_network("evaluators", network, "evaluator", ctx)
        labels = tuple(str(n) for n in (metadata.get("labels") or getattr(module, "labels", None) or ()))
        return (ImageClassifier(module, labels, network),)


class UniversalGuidance(Node):
    """Universal guidance (Bansal et al. 2023, "Universal Guidance for Diffusion Models") with the loss
    ``ℓ = −log p_f(label | x̂0)`` of a clean-image network f.

    Forward guidance: ``D' = D − s·σ²·∇ₓ ℓ(f(D(x)))``, back-propagated through the denoiser (the
    σ-space form of ``ε' = ε + s·√(1−ᾱ)·∇ℓ``). Backward guidance: ``backward_steps`` gradient steps of
    size ``backward_lr`` on a shift Δ of x̂0 that lowers ℓ, without the denoiser, then ``D' + Δ``.
    ``clamp_x0`` keeps the guided x̂0 in [−1, 1], as the paper's pixel-space code does (turn it off for
    latent models). Works on any guidance. The paper's self-recurrence (repeating each step k times
    after re-noising) is the Sampler's ``recurrence`` input. Defaults: the shipped
    ``universal_guidance`` workflow's backward guidance (its measured effect, and its limits, in
    benchmarks/results/guidance_breadth.md).
    """

    category = CATEGORY
    inputs = (
        Socket(name="guidance", type="GUIDANCE", tooltip="the program to steer"),
        Socket(name="network", type="IMAGE_CLASSIFIER", tooltip="f: the clean-image network"),
        String(name="label", default="red circle", tooltip="a class name of the network, or its index"),
        Float(
            name="scale",
            default=0.0,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.05,
            tooltip="s of forward guidance, D − s·σ²·∇ℓ, back-propagated through the denoiser (0 off)",
        ),
        Int(
            name="backward_steps",
            default=5,
            min=0,
            max=100,
            tooltip="m: gradient steps on x̂0 without the denoiser (0 off)",
        ),
        Float(
            name="backward_lr",
            default=1.0,
            min=0.0,
            max=100.0,
            step=0.01,
            tooltip="step size of the backward steps",
        ),
        Boolean(
            name="clamp_x0",
            default=True,
            optional=True,  # added after the node shipped: graphs saved without it keep validating
            tooltip="keep the guided x̂0 in [−1, 1] (pixel-space models; off for latent models)",
        ),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(
        ctx: Context,
        guidance: Guidance,
        network: ImageClassifier,
        label: str,
        scale: float,
        backward_steps: int,
        backward_lr: float,
        clamp_x0: bool = True,
    ) -> tuple[Guidance]:
        from nodes.diffusion.gradients import UniversalGradient

        index = network.label_index(label)
        return (UniversalGradient(guidance, network, index, scale, backward_steps, backward_lr, clamp_x0),)


NODES: list[type[Node]] = [ImageClassifierLoader, UniversalGuidance]
