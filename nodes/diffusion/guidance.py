"""GUIDANCE: an immutable per-step program whose leaves are model predictions and whose inner nodes are rules.

Every value is an x0 prediction ``D(x; σ)`` in σ-space (see ``conventions.py``). A program is built by
nodes once per workflow run and compiled by the Sampler once per sampling run; then, every step:

1. the σ-windows pick which branches are live (a rule outside its window costs nothing);
2. the live leaves are deduplicated and all leaves of one model go through ONE batched forward, a
   perturbed leaf (PAG, SEG, skip-layer) changing the network's forward only on its own batch slice;
3. leaves whose model input is built from those outputs (:class:`SecondPhaseLeaf`: SAG's degraded
   input) go through ONE more batched forward per model, after the first; a program without them
   has no second phase;
4. the rules run in topological order; gradient rules enable autograd locally.

Affine rules (:class:`Combine`, :class:`Difference`) are the same in every prediction space because
their weights sum to 1; nonlinear rules (``rules.py``) declare the space they work in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from nodes.diffusion.conventions import Denoiser
from nodes.diffusion.perturbation import AttentionHook, Perturbation
from nodes.diffusion.types import Conditioning


@dataclass
class Step:
    """What a rule sees at one model evaluation: x (B, C, H, W), σ (B,), per-sample generators.

    ``index`` and ``progress`` place σ on the run's schedule (step i of N has index i and progress
    i/N; an intermediate σ, such as Heun's second stage, interpolates); both are −1 when the program
    was compiled without a schedule. ``state`` is the rule's own per-run memory (:meth:`Guidance.new_state`).
    """

    x: torch.Tensor
    sigma: torch.Tensor
    generators: list[torch.Generator]
    x_grad: torch.Tensor | None = None  # x as an autograd leaf when a rule back-propagates through D
    index: int = -1
    progress: float = -1.0
    state: Any = None

    def require_schedule(self, who: str) -> None:
        if self.index < 0:
            raise ValueError(f"{who} counts sampler steps, so it needs the run's schedule (sigmas)")


class Guidance:
    """Base of every program node. The rule contract, checked over every rule by
    ``tests/nodes/test_rule_contract.py``:

    - Subclasses are frozen dataclasses: hashable and compared by content, so a program is cacheable
      and identical sub-programs merge. Anything that changes during a run lives in per-run state.
    - ``children()`` lists the inputs in exactly the order ``apply()`` receives their values.
    - ``space`` names where the rule's arithmetic happens: ``"affine"`` for combinations whose weights
      sum to 1 (the same in every prediction space), else ``"x0"``, ``"eps"`` or ``"v"``
      (``"gradient"`` for terms ``D + s·σ²·g``); a rule whose space is a node input has it as a field.
    - ``passthrough()`` is the rule with its effect removed; the rule at its neutral parameters (scale 1,
      a zero term) gives the same value.
    - ``new_state()`` returns fresh per-run memory (None: stateless); the compiled program calls it once
      per sampling run and hands it to ``apply`` as ``step.state``.
    """

    space: ClassVar[str] = "affine"
    renoise_input: ClassVar[int | None] = None  # CFG++: the input the sampler re-noises with

    def grads_through_denoiser(self) -> bool:
        """True when the rule back-propagates through the denoiser (leaves then run with grad)."""
        return False

    def children(self) -> tuple[Guidance, ...]:
        return ()

    def passthrough(self) -> Guidance:
        """What stands in for this rule outside a guidance window (the rule with its effect removed)."""
        return self

    def needs_single_step_sampler(self) -> bool:
        """True when a multistep sampler's history would carry the rule's output wrongly (zero-init)."""
        return False

    def new_state(self) -> Any:
        """Per-run memory of a rule that needs it across steps (APG momentum); None when stateless."""
        return None

    def apply(self, inputs: list[torch.Tensor], step: Step) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Prediction(Guidance):
    """A leaf: the x0 prediction of ``model`` under ``condition``, optionally with its forward perturbed
    (PAG, SEG, skip-layer: the perturbation applies to this leaf's slice of the batched forward only).
    A condition from another text encoder than the model's is refused (:func:`check_encoder`).

    ``area`` (height, width, top, left, in latent units) runs the model on that crop of x only, and
    the prediction is crop-sized (ComfyUI's area conditioning; :mod:`nodes.diffusion.regions`
    pastes it back). Leaves of one model and one area (or none) share one batched forward.
    """

    model: Denoiser
    condition: Conditioning
    perturbation: Perturbation | None = None
    area: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        check_encoder(self.model, self.condition)


class SecondPhaseLeaf(Guidance):
    """A leaf whose model input is built from a first-phase leaf's output: the x0 prediction of
    ``source``'s model and condition at ``model_input(x, D_source, recorder)``, turned into its value
    by ``value``. The compiled program runs all such leaves of one model in ONE batched forward after
    the first-phase forwards (SAG, ``self_attention.py``: two batched forwards per step).

    ``recorder()`` gives a fresh attention hook for the source's rows of the first-phase forward
    (None: nothing to record); the program hands it back to ``model_input``.
    """

    source: Prediction

    def children(self) -> tuple[Guidance, ...]:
        return (self.source,)

    def recorder(self) -> AttentionHook | None:
        return None

    def model_input(self, x: torch.Tensor, source: torch.Tensor, recorder: Any) -> torch.Tensor:
        raise NotImplementedError

    def value(self, x: torch.Tensor, model_input: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def check_encoder(model: Denoiser, condition: Conditioning) -> None:
    """Refuse a condition made by another text encoder than the model's (when both say which)."""
    if model.encoder and condition.encoder and model.encoder != condition.encoder:
        raise ValueError(
            f"condition {condition.meaning} was encoded by {condition.encoder!r}, but model "
            f"{model.name!r} reads conditions of {model.encoder!r}; encode it with that model's text encoder"
        )


@dataclass(frozen=True)
class Combine(Guidance):
    """``out = base + Σᵢ wᵢ·(termᵢ − base)``: CFG (one term, Ho & Salimans 2022), negative prompts
    (base = the negative), composable diffusion AND/NOT (Liu et al. 2022, signed wᵢ) and any N-term
    extrapolation between programs (autoguidance + CFG)."""

    base: Guidance
    terms: tuple[tuple[Guidance, float], ...]

    def children(self) -> tuple[Guidance, ...]:
        return (self.base, *(t for t, _ in self.terms))

    def passthrough(self) -> Guidance:
        """Guidance scale 1 over the positive terms: CFG's conditional, AND's mean; no base pass."""
        positive = [(t, w) for t, w in self.terms if w > 0]
        if not positive:
            return self.base
        total = sum(w for _, w in positive)
        head, rest = positive[0][0], tuple((t, w / total) for t, w in positive[1:])
        return combine(head, rest)

    def apply(self, inputs: list[torch.Tensor], step: Step) -> torch.Tensor:
        base, out = inputs[0], inputs[0]
        for (_, w), pred in zip(self.terms, inputs[1:], strict=True):
            out = out + w * (pred - base)
        return out


def combine(base: Guidance, terms: Sequence[tuple[Guidance, float]]) -> Guidance:
    """:class:`Combine` with its exact shortcuts: zero weights drop out, and a lone weight-1 term is
    that term (CFG at scale 1 needs no unconditional pass; at scale 0 it is the unconditional)."""
    kept = tuple((t, float(w)) for t, w in terms if w != 0)
    if not kept:
        return base
    if len(kept) == 1 and kept[0][1] == 1.0:
        return kept[0][0]
    return Combine(base, kept)


def cfg(positive: Guidance, negative: Guidance, scale: float) -> Guidance:
    """Classifier-free guidance ``u + w·(c − u)`` (Ho & Salimans 2022, Imagen/ComfyUI scale convention)."""
    return combine(negative, [(positive, scale)])


def dual_cfg(
    full: Guidance, image: Guidance, null: Guidance, image_scale: float, text_scale: float, nested: bool
) -> Guidance:
    """Two-scale CFG of InstructPix2Pix (Brooks et al. 2023, "InstructPix2Pix: Learning to Follow Image
    Editing Instructions", eq. 3) over ``full`` = P(c_I, c_T), ``image`` = P(c_I, ∅) and ``null`` = P(∅, ∅):

        out = P(∅,∅) + s_I·(P(c_I,∅) − P(∅,∅)) + s_T·(P(c_I,c_T) − P(c_I,∅))
            = P(∅,∅) + (s_I − s_T)·(P(c_I,∅) − P(∅,∅)) + s_T·(P(c_I,c_T) − P(∅,∅)),

    a :class:`Combine` over the null (weights sum to 1: affine, the same in every space; one batched
    forward of three rows). ``nested`` is ComfyUI's "nested" style, CFG of a CFG:
    ``P(∅,∅) + s_I·(P(c_I,∅) + s_T·(P(c_I,c_T) − P(c_I,∅)) − P(∅,∅))``, i.e. weights s_I·(1 − s_T) and
    s_I·s_T. A zero weight drops its prediction (s_I = s_T skips P(c_I, ∅)).
    """
    if nested:
        return combine(null, [(image, image_scale * (1 - text_scale)), (full, image_scale * text_scale)])
    return combine(null, [(image, image_scale - text_scale), (full, text_scale)])


@dataclass(frozen=True)
class Difference(Guidance):
    """``out = inner + s·(plus − minus)``: a guidance term added on top of any program.

    The perturbed-prediction methods are this rule with ``plus`` the conditional prediction and
    ``minus`` the same prediction with a perturbed forward: PAG (Ahn et al. 2024), SEG (Hong 2024),
    skip-layer guidance (SD3.5; STG, Hyung et al. 2024). Weights 1 + s − s sum to 1: affine.
    """

    inner: Guidance
    plus: Guidance
    minus: Guidance
    scale: float

    def children(self) -> tuple[Guidance, ...]:
        return (self.inner, self.plus, self.minus)

    def passthrough(self) -> Guidance:
        return self.inner

    def apply(self, inputs: list[torch.Tensor], step: Step) -> torch.Tensor:
        inner, plus, minus = inputs
        return inner + self.scale * (plus - minus)


@dataclass(frozen=True)
class Window(Guidance):
    """``inner`` inside a window, ``outside`` elsewhere (Kynkäänniemi et al. 2024, guidance interval).

    ``unit = "sigma"``: inside while σ_lo < σ ≤ σ_hi, decided from the σ actually passed to the model,
    so it holds for multi-stage samplers too. ``unit = "fraction"``: ``lo``/``hi`` are the start and
    stop fractions of the run's steps, step i of N being inside when ⌊start·N⌋ ≤ i < ⌊stop·N⌋
    (diffusers' guider ``start``/``stop``); the compiled program turns them into σ bounds on the run's
    schedule, so the test is again on σ (a second stage at a boundary σ belongs to the later step).
    """

    inner: Guidance
    outside: Guidance
    lo: float
    hi: float
    unit: str = "sigma"

    def __post_init__(self) -> None:
        if self.unit not in ("sigma", "fraction"):
            raise ValueError(f"unknown window unit {self.unit!r}; expected 'sigma' or 'fraction'")

    def children(self) -> tuple[Guidance, ...]:
        return (self.inner, self.outside)

    def passthrough(self) -> Guidance:
        return self.outside

    def sigma_bounds(self, sigmas: torch.Tensor | None) -> tuple[float, float]:
        """(σ_lo, σ_hi) of the window on a run's schedule (n σ values then 0)."""
        if self.unit == "sigma":
            return self.lo, self.hi
        if sigmas is None:
            raise ValueError("a window in fractions of the steps needs the run's schedule (sigmas)")
        n = len(sigmas) - 1
        first, stop = math.floor(self.lo * n + 1e-9), math.floor(self.hi * n + 1e-9)
        if first >= stop:
            return math.inf, math.inf  # no step inside
        hi = math.inf if first == 0 else float(sigmas[first])
        return float(sigmas[min(stop, n)]), hi


def window(inner: Guidance, sigma_hi: float, sigma_lo: float, outside: Guidance | None = None) -> Window:
    """Wrap any rule in a σ-window; outside it the rule is replaced by its pass-through."""
    return Window(
        inner, outside if outside is not None else inner.passthrough(), float(sigma_lo), float(sigma_hi)
    )


def step_window(inner: Guidance, start: float, stop: float, outside: Guidance | None = None) -> Window:
    """Wrap any rule in a window over fractions of the run's steps (``start`` ≤ i/N < ``stop``)."""
    if not 0.0 <= start <= stop <= 1.0:
        raise ValueError(f"expected 0 ≤ start ≤ stop ≤ 1, got start {start} and stop {stop}")
    return Window(
        inner, outside if outside is not None else inner.passthrough(), float(start), float(stop), "fraction"
    )
