"""Nonlinear guidance rules: each names its paper, its formula and the prediction space it works in.

Inputs and outputs are x0 predictions at (x, σ) like every GUIDANCE value; a rule maps them to its
``space`` (``conventions.to_space``), works there and maps back. Per-sample inner products and norms
run over all non-batch dims: ``⟨a, b⟩``, ``‖a‖``, ``proj_b(a) = ⟨a, b⟩/⟨b, b⟩·b``. Where diffusers or
ComfyUI deviate from the paper, the paper is followed and the difference is written down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from nodes.diffusion.conventions import SPACES, append_dims, from_space, to_space
from nodes.diffusion.guidance import Guidance, Step
from nodes.diffusion.names import SCHEDULES


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return append_dims((a * b).flatten(1).sum(dim=1), a.ndim)  # (B, 1, 1, 1)


def _check_space(space: str) -> None:
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; expected one of {SPACES}")


@dataclass(frozen=True)
class Rescale(Guidance):
    """CFG rescale (Lin et al. 2023, §3.4), in a declared space (the paper's: v).

    ``g_r = g·std(P_ref)/std(g)``, ``out = φ·g_r + (1 − φ)·g`` with per-sample std; ``reference`` is
    the conditional prediction (the guided rule's pass-through). Neutral: φ = 0.
    """

    guided: Guidance
    reference: Guidance
    phi: float
    space: str  # type: ignore[misc]

    def __post_init__(self) -> None:
        _check_space(self.space)

    def children(self) -> tuple[Guidance, ...]:
        return (self.guided, self.reference)

    def passthrough(self) -> Guidance:
        return self.guided

    def apply(self, inputs: list[torch.Tensor], step: Step) -> torch.Tensor:
        g = to_space(inputs[0], step.x, step.sigma, self.space)
        ref = to_space(inputs[1], step.x, step.sigma, self.space)
        std_g, std_ref = (append_dims(t.flatten(1).std(dim=1), t.ndim) for t in (g, ref))  # (B, 1, 1, 1)
        rescaled = g * std_ref / std_g.clamp(min=1e-12)
        return from_space(self.phi * rescaled + (1 - self.phi) * g, step.x, step.sigma, self.space)


@dataclass(frozen=True)
class Threshold(Guidance):
    """Dynamic thresholding of x̂0 (Saharia et al. 2022, Imagen §2.3), space x0.

    ``s = clamp(quantile_p(|x̂0|), 1, max_value)`` per sample; ``x̂0 ← clip(x̂0, −s, s)/s``.
    Neutral: ``max_value`` = 1 on a prediction inside [−1, 1].
    """

    space: ClassVar[str] = "x0"
    inner: Guidance
    percentile: float
    max_value: float

    def children(self) -> tuple[Guidance, ...]:
        return (self.inner,)

    def passthrough(self) -> Guidance:
        return self.inner

    def apply(self, inputs: list[torch.Tensor], step: Step) -> torch.Tensor:
        x0 = inputs[0]
        s = torch.quantile(x0.flatten(1).abs().float(), self.percentile, dim=1).to(x0.dtype)
        s = append_dims(s.clamp(min=1.0, max=max(self.max_value, 1.0)), x0.ndim)
        return torch.maximum(torch.minimum(x0, s), -s) / s


@dataclass
class Momentum:
    """APG's running average of the guidance direction, one per sampling run."""

    average: torch.Tensor | None = None


@dataclass(frozen=True)
class AdaptiveProjected(Guidance):
    """APG (Sadat et al. 2024, "Eliminating Oversaturation and Artifacts of High Guidance Scales in
    Diffusion Models", Alg. 1), in x0 space by default (the authors' recommendation):

    ``Δ = D_c − D_u``; momentum ``m ← Δ + β·m`` (``Δ ← m``); ``Δ ← Δ·min(1, r/‖Δ‖)`` (r > 0);
    ``Δ∥ = proj_{D_c}(Δ)``, ``Δ⊥ = Δ − Δ∥``; ``out = D_c + (w − 1)·(Δ⊥ + η·Δ∥)``.

    Momentum is per-run state updated at every model evaluation (Heun's two stages both count).
    diffusers' ``AdaptiveProjectedGuidance`` returns ``D_u + w·(…)`` by default (the paper's result
    at scale w + 1 only when η = 1 and nothing is clipped) and works on the raw model output;
    ``use_original_formulation=True`` with scale w − 1 is this rule. ComfyUI's APG gives
    ``D_c + w·(…)``. Neutral: w = 1.
    """

    cond: Guidance
    uncond: Guidance
    scale: float
    eta: float
    momentum: float
    norm_threshold: float
    space: str  # type: ignore[misc]

    def __post_init__(self) -> None:
        _check_space(self.space)

    def children(self) -> tuple[Guidance, ...]:
        return (self.cond, self.uncond)

    def passthrough(self) -> Guidance:
        return self.cond

    def new_state(self) -> Momentum:
        return Momentum()

    def apply(self, inputs: list[torch.Tensor], step: Step) -> torch.Tensor:
        c, u = (to_space(t, step.x, step.sigma, self.space) for t in inputs)
        delta = c - u
        state: Momentum = step.state
        if self.momentum != 0:
            if state.average is not None:
                delta = delta + self.momentum * state.average
            state.average = delta
        if self.norm_threshold > 0:
            norm = _dot(delta, delta).sqrt()
            delta = delta * (self.norm_threshold / norm.clamp(min=1e-12)).clamp(max=1.0)
        c64, d64 = c.double(), delta.double()
        parallel = _dot(d64, c64) / _dot(c64, c64).clamp(min=1e-30) * c64
        update = (d64 - parallel + self.eta * parallel).to(c.dtype)
        return from_space(c + (self.scale - 1) * update, step.x, step.sigma, self.space)


@dataclass(frozen=True)
class ZeroStar(Guidance):
    """CFG-Zero* (Fan et al. 2025, "CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching
    Models"): ``α = ⟨P_c, P_u⟩/‖P_u‖²`` per sample, ``out = α·P_u + w·(P_c − α·P_u)``, and for the first
    ``zero_steps`` steps of the run the flow velocity is zero.

    Space eps by default: in σ-space ε = (x − D)/σ is the probability-flow velocity dx/dσ, the
    counterpart of the paper's flow velocity (diffusers' guider also works on the raw output).
    Zero-init follows the paper: zero velocity of the flow ``x_t = (1 − t)·x0 + t·n`` predicts
    x0 = x_t, which in σ-space (σ = t/(1 − t), x = x_t/(1 − t)) is ``D = x/(1 + σ)``; the sample then
    shrinks with σ as a flow sample stands still. diffusers zeroes the raw output instead, on an
    ε-model ε = 0, i.e. ``D = x``: the sample keeps σ_0's noise while σ falls, which with a
    deterministic sampler ruins the run on the shipped model (measured: max |x| 67 after 20 euler
    steps). Zero-init needs a single-step sampler: a multistep one (lms, dpmpp_2m, dpmpp_2m_sde)
    would extrapolate from it. ComfyUI's CFGZeroStar scales the unconditional x0 instead and has no
    zero-init (guidance-methods.md §1F.2). Neutral: w = 1, no zero steps.
    """

    cond: Guidance
    uncond: Guidance
    scale: float
    zero_steps: int
    space: str  # type: ignore[misc]

    def __post_init__(self) -> None:
        _check_space(self.space)

    def children(self) -> tuple[Guidance, ...]:
        return (self.cond, self.uncond)

    def passthrough(self) -> Guidance:
        return self.cond

    def needs_single_step_sampler(self) -> bool:
        """Zero-init answers D = x, which a multistep sampler would keep as an x0 history point."""
        return self.zero_steps > 0

    def apply(self, inputs: list[torch.Tensor], step: Step) -> torch.Tensor:
        if self.zero_steps > 0:
            step.require_schedule("CFG-Zero*'s zero-init")
            if step.index < self.zero_steps:  # zero flow velocity: x0 = x_t in flow coordinates
                return step.x / (1 + append_dims(step.sigma, step.x.ndim).to(step.x.dtype))
        c, u = (to_space(t, step.x, step.sigma, self.space) for t in inputs)
        alpha = _dot(c, u) / _dot(u, u).clamp(min=1e-12)
        return from_space(alpha * u + self.scale * (c - alpha * u), step.x, step.sigma, self.space)


@dataclass(frozen=True)
class PerpNeg(Guidance):
    """Perp-Neg (Armandpour et al. 2023, "Re-imagine the Negative Prompt Algorithm", eq. 9–10):
    ``δ⁺ = P(c⁺) − P(∅)``, ``δ⁻ = P(c⁻) − P(∅)``, ``out = P(∅) + w·(δ⁺ − λ·(δ⁻ − proj_{δ⁺}(δ⁻)))``.

    Space eps (the paper's). Only the part of the negative orthogonal to the positive is removed, so
    a negative that overlaps the prompt does not cancel it. The projection is per sample; ComfyUI's
    PerpNegGuider takes one coefficient over the whole batch (§1F.3). Neutral: λ = 0 (plain CFG).
    """

    positive: Guidance
    negative: Guidance
    null: Guidance
    scale: float
    neg_scale: float
    space: str = "eps"  # type: ignore[misc]

    def __post_init__(self) -> None:
        _check_space(self.space)

    def children(self) -> tuple[Guidance, ...]:
        return (self.positive, self.negative, self.null)

    def passthrough(self) -> Guidance:
        return self.positive

    def apply(self, inputs: list[torch.Tensor], step: Step) -> torch.Tensor:
        pos, neg, null = (to_space(t, step.x, step.sigma, self.space) for t in inputs)
        d_pos, d_neg = pos - null, neg - null
        perp = d_neg - _dot(d_neg, d_pos) / _dot(d_pos, d_pos).clamp(min=1e-12) * d_pos
        out = null + self.scale * (d_pos - self.neg_scale * perp)
        return from_space(out, step.x, step.sigma, self.space)


@dataclass(frozen=True)
class Tangential(Guidance):
    """TCFG (Kwon et al. 2025, "TCFG: Tangential Damping Classifier-free Guidance"): per sample, the
    SVD of the 2×N matrix ``[P_c; P_u]``; with v₁ its top right-singular vector,
    ``P_u' = ⟨P_u, v₁⟩·v₁`` and ``out = P_u' + w·(P_c − P_u')``.

    Space eps (diffusers' guider works on the raw output; ComfyUI's TCFG on x − D, proportional to
    ε at fixed σ, so the same). Neutral: w = 1.
    """

    cond: Guidance
    uncond: Guidance
    scale: float
    space: str = "eps"  # type: ignore[misc]

    def __post_init__(self) -> None:
        _check_space(self.space)

    def children(self) -> tuple[Guidance, ...]:
        return (self.cond, self.uncond)

    def passthrough(self) -> Guidance:
        return self.cond

    def apply(self, inputs: list[torch.Tensor], step: Step) -> torch.Tensor:
        c, u = (to_space(t, step.x, step.sigma, self.space) for t in inputs)
        pair = torch.stack([c.flatten(1), u.flatten(1)], dim=1).double()  # (B, 2, N)
        v1 = torch.linalg.svd(pair, full_matrices=False).Vh[:, 0]  # (B, N)
        u_flat = u.flatten(1).double()
        u_tan = ((u_flat * v1).sum(dim=1, keepdim=True) * v1).reshape(u.shape).to(u.dtype)
        return from_space(u_tan + self.scale * (c - u_tan), step.x, step.sigma, self.space)


def schedule_factor(schedule: str, progress: float) -> float:
    """f(p) for p = i/N through the run, each with mean 1 over [0, 1] so schedules compare at equal
    average scale: constant 1; linear 2p / 2(1 − p); cosine 1 − cos(πp) / 1 + cos(πp)."""
    if schedule == "constant":
        return 1.0
    if schedule == "linear_increasing":
        return 2 * progress
    if schedule == "linear_decreasing":
        return 2 * (1 - progress)
    if schedule == "cosine_increasing":
        return 1 - math.cos(math.pi * progress)
    if schedule == "cosine_decreasing":
        return 1 + math.cos(math.pi * progress)
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")


@dataclass(frozen=True)
class Scheduled(Guidance):
    """A guidance strength that varies over the run: ``out = P + f(p)·(G − P)`` with G the rule,
    P its pass-through and p = i/N the run's progress (``schedule_factor``).

    For CFG at scale w this is CFG at ``w(p) = 1 + f(p)·(w − 1)``; for a gradient term, its scale
    times f(p). The increasing and decreasing linear and cosine shapes are the schedulers compared by
    Wang et al. 2024 ("Analysis of Classifier-Free Guidance Weight Schedulers", TMLR), who find the
    increasing ones better; Kynkäänniemi et al. 2024 (guidance interval) argue against high guidance
    at high σ. Affine in (G, P). Neutral: "constant".
    """

    guided: Guidance
    reference: Guidance
    schedule: str

    def __post_init__(self) -> None:
        schedule_factor(self.schedule, 0.0)

    def children(self) -> tuple[Guidance, ...]:
        return (self.guided, self.reference)

    def passthrough(self) -> Guidance:
        return self.reference

    def apply(self, inputs: list[torch.Tensor], step: Step) -> torch.Tensor:
        if self.schedule == "constant":
            return inputs[0]
        step.require_schedule(f"the {self.schedule} guidance schedule")
        guided, reference = inputs
        return reference + schedule_factor(self.schedule, step.progress) * (guided - reference)


@dataclass(frozen=True)
class Renoise(Guidance):
    """CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance for Diffusion
    Models"): the value is ``guided`` (x̂0 = D_u + λ·(D_c − D_u), λ ∈ [0, 1]) and the sampler re-noises
    with ``renoise`` (D_u) instead of the guided prediction: ``x' = x̂0 + σ'·(x − D_u)/σ`` (euler, ddim;
    euler_ancestral to σ_down). Rules above it change x̂0 only, never the re-noising direction
    (guidance-methods.md §2.1). Outside a window it is ``guided`` and the sampler re-noises as usual.
    """

    renoise_input: ClassVar[int | None] = 1
    guided: Guidance
    renoise: Guidance

    def children(self) -> tuple[Guidance, ...]:
        return (self.guided, self.renoise)

    def passthrough(self) -> Guidance:
        return self.guided

    def apply(self, inputs: list[torch.Tensor], step: Step) -> torch.Tensor:
        return inputs[0]
