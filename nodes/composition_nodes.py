"""Nodes that compose GUIDANCE programs: N-term combines, step-fraction intervals, scale schedules,
autoguidance, and the perturbed-prediction terms (PAG, SEG, skip-layer guidance).

A perturbed prediction is a leaf of the program like any other: it joins its model's ONE batched
forward per step, and its perturbation applies to its own slice of that batch only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graph_runtime.api import Combo, Context, Float, Node, Socket, String
from nodes.diffusion.names import INFINITE_BLUR, SCHEDULES
from nodes.guidance_nodes import CATEGORY, GUIDANCE_OUT, SCALE_LIMIT

if TYPE_CHECKING:
    from nodes.diffusion.conventions import Denoiser
    from nodes.diffusion.guidance import Guidance
    from nodes.diffusion.perturbation import Perturbation
    from nodes.diffusion.types import Conditioning


TERMS = 4


class GuidanceCombine(Node):
    """``out = base + Σᵢ wᵢ·(guidanceᵢ − base)`` over whole programs: the N-term extrapolation.

    Autoguidance plus CFG, or PAG plus CFG written out by hand, are such sums; weights summing with
    the base's implicit 1 keep it affine, so it is the same in every prediction space. Unconnected
    terms drop out; all leaves of one model still share one batched forward per step.
    """

    category = CATEGORY
    inputs = (
        Socket(name="base", type="GUIDANCE"),
        *(
            spec
            for i in range(1, TERMS + 1)
            for spec in (
                Socket(name=f"guidance_{i}", type="GUIDANCE", optional=i > 1),
                Float(name=f"weight_{i}", default=1.0, min=-SCALE_LIMIT, max=SCALE_LIMIT, step=0.05),
            )
        ),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(ctx: Context, base: Guidance, **terms: Guidance | float | None) -> tuple[Guidance]:
        from nodes.diffusion.guidance import Guidance, combine

        pairs = [(terms[f"guidance_{i}"], terms[f"weight_{i}"]) for i in range(1, TERMS + 1)]
        kept = [(g, float(w)) for g, w in pairs if isinstance(g, Guidance) and isinstance(w, float | int)]
        return (combine(base, kept),)


class GuidanceInterval(Node):
    """Apply a guidance rule only on a fraction of the run's steps: step i of N is guided when
    ``start ≤ i/N < stop`` (diffusers' guider start/stop; Kynkäänniemi et al. 2024, "Applying Guidance
    in a Limited Interval Improves Sample and Distribution Quality", who guide only the middle steps).

    Outside, the rule's pass-through (CFG → the conditional) runs, or ``outside`` when connected; it
    costs no extra pass. The fractions are turned into σ bounds on the Sampler's schedule.
    """

    category = CATEGORY
    inputs = (
        Socket(name="guidance", type="GUIDANCE"),
        Float(name="start", default=0.0, min=0.0, max=1.0, step=0.01),
        Float(name="stop", default=1.0, min=0.0, max=1.0, step=0.01),
        Socket(name="outside", type="GUIDANCE", optional=True),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(
        ctx: Context, guidance: Guidance, start: float, stop: float, outside: Guidance | None = None
    ) -> tuple[Guidance]:
        from nodes.diffusion.guidance import step_window

        if start > stop:
            raise ValueError(f"start ({start}) must not exceed stop ({stop})")
        return (step_window(guidance, start, stop, outside),)


class GuidanceSchedule(Node):
    """Vary a rule's strength over the run: ``out = P + f(i/N)·(G − P)``, G the rule, P its
    pass-through; for CFG at scale w that is ``w(p) = 1 + f(p)·(w − 1)``.

    f: constant 1; linear 2p or 2(1 − p); cosine 1 − cos(πp) or 1 + cos(πp), each averaging 1 over
    the run so schedules compare at equal mean scale (the rising and falling schedulers of Wang et al.
    2024, "Analysis of Classifier-Free Guidance Weight Schedulers").
    """

    category = CATEGORY
    inputs = (
        Socket(name="guidance", type="GUIDANCE"),
        Combo(name="schedule", options=SCHEDULES, default="linear_increasing"),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(ctx: Context, guidance: Guidance, schedule: str) -> tuple[Guidance]:
        from nodes.diffusion.rules import Scheduled

        reference = guidance.passthrough()
        if schedule == "constant" or reference == guidance:
            return (guidance,)
        return (Scheduled(guidance, reference, schedule),)


class Autoguidance(Node):
    """Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself"):
    ``out = D_weak + w·(D_model − D_weak)``, both under the same condition.

    ``weak_model`` is a smaller or less-trained version of ``model``. When it has its own text encoder
    (each shapes UNet has one), connect ``weak_condition``, the same prompt through the weak model's
    encoder; a condition is never fed to a model of another encoder. The two networks run one forward
    each per step. Name the schedule on the Sampler (``schedule_model``): with two models it is never
    guessed.
    """

    category = CATEGORY
    inputs = (
        Socket(name="model", type="MODEL"),
        Socket(name="weak_model", type="MODEL"),
        Socket(name="condition", type="CONDITIONING"),
        Float(name="scale", default=2.0, min=-SCALE_LIMIT, max=SCALE_LIMIT, step=0.05),
        Socket(name="weak_condition", type="CONDITIONING", optional=True),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(
        ctx: Context,
        model: Denoiser,
        weak_model: Denoiser,
        condition: Conditioning,
        scale: float,
        weak_condition: Conditioning | None = None,
    ) -> tuple[Guidance]:
        from nodes.diffusion.guidance import Prediction, combine

        if weak_model is model:
            raise ValueError("weak_model is the same model as model: autoguidance needs a weaker one")
        weak = Prediction(weak_model, condition if weak_condition is None else weak_condition)
        return (combine(weak, [(Prediction(model, condition), scale)]),)


def perturbed_term(
    guidance: Guidance, model: Denoiser, positive: Conditioning, scale: float, perturbation: Perturbation
) -> tuple[Guidance]:
    """``guidance + s·(D(c) − D̃(c))`` with D̃ the perturbed forward, after checking the layers exist."""
    from nodes.diffusion.guidance import Difference, Prediction
    from nodes.diffusion.perturbation import check_layers

    check_layers(model.network, perturbation.layers, model.name)
    plain = Prediction(model, positive)
    if scale == 0:
        return (guidance,)
    return (Difference(guidance, plain, Prediction(model, positive, perturbation), scale),)


def layer_names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.replace("\n", ",").split(",") if part.strip())


PERTURBED_INPUTS = (
    Socket(name="guidance", type="GUIDANCE"),
    Socket(name="model", type="MODEL"),
    Socket(name="positive", type="CONDITIONING"),
)
LAYERS_TOOLTIP = "self-attention layers by module name or prefix, comma-separated ('mid', 'up.1')"


class PAG(Node):
    """Perturbed-attention guidance (Ahn et al. 2024, "Self-Rectifying Diffusion Sampling with
    Perturbed-Attention Guidance"): ``out = G + s·(D(c) − D̃(c))``, where D̃ replaces the
    self-attention map of the chosen layers by the identity (attention output = V).

    On a CFG program G this is the paper's ``u + w·(c − u) + s·(c − c̃)``: three predictions in ONE
    batched forward, the perturbation applying to c̃'s slice only. The PAG paper applies it at every
    step; wrap it in a GuidanceInterval for diffusers' guider default (1–20% of the steps).
    """

    category = CATEGORY
    inputs = (
        *PERTURBED_INPUTS,
        Float(name="scale", default=3.0, min=-SCALE_LIMIT, max=SCALE_LIMIT, step=0.1),
        String(name="layers", default="mid", tooltip=LAYERS_TOOLTIP),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(
        ctx: Context, guidance: Guidance, model: Denoiser, positive: Conditioning, scale: float, layers: str
    ) -> tuple[Guidance]:
        from nodes.diffusion.perturbation import Perturbation

        return perturbed_term(
            guidance, model, positive, scale, Perturbation("identity_attention", layer_names(layers))
        )


class SEG(Node):
    """Smoothed energy guidance (Hong 2024, "Smoothed Energy Guidance: Guiding Diffusion Models with
    Reduced Energy Curvature of Attention"): ``out = G + s·(D(c) − D̃(c))``, D̃ Gaussian-blurring the
    self-attention queries of the chosen layers with std ``blur_sigma`` (≥ 9999: every query becomes
    the mean query, the paper's σ → ∞). One batched forward with the other predictions.
    """

    category = CATEGORY
    inputs = (
        *PERTURBED_INPUTS,
        Float(name="scale", default=3.0, min=-SCALE_LIMIT, max=SCALE_LIMIT, step=0.1),
        Float(name="blur_sigma", default=INFINITE_BLUR, min=0.0, max=INFINITE_BLUR, step=0.5),
        String(name="layers", default="mid", tooltip=LAYERS_TOOLTIP),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(
        ctx: Context,
        guidance: Guidance,
        model: Denoiser,
        positive: Conditioning,
        scale: float,
        blur_sigma: float,
        layers: str,
    ) -> tuple[Guidance]:
        from nodes.diffusion.perturbation import Perturbation

        perturbation = Perturbation("blurred_queries", layer_names(layers), blur_sigma)
        return perturbed_term(guidance, model, positive, scale, perturbation)


class SkipLayerGuidance(Node):
    """Skip-layer guidance (Stability AI, SD3.5; STG, Hyung et al. 2024, "Spatiotemporal Skip
    Guidance"): ``out = G + s·(D(c) − D̃(c))`` with the chosen attention layers bypassed in D̃.
    One batched forward with the other predictions.
    """

    category = CATEGORY
    inputs = (
        *PERTURBED_INPUTS,
        Float(name="scale", default=2.8, min=-SCALE_LIMIT, max=SCALE_LIMIT, step=0.1),
        String(name="layers", default="mid", tooltip=LAYERS_TOOLTIP),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(
        ctx: Context, guidance: Guidance, model: Denoiser, positive: Conditioning, scale: float, layers: str
    ) -> tuple[Guidance]:
        from nodes.diffusion.perturbation import Perturbation

        return perturbed_term(
            guidance, model, positive, scale, Perturbation("skip_layer", layer_names(layers))
        )


NODES: list[type[Node]] = [
    GuidanceCombine,
    GuidanceInterval,
    GuidanceSchedule,
    Autoguidance,
    PAG,
    SEG,
    SkipLayerGuidance,
]
