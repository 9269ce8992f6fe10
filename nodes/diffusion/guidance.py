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
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from nodes.diffusion.conventions import Denoiser
from nodes.diffusion.perturbation import AttentionHook, Perturbation, perturbed, row_plan
from nodes.diffusion.types import Conditioning, batch_conditions


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


@dataclass
class _Plan:
    """What one window state needs: leaves per model, live rules in order, whether x needs grad."""

    leaves: dict[tuple[Denoiser, tuple[int, int, int, int] | None], list[int]]  # (model, area) → leaves
    second: dict[Denoiser, list[int]]  # model → its second-phase leaves
    rules: list[int]
    needs_grad: bool
    alias: dict[int, int]  # window id → the id of its live branch
    renoise: int | None  # the live CFG++ rule, whose second input re-noises


@dataclass
class ForwardStats:
    """Counts of batched model forwards and of rows pushed through them (tests hold the promise)."""

    model_calls: int = 0
    rows: int = 0
    per_model: dict[str, int] = field(default_factory=dict)


class CompiledGuidance:
    """A GUIDANCE program ready to run as a denoiser ``(x, σ) → x̂0`` for one sampling run.

    It owns the run's state: per-rule memory (fresh from :meth:`Guidance.new_state` at compile time, so
    a new run starts clean while the program itself stays immutable and cacheable), the schedule that
    step-counted rules and step-fraction windows are placed on, and after each call the re-noising
    prediction of a live CFG++ rule (``renoise``; None when there is none).
    """

    def __init__(
        self,
        root: Guidance,
        *,
        seeds: Sequence[int],
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        max_batch: int = 0,
        sigmas: torch.Tensor | None = None,
    ):
        self.nodes: list[Guidance] = []
        self.children: list[tuple[int, ...]] = []
        ids: dict[Guidance, int] = {}
        self.root = self._collect(root, ids)
        self.device, self.dtype, self.max_batch = device, dtype, max_batch
        self.sigmas = None if sigmas is None else sigmas.detach().to("cpu", torch.float64)
        self.windows = [n for n in self.nodes if isinstance(n, Window)]
        self.bounds = [w.sigma_bounds(self.sigmas) for w in self.windows]
        self.conditions = {i: n.condition for i, n in enumerate(self.nodes) if isinstance(n, Prediction)}
        self.conditions |= {
            i: n.source.condition for i, n in enumerate(self.nodes) if isinstance(n, SecondPhaseLeaf)
        }
        self.states = {i: n.new_state() for i, n in enumerate(self.nodes)}
        self.generators = [torch.Generator().manual_seed((int(s) ^ 0x5DEECE66D) % 2**64) for s in seeds]
        self.plans: dict[tuple[bool, ...], _Plan] = {}
        self.stats = ForwardStats()
        self.renoise: torch.Tensor | None = None

    def _collect(self, root: Guidance, ids: dict[Guidance, int]) -> int:
        """Post-order numbering with identical sub-programs merged (iterative: deep programs are fine)."""
        stack: list[tuple[Guidance, bool]] = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if node in ids:
                continue
            if not expanded:
                stack.append((node, True))
                stack.extend((c, False) for c in reversed(node.children()) if c not in ids)
                continue
            ids[node] = len(self.nodes)
            self.nodes.append(node)
            self.children.append(tuple(ids[c] for c in node.children()))
        return ids[root]

    def _inside(self, w: int, sigma: float) -> bool:
        lo, hi = self.bounds[w]
        return lo < sigma <= hi

    def _plan(self, sigma: float) -> _Plan:
        key = tuple(self._inside(w, sigma) for w in range(len(self.windows)))
        if key in self.plans:
            return self.plans[key]
        inside = dict(zip((id(w) for w in self.windows), key, strict=True))
        live: set[int] = set()
        alias: dict[int, int] = {}
        stack = [self.root]
        while stack:
            i = stack.pop()
            if i in live:
                continue
            live.add(i)
            node = self.nodes[i]
            if isinstance(node, Window):
                alias[i] = self.children[i][0 if inside[id(node)] else 1]
                stack.append(alias[i])
            else:
                stack.extend(self.children[i])
        leaves: dict[tuple[Denoiser, tuple[int, int, int, int] | None], list[int]] = {}
        second: dict[Denoiser, list[int]] = {}
        rules: list[int] = []
        for i in sorted(live):  # post-order ids are a topological order
            node = self.nodes[i]
            if isinstance(node, Prediction):
                leaves.setdefault((node.model, node.area), []).append(i)
            elif isinstance(node, SecondPhaseLeaf):
                second.setdefault(node.source.model, []).append(i)
            elif not isinstance(node, Window):
                rules.append(i)
        needs_grad = any(self.nodes[i].grads_through_denoiser() for i in rules)
        renoise = [i for i in rules if self.nodes[i].renoise_input is not None]
        if len(renoise) > 1:
            raise ValueError("a program may hold one live CFG++ rule: the sampler re-noises once per step")
        self.plans[key] = plan = _Plan(
            leaves, second, rules, needs_grad, alias, renoise[0] if renoise else None
        )
        return plan

    def _place(self, sigma: float) -> tuple[int, float]:
        """(step index, progress) of σ on the run's schedule; (−1, −1.0) without one."""
        if self.sigmas is None:
            return -1, -1.0
        s, n = self.sigmas, len(self.sigmas) - 1
        if sigma >= float(s[0]):
            return 0, 0.0
        i = int(torch.searchsorted(-s, torch.tensor(-sigma, dtype=s.dtype), right=True)) - 1  # s[i] ≥ σ
        i = min(max(i, 0), n - 1)
        frac = (float(s[i]) - sigma) / max(float(s[i]) - float(s[i + 1]), 1e-30)
        return i, (i + min(frac, 1.0)) / n

    def _forward(
        self,
        model: Denoiser,
        leaf_ids: list[int],
        inputs: list[torch.Tensor],
        sigma: torch.Tensor,
        recorders: dict[int, list[AttentionHook]],
    ) -> list[torch.Tensor]:
        """Leaves of one model at their inputs (k × (B, C, h, w)) in one batched call, split in chunks
        only when ``max_batch`` says so. A perturbed leaf's rows get its perturbation, a recorded
        leaf's rows its recorders, the other rows the plain forward."""
        b, k = inputs[0].shape[0], len(leaf_ids)
        xs = torch.cat(inputs) if k > 1 else inputs[0]  # (k·B, C, h, w)
        sigmas = sigma.repeat(k)  # (k·B,)
        conds = batch_conditions([self.conditions[i] for i in leaf_ids], b, xs.device, self.dtype)
        hooks = [[*_perturbation(self.nodes[i]), *recorders.get(i, ())] for i in leaf_ids]
        rows = xs.shape[0]
        chunk = self.max_batch if 0 < self.max_batch < rows else rows
        outs = []
        for start in range(0, rows, chunk):
            part = slice(start, min(start + chunk, rows))
            cond = {k: v[part] for k, v in conds.items()} if isinstance(conds, dict) else conds[part]
            with perturbed(model.network, row_plan(hooks, b, part.start, part.stop)):
                outs.append(model(xs[part], sigmas[part], cond))
            self.stats.model_calls += 1
            self.stats.per_model[model.name] = self.stats.per_model.get(model.name, 0) + 1
        self.stats.rows += rows
        return list(torch.cat(outs).split(b))  # k × (B, C, H, W)

    def _leaves(self, plan: _Plan, x: torch.Tensor, sigma: torch.Tensor) -> dict[int, torch.Tensor]:
        """Phase 1: each model's leaves in one batched forward, recording what second-phase leaves
        read; phase 2 (only when the plan has such leaves): theirs in one more per model."""
        second = {j: _second(self.nodes[j]) for ids in plan.second.values() for j in ids}
        recorders = {j: leaf.recorder() for j, leaf in second.items()}
        by_source: dict[int, list[AttentionHook]] = {}
        for j, recorder in recorders.items():
            if recorder is not None:
                by_source.setdefault(self.children[j][0], []).append(recorder)
        values: dict[int, torch.Tensor] = {}
        for (model, _), ids in plan.leaves.items():
            crops = [self._crop(x, self.nodes[i]) for i in ids]  # k × (B, C, h, w)
            values.update(zip(ids, self._forward(model, ids, crops, sigma, by_source), strict=True))
        for model, ids in plan.second.items():
            xs = [second[j].model_input(x, values[self.children[j][0]], recorders[j]) for j in ids]
            outs = self._forward(model, ids, xs, sigma, {})
            values.update((j, second[j].value(x, xj, d)) for j, xj, d in zip(ids, xs, outs, strict=True))
        return values

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """One guided evaluation: x (B, C, H, W), σ (B,) → x̂0 (B, C, H, W)."""
        level = float(sigma.reshape(-1)[0])
        plan = self._plan(level)
        index, progress = self._place(level)
        with torch.set_grad_enabled(plan.needs_grad):
            x_in = x.detach().requires_grad_() if plan.needs_grad else x
            grad_leaf = x_in if plan.needs_grad else None
            step = Step(x.detach(), sigma, self.generators, grad_leaf, index, progress)
            values = self._leaves(plan, x_in, sigma)
            for i in plan.rules:
                inputs = [values[self._resolve(c, plan)] for c in self.children[i]]
                step.state = self.states[i]
                values[i] = self.nodes[i].apply(inputs, step)
        if plan.renoise is not None:
            child = self.children[plan.renoise][self.nodes[plan.renoise].renoise_input or 0]
            self.renoise = values[self._resolve(child, plan)].detach()
        else:
            self.renoise = None
        return values[self._resolve(self.root, plan)].detach()

    @staticmethod
    def _crop(x: torch.Tensor, leaf: Guidance) -> torch.Tensor:
        area = getattr(leaf, "area", None)
        if area is None:
            return x
        h, w, top, left = area
        return x[..., top : top + h, left : left + w]

    @staticmethod
    def _resolve(i: int, plan: _Plan) -> int:
        while i in plan.alias:  # a window forwards the value of its live branch
            i = plan.alias[i]
        return i


def _perturbation(node: Guidance) -> tuple[Perturbation, ...]:
    perturbation = node.perturbation if isinstance(node, Prediction) else None
    return () if perturbation is None else (perturbation,)


def _second(node: Guidance) -> SecondPhaseLeaf:
    assert isinstance(node, SecondPhaseLeaf)
    return node
