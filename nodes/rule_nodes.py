"""Guidance rules beyond CFG: each node builds one rule of the GUIDANCE program (``diffusion/rules.py``).

Each takes the model and its conditions as CFGCombine does, so it composes with windows, schedules,
classifier and CLIP gradients and the perturbed-prediction terms like any other GUIDANCE value; the
predictions it needs share one batched forward per step. Scales follow the CFG convention
(``u + w·(c − u)``; w = 1 is the conditional prediction).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graph_runtime.api import Combo, Context, Float, Int, Node, Socket
from nodes.diffusion.names import SPACES
from nodes.guidance_nodes import CATEGORY, GUIDANCE_OUT, SCALE_LIMIT

if TYPE_CHECKING:
    from nodes.diffusion.conventions import Denoiser
    from nodes.diffusion.guidance import Guidance
    from nodes.diffusion.types import Conditioning


PAIR = (
    Socket(name="model", type="MODEL", tooltip="the denoiser every prediction comes from"),
    Socket(name="positive", type="CONDITIONING", tooltip="c: the condition to steer towards"),
    Socket(
        name="negative",
        type="CONDITIONING",
        tooltip="u: the unconditional prediction (a NullCondition) or a negative prompt",
    ),
)


class APG(Node):
    """Adaptive projected guidance (Sadat et al. 2024, "Eliminating Oversaturation and Artifacts of
    High Guidance Scales in Diffusion Models", Alg. 1), in x0 space by default:
    ``Δ = D_c − D_u``, momentum ``m ← Δ + β·m``, norm cap ``Δ·min(1, r/‖Δ‖)``, then
    ``out = D_c + (w − 1)·(Δ⊥ + η·Δ∥)`` with Δ∥ the part of Δ along D_c.

    η = 0 drops the parallel part (the one that saturates colours); β < 0 pushes away from the
    previous steps' direction; r = 0 switches the cap off. The momentum is reset at every sampling
    run. diffusers' guider equals this rule with ``use_original_formulation=True`` and scale w − 1.
    """

    category = CATEGORY
    inputs = (
        *PAIR,
        Float(
            name="scale",
            default=7.0,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.1,
            tooltip="w: 1 is the conditional alone; the projected update is scaled by w − 1",
        ),
        Float(
            name="eta",
            default=0.0,
            min=-10.0,
            max=10.0,
            step=0.05,
            tooltip="η: weight of the update's part along D_c (0 drops the part that saturates colours)",
        ),
        Float(
            name="momentum",
            default=-0.5,
            min=-1.0,
            max=1.0,
            step=0.05,
            tooltip="β: adds β times the previous direction (negative pushes away from it; 0 off)",
        ),
        Float(
            name="norm_threshold",
            default=15.0,
            min=0.0,
            max=1e6,
            step=0.5,
            tooltip="r: cap on the per-sample norm of the update (0 off)",
        ),
        Combo(
            name="space",
            options=SPACES,
            default="x0",
            tooltip="where the projection is taken (x0: the paper's choice)",
        ),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(
        ctx: Context,
        model: Denoiser,
        positive: Conditioning,
        negative: Conditioning,
        scale: float,
        eta: float,
        momentum: float,
        norm_threshold: float,
        space: str,
    ) -> tuple[Guidance]:
        from nodes.diffusion.regions import predict
        from nodes.diffusion.rules import AdaptiveProjected

        c, u = predict(model, positive), predict(model, negative)
        if scale == 1.0:
            return (c,)
        return (AdaptiveProjected(c, u, scale, eta, momentum, norm_threshold, space),)


class CFGZeroStar(Node):
    """CFG-Zero* (Fan et al. 2025, "CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching
    Models"): ``α = ⟨P_c, P_u⟩/‖P_u‖²`` per sample, ``out = α·P_u + w·(P_c − α·P_u)``, and the first
    ``zero_steps`` steps of the run have zero flow velocity (x0 = x_t in flow coordinates, which is
    D = x/(1 + σ); diffusers zeroes ε instead, D = x, which breaks deterministic sampling here).

    Space eps by default (in σ-space ε is the ODE velocity, the paper's flow velocity). Zero-init
    needs a single-step sampler (euler, heun, ddim, …); multistep ones are refused.
    """

    category = CATEGORY
    inputs = (
        *PAIR,
        Float(
            name="scale",
            default=5.0,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.1,
            tooltip="w in α·u + w·(c − α·u)",
        ),
        Int(
            name="zero_steps",
            default=1,
            min=0,
            max=10000,
            tooltip="first steps of the run with zero flow velocity (the sample stands still)",
        ),
        Combo(
            name="space", options=SPACES, default="eps", tooltip="where α is computed (eps: the ODE velocity)"
        ),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(
        ctx: Context,
        model: Denoiser,
        positive: Conditioning,
        negative: Conditioning,
        scale: float,
        zero_steps: int,
        space: str,
    ) -> tuple[Guidance]:
        from nodes.diffusion.regions import predict
        from nodes.diffusion.rules import ZeroStar

        return (ZeroStar(predict(model, positive), predict(model, negative), scale, zero_steps, space),)


class PerpNegGuidance(Node):
    """Perp-Neg (Armandpour et al. 2023, "Re-imagine the Negative Prompt Algorithm"):
    ``out = P(∅) + w·(δ⁺ − λ·(δ⁻ − proj_{δ⁺}δ⁻))`` with ``δ± = P(c±) − P(∅)``, per sample, in ε space.

    Only the part of the negative prompt orthogonal to the positive one is pushed away, so a negative
    that shares content with the prompt does not erase it. Three predictions, one batched forward.
    """

    category = CATEGORY
    inputs = (
        *PAIR,
        Socket(
            name="unconditional",
            type="CONDITIONING",
            tooltip="∅: the null condition both directions start from",
        ),
        Float(
            name="scale",
            default=5.0,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.1,
            tooltip="w in ∅ + w·(δ⁺ − λ·perp(δ⁻))",
        ),
        Float(
            name="neg_scale",
            default=1.0,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.05,
            tooltip="λ: strength of the negative's part orthogonal to the positive",
        ),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(
        ctx: Context,
        model: Denoiser,
        positive: Conditioning,
        negative: Conditioning,
        unconditional: Conditioning,
        scale: float,
        neg_scale: float,
    ) -> tuple[Guidance]:
        from nodes.diffusion.regions import predict
        from nodes.diffusion.rules import PerpNeg

        p, n, u = (predict(model, c) for c in (positive, negative, unconditional))
        return (PerpNeg(p, n, u, scale, neg_scale),)


class DualCFGCombine(Node):
    """Two-scale CFG of InstructPix2Pix (Brooks et al. 2023, "InstructPix2Pix: Learning to Follow
    Image Editing Instructions", eq. 3) for a model conditioned on an image c_I and a text c_T:
    ``out = P(∅,∅) + s_I·(P(c_I,∅) − P(∅,∅)) + s_T·(P(c_I,c_T) − P(c_I,∅))``.

    s_I pulls towards the input image, s_T towards the instruction; diffusers' pipeline calls them
    ``image_guidance_scale`` and ``guidance_scale``. The three predictions share one batched forward;
    s_I = s_T skips P(c_I, ∅). InstructPixToPixConditioning makes the image conditions: its
    ``positive`` is c_I + c_T, its ``negative`` c_I + ∅; the plain negative prompt is ∅ + ∅.
    """

    category = CATEGORY
    inputs = (
        Socket(name="model", type="MODEL", tooltip="an image-conditioned denoiser (InstructPix2Pix)"),
        Socket(name="image_text", type="CONDITIONING", tooltip="c_I + c_T: the image and the instruction"),
        Socket(name="image", type="CONDITIONING", tooltip="c_I + ∅: the image with the null (negative) text"),
        Socket(name="null", type="CONDITIONING", tooltip="∅ + ∅: no image, the null (negative) text"),
        Float(
            name="image_scale",
            default=1.5,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.05,
            tooltip="s_I: how closely to keep the input image (1.5: the paper's and diffusers' default)",
        ),
        Float(
            name="text_scale",
            default=7.5,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.1,
            tooltip="s_T: how strongly to follow the instruction (7.5: the paper's and diffusers' default)",
        ),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(
        ctx: Context,
        model: Denoiser,
        image_text: Conditioning,
        image: Conditioning,
        null: Conditioning,
        image_scale: float,
        text_scale: float,
    ) -> tuple[Guidance]:
        from nodes.diffusion.guidance import dual_cfg
        from nodes.diffusion.regions import predict

        full, image_only, none = (predict(model, c) for c in (image_text, image, null))
        return (dual_cfg(full, image_only, none, image_scale, text_scale, nested=False),)


class TangentialCFG(Node):
    """TCFG (Kwon et al. 2025, "TCFG: Tangential Damping Classifier-free Guidance"): the unconditional
    prediction keeps only its component along the top singular direction of ``[P_c; P_u]``, then
    ``out = P_u' + w·(P_c − P_u')``; per sample, in ε space.
    """

    category = CATEGORY
    inputs = (
        *PAIR,
        Float(
            name="scale",
            default=5.0,
            min=-SCALE_LIMIT,
            max=SCALE_LIMIT,
            step=0.1,
            tooltip="w in u' + w·(c − u')",
        ),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(
        ctx: Context, model: Denoiser, positive: Conditioning, negative: Conditioning, scale: float
    ) -> tuple[Guidance]:
        from nodes.diffusion.regions import predict
        from nodes.diffusion.rules import Tangential

        return (Tangential(predict(model, positive), predict(model, negative), scale),)


class CFGPlusPlus(Node):
    """CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance for Diffusion
    Models"): x̂0 = D_u + λ·(D_c − D_u) with λ in [0, 1], and the sampler re-noises with D_u:
    ``x' = x̂0 + σ'·(x − D_u)/σ``.

    Samplers euler, euler_ancestral and ddim use the re-noising prediction; others refuse the
    program. Rules stacked above (gradients, rescale) change x̂0 only.
    """

    category = CATEGORY
    inputs = (
        *PAIR,
        Float(
            name="scale",
            default=0.6,
            min=0.0,
            max=2.0,
            step=0.05,
            tooltip="λ in u + λ·(c − u); the paper uses 0 to 1",
        ),
    )
    outputs = GUIDANCE_OUT

    @staticmethod
    def run(
        ctx: Context, model: Denoiser, positive: Conditioning, negative: Conditioning, scale: float
    ) -> tuple[Guidance]:
        from nodes.diffusion.guidance import cfg
        from nodes.diffusion.regions import predict
        from nodes.diffusion.rules import Renoise

        u = predict(model, negative)
        return (Renoise(cfg(predict(model, positive), u, scale), u),)


NODES: list[type[Node]] = [APG, CFGZeroStar, PerpNegGuidance, DualCFGCombine, TangentialCFG, CFGPlusPlus]
