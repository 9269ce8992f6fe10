"""Nodes that compose GUIDANCE programs: N-term combines, step-fraction intervals, scale schedules,
autoguidance, and the perturbed-prediction terms (PAG, SEG, skip-layer guidance, SAG).

A perturbed prediction is a leaf of the program like any other: it joins its model's ONE batched
forward per step, and its perturbation applies to its own slice of that batch only. SAG's degraded
prediction reads that forward's output, so it runs in one second batched forward per step.
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
        Socket(name="base", type="GUIDANCE", tooltip="the program the terms extrapolate from"),
        *(
            spec
            for i in range(1, TERMS + 1)
            for spec in (
                Socket(
                    name=f"guidance_{i}",
                    type="GUIDANCE",
                    optional=i > 1,
                    tooltip=f"program {i} to extrapolate towards" + (" (optional)" if i > 1 else ""),
                ),
                Float(
                    name=f"weight_{i}",
                    default=1.0,
                    min=-SCALE_LIMIT,
                    max=SCALE_LIMIT,
                    step=0.05,
                    tooltip=f"w{i} in base + Σ wᵢ·(guidanceᵢ − base)",
                ),
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
        Socket(name="guidance", type="GUIDANCE", tooltip="the rule to apply inside the interval"),
        Float(
            name="start",
            default=0.0,
            min=0.0,
            max=1.0,
            step=0.01,
            tooltip="first guided fraction of the run: step i is guided when start ≤ i/N < stop",
        ),
        Float(
            name="stop",
            default=1.0,
            min=0.0,
            max=1.0,
            step=0.01,
            tooltip="the fraction of the run where guidance stops",
        ),
        Socket(
            name="outside",
            type="GUIDANCE",
            optional=True,
            tooltip="what runs outside the interval (default: the rule's pass-through)",
        ),
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
        Socket(name="guidance", type="GUIDANCE", tooltip="the rule whose strength varies over the run"),
        Combo(
            name="schedule",
            options=SCHEDULES,
            default="linear_increasing",
            tooltip="f(p) over the run's progress p = i/N; each averages 1",
        ),
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
        Socket(name="model", type="MODEL", tooltip="the good model"),
        Socket(name="weak_model", type="MODEL", tooltip="a smaller or less-trained version of it"),
        Socket(name="condition", type="CONDITIONING", tooltip="the condition both models see"),
        Float(
            name="scale",
            default=2.0,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.05,
            tooltip="w in D_weak + w·(D_model − D_weak)",
        ),
        Socket(
            name="weak_condition",
            type="CONDITIONING",
            optional=True,
            tooltip="the same prompt through the weak model's own encoder, if it has one",
        ),
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
        from nodes.diffusion.guidance import combine
        from nodes.diffusion.regions import predict

        if weak_model is model:
            raise ValueError("weak_model is the same model as model: autoguidance needs a weaker one")
        weak = predict(weak_model, condition if weak_condition is None else weak_condition)
        return (combine(weak, [(predict(model, condition), scale)]),)


def perturbed_term(
    guidance: Guidance, model: Denoiser, positive: Conditioning, scale: float, perturbation: Perturbation
) -> tuple[Guidance]:
    """``guidance + s·(D(c) − D̃(c))`` with D̃ the perturbed forward, after checking the layers exist."""
    from nodes.diffusion.guidance import Difference, Prediction
    from nodes.diffusion.perturbation import check_layers
    from nodes.diffusion.types import Conditioning

    check_layers(model.network, perturbation.layers, model.name)
    if not isinstance(positive, Conditioning):
        raise ValueError("positive: a perturbed prediction takes a single condition, not a conditioning set")
    plain = Prediction(model, positive)
    if scale == 0:
        return (guidance,)
    return (Difference(guidance, plain, Prediction(model, positive, perturbation=perturbation), scale),)


def layer_names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.replace("\n", ",").split(",") if part.strip())


PERTURBED_INPUTS = (
    Socket(name="guidance", type="GUIDANCE", tooltip="the program to add the term to (e.g. CFG)"),
    Socket(name="model", type="MODEL", tooltip="the denoiser whose self-attention is perturbed"),
    Socket(
        name="positive",
        type="CONDITIONING",
        tooltip="c: the condition of the plain and the perturbed prediction",
    ),
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
        Float(
            name="scale",
            default=3.0,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.1,
            tooltip="s in + s·(c − c̃); 0 removes the term",
        ),
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
        Float(
            name="scale",
            default=3.0,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.1,
            tooltip="s in + s·(c − c̃); 0 removes the term",
        ),
        Float(
            name="blur_sigma",
            default=INFINITE_BLUR,
            min=0.0,
            max=INFINITE_BLUR,
            step=0.5,
            tooltip="std of the query blur in feature-map pixels; 9999 gives the mean query",
        ),
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
        Float(
            name="scale",
            default=2.8,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.1,
            tooltip="s in + s·(c − c̃); 0 removes the term",
        ),
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


class SAG(Node):
    """Self-attention guidance (Hong et al. 2023, "Improving Sample Quality of Diffusion Models Using
    Self-Attention Guidance"), in x0 space ``out = G + s·(x̃0 − D(x̃, σ, u))``, the paper's
    ``ε_G + s·(ε(x) − ε(x̃))``: x̃0 blurs u's x̂0 (Gaussian, kernel 9, std ``blur_sigma``) where u's
    self-attention map in ``layer`` gives a position more than ``threshold`` (the mean is 1), and x̃
    re-noises it with u's own noise estimate, ``x̃ = x̃0 + (x − u)``.

    Working space: affine (the term is ``u − û`` with û = D(x̃) + (x − x̃), weights summing to 1), so
    the ε form and the x0 form are one rule. Defaults: s = 0.75, σ_b = 1 (diffusers' pipeline; ComfyUI
    0.5 and 2). On a CFG program G: [c, u] in one batched forward (u's map recorded), then [x̃] in a
    second: two forwards per step. Formulas, and where the peers differ: ``diffusion/self_attention.py``.
    """

    category = CATEGORY
    inputs = (
        Socket(name="guidance", type="GUIDANCE", tooltip="the program to add the term to (e.g. CFG)"),
        Socket(name="model", type="MODEL", tooltip="the denoiser whose self-attention map is read"),
        Socket(
            name="negative",
            type="CONDITIONING",
            tooltip="u: the prediction SAG blurs and re-runs (next to CFG: the unconditional, as the paper)",
        ),
        Float(
            name="scale",
            default=0.75,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.05,
            tooltip="s in + s·(x̃0 − D(x̃)); 0 removes the term and its second forward",
        ),
        Float(
            name="blur_sigma", default=1.0, min=0.0, max=10.0, step=0.1, tooltip="std of the blur, in pixels"
        ),
        Float(
            name="threshold",
            default=1.0,
            min=0.0,
            max=SCALE_LIMIT,
            step=0.05,
            tooltip="ψ: blur where a position receives more attention than this (the mean is 1)",
        ),
        String(
            name="layer",
            default="mid",
            tooltip="the self-attention layer whose map is read (its first match)",
        ),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(
        ctx: Context,
        guidance: Guidance,
        model: Denoiser,
        negative: Conditioning,
        scale: float,
        blur_sigma: float,
        threshold: float,
        layer: str,
    ) -> tuple[Guidance]:
        from nodes.diffusion.guidance import Prediction
        from nodes.diffusion.self_attention import sag_layer, self_attention_guidance
        from nodes.diffusion.types import Conditioning

        if not isinstance(negative, Conditioning):
            raise ValueError("negative: SAG takes a single condition, not a conditioning set")
        name = sag_layer(model.network, layer.strip(), model.name)
        return (
            self_attention_guidance(
                guidance, Prediction(model, negative), scale, blur_sigma, threshold, name
            ),
        )


NODES: list[type[Node]] = [
    GuidanceCombine,
    GuidanceInterval,
    GuidanceSchedule,
    Autoguidance,
    PAG,
    SEG,
    SkipLayerGuidance,
    SAG,
]
