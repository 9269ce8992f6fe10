"""Guidance nodes: each builds (never runs) a piece of the per-step GUIDANCE program.

Every GUIDANCE value is an x0 prediction D(x; σ) composed from model predictions; the Sampler runs
the program once per model evaluation. Scales follow the Imagen / diffusers / ComfyUI convention.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graph_runtime.api import Boolean, Combo, Context, Float, Int, Node, Output, Socket, String
from nodes.diffusion.names import SPACES

if TYPE_CHECKING:
    from nodes.diffusion.conventions import Denoiser
    from nodes.diffusion.guidance import Guidance
    from nodes.diffusion.types import VAE, Classifier, Clip, Conditioning


CATEGORY = "guidegraph/guidance"
GUIDANCE_OUT = (Output("GUIDANCE", "GUIDANCE"),)
SCALE_LIMIT = 1000.0


class Predict(Node):
    """A single model prediction D(x, σ, c), no guidance: the leaf every program is built from."""

    category = CATEGORY
    inputs = (
        Socket(name="model", type="MODEL", tooltip="the denoiser D"),
        Socket(name="condition", type="CONDITIONING", tooltip="c in D(x, σ, c)"),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(ctx: Context, model: Denoiser, condition: Conditioning) -> tuple[Guidance]:
        from nodes.diffusion.regions import predict

        return (predict(model, condition),)


class CFGCombine(Node):
    """Classifier-free guidance: ``out = u + w·(c − u)`` (Ho & Salimans 2022, "Classifier-Free Diffusion
    Guidance"; scale convention of Imagen, diffusers and ComfyUI, so w = 1 + w_HS).

    ``negative`` is the unconditional prediction u: a NullCondition, or a Condition as a negative
    prompt (stable-diffusion-webui semantics). w = 1 is the conditional alone and skips the u pass;
    w = 0 is the unconditional model. Both predictions go through one batched forward per step.
    """

    category = CATEGORY
    inputs = (
        Socket(name="model", type="MODEL", tooltip="the denoiser both predictions come from"),
        Socket(name="positive", type="CONDITIONING", tooltip="c: the condition to steer towards"),
        Socket(
            name="negative",
            type="CONDITIONING",
            tooltip="u: the unconditional prediction (a NullCondition) or a negative prompt",
        ),
        Float(
            name="scale",
            default=5.0,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.1,
            round=0.01,
            tooltip="w in u + w·(c − u): 1 is the conditional alone (no extra pass), 0 the unconditional",
        ),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(
        ctx: Context, model: Denoiser, positive: Conditioning, negative: Conditioning, scale: float
    ) -> tuple[Guidance]:
        from nodes.diffusion.guidance import cfg
        from nodes.diffusion.regions import predict

        return (cfg(predict(model, positive), predict(model, negative), scale),)


class Composable(Node):
    """Composable diffusion: ``out = u + Σᵢ wᵢ·(D(cᵢ) − u)`` (Liu et al. 2022, "Compositional Visual
    Generation with Composable Diffusion Models").

    Positive weights are AND, negative weights NOT; unconnected conditions drop out. All predictions
    share one batched forward per step.
    """

    display_name = "Composable Diffusion"
    category = CATEGORY
    inputs = (
        Socket(name="model", type="MODEL", tooltip="the denoiser every prediction comes from"),
        Socket(
            name="unconditional",
            type="CONDITIONING",
            tooltip="u: the prediction the weighted differences start from",
        ),
        Socket(name="condition_1", type="CONDITIONING", tooltip="c₁: a concept to combine"),
        Float(
            name="weight_1",
            default=3.0,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.1,
            tooltip="w₁ in u + Σ wᵢ·(D(cᵢ) − u): positive is AND, negative is NOT",
        ),
        Socket(name="condition_2", type="CONDITIONING", optional=True, tooltip="c₂ (unconnected: left out)"),
        Float(
            name="weight_2",
            default=3.0,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.1,
            tooltip="w₂: positive is AND, negative is NOT",
        ),
        Socket(name="condition_3", type="CONDITIONING", optional=True, tooltip="c₃ (unconnected: left out)"),
        Float(
            name="weight_3",
            default=-1.0,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.1,
            tooltip="w₃: positive is AND, negative is NOT",
        ),
        Socket(name="condition_4", type="CONDITIONING", optional=True, tooltip="c₄ (unconnected: left out)"),
        Float(
            name="weight_4",
            default=-1.0,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.1,
            tooltip="w₄: positive is AND, negative is NOT",
        ),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(
        ctx: Context,
        model: Denoiser,
        unconditional: Conditioning,
        condition_1: Conditioning,
        weight_1: float,
        condition_2: Conditioning | None,
        weight_2: float,
        condition_3: Conditioning | None,
        weight_3: float,
        condition_4: Conditioning | None,
        weight_4: float,
    ) -> tuple[Guidance]:
        from nodes.diffusion.guidance import combine
        from nodes.diffusion.regions import predict

        pairs = [
            (condition_1, weight_1),
            (condition_2, weight_2),
            (condition_3, weight_3),
            (condition_4, weight_4),
        ]
        terms = [(predict(model, c), w) for c, w in pairs if c is not None]
        return (combine(predict(model, unconditional), terms),)


class GuidanceMix(Node):
    """Extrapolate from one guidance to another: ``out = base + w·(target − base)``.

    With ``base`` a weaker model (smaller or less trained) under the same condition, this is
    autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself").
    """

    category = CATEGORY
    inputs = (
        Socket(
            name="base",
            type="GUIDANCE",
            tooltip="the guidance to extrapolate from (a weaker model: autoguidance)",
        ),
        Socket(name="target", type="GUIDANCE", tooltip="the guidance to extrapolate towards"),
        Float(
            name="scale",
            default=2.0,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.05,
            tooltip="w in base + w·(target − base): 1 is the target alone",
        ),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(ctx: Context, base: Guidance, target: Guidance, scale: float) -> tuple[Guidance]:
        from nodes.diffusion.guidance import combine

        return (combine(base, [(target, scale)]),)


class ClassifierGrad(Node):
    """Classifier guidance: ``D' = D + s·σ²·∇ₓ log p(y | x, σ)`` from a noise-aware classifier
    (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis", Alg. 2).

    Works on any guidance (an unconditional model, CFG, ...). The gradient is taken through the
    classifier only; autograd is switched on locally, one classifier call per model evaluation.
    """

    display_name = "Classifier Gradient"
    category = CATEGORY
    inputs = (
        Socket(
            name="guidance",
            type="GUIDANCE",
            tooltip="the guidance to add the classifier gradient to (unconditional, CFG, ...)",
        ),
        Socket(name="classifier", type="CLASSIFIER", tooltip="a noise-aware classifier p(y | x, σ)"),
        String(name="label", default="red circle", tooltip="a class name of the classifier, or its index"),
        Float(
            name="scale",
            default=1.0,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.1,
            tooltip="s in D + s·σ²·∇ₓ log p(y | x, σ); 0 turns the term off",
        ),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(
        ctx: Context, guidance: Guidance, classifier: Classifier, label: str, scale: float
    ) -> tuple[Guidance]:
        from nodes.diffusion.gradients import ClassifierGradient
        from nodes.diffusion.sampling import leaf_models

        takes = getattr(classifier.module, "in_channels", None)
        for model in leaf_models(guidance):
            if takes is not None and takes != model.latent_channels:
                raise ValueError(
                    f"classifier: {classifier.name!r} reads {takes}-channel inputs, but model "
                    f"{model.name!r} samples {model.latent_channels}-channel latents; a classifier for "
                    "guidance must be trained on the space the model samples in"
                )
        return (ClassifierGradient(guidance, classifier, classifier.label_index(label), scale),)


class ClipLoss(Node):
    """CLIP-loss guidance: ``D' = D + s·σ²·g``, ``g = −∇ₓ mean_cutouts ℓ(E_img(cut(x̂0)))``
    (k-diffusion's CLIP-guided sampling; Disco-style cutouts).

    With ``contrast`` empty, ``ℓ = sphdist(·, E_txt(prompt))`` (Crowson's spherical distance), which
    never stops pulling. With contrast prompts (one per line), the CLIP acts as a zero-shot classifier
    (Radford et al. 2021): ``ℓ = −log softmax_i(τ·cos(·, E_txt(promptᵢ)))[prompt]`` over the prompt and
    the contrast prompts, τ the CLIP's logit scale; its gradient separates the prompt from the
    alternatives and fades once the sample is classified, like classifier guidance's.

    ``through_denoiser`` back-propagates through D (exact, costs a backward pass of the model);
    off, the gradient is taken at the detached x̂0 and scaled by 1/(1 + σ²) (the Jacobian of a Gaussian
    denoiser), which costs no backward pass through the model. ``cutouts`` random crops (0: the whole image),
    ``augment`` random flips; both seeded per sample. ``grad_clamp`` caps the per-sample RMS of g and
    ``shift_clamp`` the per-sample RMS of the x̂0 shift s·σ²·g (0: off).

    Latent models (Stable Diffusion) connect their ``vae``: x̂0 is decoded to pixels before the CLIP
    sees it, and the gradient flows back through the decoder ("CLIP-guided Stable Diffusion"). The
    decoder runs under activation checkpointing (its activations are recomputed in the backward pass
    rather than kept), and ``decode_scale`` < 1 decodes a downsampled x̂0 to cut the cost further.
    """

    display_name = "CLIP Loss"
    category = CATEGORY
    inputs = (
        Socket(name="guidance", type="GUIDANCE", tooltip="the guidance to add the CLIP-loss gradient to"),
        Socket(name="clip", type="CLIP_MODEL", tooltip="the image-text model that scores the denoised image"),
        String(
            name="prompt", default="a red circle", multiline=True, tooltip="the text the image should match"
        ),
        Float(name="scale", default=300.0, min=-1e6, max=1e6, step=1.0, tooltip="s in D + s·σ²·g"),
        Int(
            name="cutouts",
            default=0,
            min=0,
            max=64,
            tooltip="random crops per model evaluation, averaged (0: the whole image)",
        ),
        Boolean(name="augment", default=False, tooltip="random flips of the cutouts, seeded per sample"),
        Boolean(
            name="through_denoiser",
            default=True,
            tooltip="exact gradient through the denoiser (a backward pass); off: at x̂0, scaled by 1/(1 + σ²)",
        ),
        Float(
            name="grad_clamp",
            default=0.0,
            min=0.0,
            max=1e6,
            step=0.01,
            tooltip="cap on the per-sample RMS of the gradient g (0: off)",
        ),
        String(
            name="contrast",
            default="",
            multiline=True,
            placeholder="other prompts, one per line (empty: spherical distance to the prompt)",
            tooltip="other prompts, one per line, to tell the prompt from (empty: distance to the prompt)",
        ),
        Float(
            name="shift_clamp",
            default=1.0,
            min=0.0,
            max=1e6,
            step=0.01,
            tooltip="cap on the per-sample RMS of the x̂0 shift s·σ²·g (0: off)",
        ),
        Socket(
            name="vae",
            type="VAE",
            optional=True,
            tooltip="for latent models: decodes x̂0 to pixels for the CLIP (unconnected: pixel space)",
        ),
        Float(
            name="decode_scale",
            default=1.0,
            min=0.125,
            max=1.0,
            step=0.125,
            optional=True,
            tooltip="decode a downsampled x̂0 (1: full size) to cut the cost of the VAE",
        ),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(
        ctx: Context,
        guidance: Guidance,
        clip: Clip,
        prompt: str,
        scale: float,
        cutouts: int,
        augment: bool,
        through_denoiser: bool,
        grad_clamp: float,
        contrast: str,
        shift_clamp: float,
        vae: VAE | None = None,
        decode_scale: float = 1.0,
    ) -> tuple[Guidance]:
        import torch

        from nodes.diffusion.gradients import ClipGradient, clip_logit_scale
        from nodes.diffusion.types import Conditioning

        with torch.no_grad():
            text = Conditioning.of(clip.encode_text([prompt])[0], f"clip text {prompt!r}")
            others = contrast_conditions(clip, prompt, text, contrast)
        rule = ClipGradient(
            guidance,
            clip,
            text,
            scale,
            cutouts,
            augment,
            through_denoiser,
            grad_clamp,
            contrast=others,
            logit_scale=clip_logit_scale(clip),
            shift_clamp=shift_clamp,
            vae=vae if vae is not None and vae.downscale > 1 else None,
            decode_scale=decode_scale,
        )
        return (rule,)


def contrast_conditions(
    clip: Clip, prompt: str, text: Conditioning, contrast: str
) -> tuple[Conditioning, ...]:
    """The non-blank lines of ``contrast`` as CLIP text conditions; fails listing every line that
    encodes the same as the prompt or as an earlier line (such a line is no alternative)."""
    import torch

    from nodes.diffusion.types import Conditioning

    lines = [(n, line.strip()) for n, line in enumerate(contrast.splitlines(), 1) if line.strip()]
    if not lines:
        return ()
    embeddings = clip.encode_text([line for _, line in lines])  # (N, E)
    out: list[Conditioning] = []
    problems: list[str] = []
    for (n, line), emb in zip(lines, embeddings, strict=True):
        cond = Conditioning.of(emb, f"clip text {line!r}")
        if torch.allclose(emb, text.embedding, atol=1e-5):
            problems.append(f"line {n} {line!r} encodes the same as the prompt {prompt!r}")
        elif any(torch.allclose(emb, o.embedding, atol=1e-5) for o in out):
            problems.append(f"line {n} {line!r} encodes the same as an earlier line")
        else:
            out.append(cond)
    if problems:
        raise ValueError(
            "contrast: expected prompts that differ from the prompt and from each other; "
            + "; ".join(problems)
        )
    return tuple(out)


class GuidanceWindow(Node):
    """Apply a guidance rule only while σ_end < σ ≤ σ_start (Kynkäänniemi et al. 2024, "Applying
    Guidance in a Limited Interval Improves Sample and Distribution Quality").

    Outside the window the rule is replaced by ``outside`` if connected, else by its pass-through
    (CFG → the conditional prediction, a gradient term → the guidance beneath it), and costs nothing
    more. The window is checked against the σ of every model evaluation, Heun stages included.
    """

    category = CATEGORY
    inputs = (
        Socket(name="guidance", type="GUIDANCE", tooltip="the rule to apply inside the window"),
        Float(
            name="sigma_start",
            default=10.0,
            min=0.0,
            max=1e6,
            step=0.01,
            tooltip="σ above which the rule is off",
        ),
        Float(
            name="sigma_end",
            default=0.3,
            min=0.0,
            max=1e6,
            step=0.01,
            tooltip="σ at or below which the rule is off",
        ),
        Socket(
            name="outside",
            type="GUIDANCE",
            optional=True,
            tooltip="what to use outside the window (unconnected: the rule's pass-through)",
        ),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(
        ctx: Context,
        guidance: Guidance,
        sigma_start: float,
        sigma_end: float,
        outside: Guidance | None = None,
    ) -> tuple[Guidance]:
        from nodes.diffusion.guidance import window

        if sigma_end > sigma_start:
            raise ValueError(f"sigma_end ({sigma_end}) must not exceed sigma_start ({sigma_start})")
        return (window(guidance, sigma_start, sigma_end, outside),)


class CFGRescale(Node):
    """CFG rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps Are Flawed",
    §3.4): ``g_r = g·std(P_c)/std(g)``, ``out = φ·g_r + (1 − φ)·g``, per sample.

    Nonlinear, so it declares its space: v (the paper's, and ComfyUI's), eps (diffusers on
    eps-models) or x0. P_c is the guidance's pass-through (CFG's conditional prediction).
    """

    category = CATEGORY
    inputs = (
        Socket(
            name="guidance",
            type="GUIDANCE",
            tooltip="the guidance to rescale; its pass-through (CFG's conditional) sets the target std",
        ),
        Float(
            name="phi",
            default=0.7,
            min=0.0,
            max=1.0,
            step=0.01,
            tooltip="φ: the share of the rescaled guidance (0 off, 1 fully rescaled)",
        ),
        Combo(
            name="space",
            options=SPACES,
            default="v",
            tooltip="the space it works in: v (the paper, ComfyUI), eps (diffusers) or x0",
        ),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(ctx: Context, guidance: Guidance, phi: float, space: str) -> tuple[Guidance]:
        from nodes.diffusion.rules import Rescale

        return (Rescale(guidance, guidance.passthrough(), phi, space),)


class DynamicThreshold(Node):
    """Dynamic thresholding (Saharia et al. 2022, Imagen §2.3), in x0 space: per sample
    ``s = clamp(quantile_p(|x̂0|), 1, max_value)``, ``x̂0 ← clip(x̂0, −s, s)/s``. For pixel-space models."""

    category = CATEGORY
    inputs = (
        Socket(name="guidance", type="GUIDANCE", tooltip="the guidance whose x̂0 is thresholded"),
        Float(
            name="percentile",
            default=0.995,
            min=0.5,
            max=1.0,
            step=0.001,
            tooltip="p: the quantile of |x̂0| taken as the threshold s",
        ),
        Float(
            name="max_value",
            default=1e9,
            min=1.0,
            max=1e9,
            step=0.1,
            tooltip="upper bound on the threshold s (1e9: none)",
        ),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(ctx: Context, guidance: Guidance, percentile: float, max_value: float) -> tuple[Guidance]:
        from nodes.diffusion.rules import Threshold

        return (Threshold(guidance, percentile, max_value),)


NODES: list[type[Node]] = [
    Predict,
    CFGCombine,
    Composable,
    GuidanceMix,
    ClassifierGrad,
    ClipLoss,
    GuidanceWindow,
    CFGRescale,
    DynamicThreshold,
]
