"""GUIDANCE: an immutable per-step program whose leaves are model predictions and whose inner nodes are rules.

Every value is an x0 prediction ``D(x; σ)`` in σ-space (see ``conventions.py``). A program is built by
nodes once per workflow run and compiled by the Sampler once per sampling run; then, every step:

1. the σ-windows pick which branches are live (a rule outside its window costs nothing);
2. the live leaves are deduplicated and all leaves of one model go through ONE batched forward;
3. the rules run in topological order; gradient rules enable autograd locally.

Affine rules (:class:`Combine`) are the same in every prediction space because their weights sum to 1
(``base + Σ wᵢ(termᵢ − base)``); nonlinear rules (:class:`Rescale`, :class:`Threshold`) declare theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from nodes.diffusion.conventions import SPACES, Denoiser, append_dims, from_space, to_space
from nodes.diffusion.types import Conditioning, batch_conditions


@dataclass
class Step:
    """What a rule sees at one model evaluation: x (B, C, H, W), σ (B,), per-sample generators."""

    x: torch.Tensor
    sigma: torch.Tensor
    generators: list[torch.Generator]
    x_grad: torch.Tensor | None = None  # x as an autograd leaf when a rule back-propagates through D


class Guidance:
    """Base of every program node. Subclasses are frozen dataclasses: hashable, compared by content."""

    def grads_through_denoiser(self) -> bool:
        """True when the rule back-propagates through the denoiser (leaves then run with grad)."""
        return False

    def children(self) -> tuple[Guidance, ...]:
        return ()

    def passthrough(self) -> Guidance:
        """What stands in for this rule outside a guidance window (the rule with its effect removed)."""
        return self

    def apply(self, inputs: list[torch.Tensor], step: Step) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Prediction(Guidance):
    """A leaf: the x0 prediction of ``model`` under ``condition``.

    ``area`` (height, width, top, left, in latent units) runs the model on that crop of x only, and
    the prediction is crop-sized (ComfyUI's area conditioning; :mod:`nodes.diffusion.regions`
    pastes it back). Leaves of one model and one area (or none) share one batched forward.
    """

    model: Denoiser
    condition: Conditioning
    area: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class Combine(Guidance):
    """``out = base + Σᵢ wᵢ·(termᵢ − base)``: CFG (one term, Ho & Salimans 2022), negative prompts
    (base = the negative) and composable diffusion AND/NOT (Liu et al. 2022, signed wᵢ)."""

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
class Window(Guidance):
    """``inner`` while σ_lo < σ ≤ σ_hi, ``outside`` elsewhere (Kynkäänniemi et al. 2024, guidance interval).

    Decided from the σ actually passed to the model, so it holds for multi-stage samplers too.
    """

    inner: Guidance
    outside: Guidance
    sigma_lo: float
    sigma_hi: float

    def children(self) -> tuple[Guidance, ...]:
        return (self.inner, self.outside)

    def passthrough(self) -> Guidance:
        return self.outside

    def contains(self, sigma: float) -> bool:
        return self.sigma_lo < sigma <= self.sigma_hi


def window(inner: Guidance, sigma_hi: float, sigma_lo: float, outside: Guidance | None = None) -> Window:
    """Wrap any rule in a σ-window; outside it the rule is replaced by its pass-through."""
    return Window(
        inner, outside if outside is not None else inner.passthrough(), float(sigma_lo), float(sigma_hi)
    )


def _std(t: torch.Tensor) -> torch.Tensor:
    return append_dims(t.flatten(1).std(dim=1), t.ndim)  # (B, 1, 1, 1)


@dataclass(frozen=True)
class Rescale(Guidance):
    """CFG rescale (Lin et al. 2023, §3.4), in a declared space (the paper's: v).

    ``g_r = g·std(P_ref)/std(g)``, ``out = φ·g_r + (1 − φ)·g`` with per-sample std; ``reference`` is
    the conditional prediction (the guided rule's pass-through).
    """

    guided: Guidance
    reference: Guidance
    phi: float
    space: str = "v"

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"unknown space {self.space!r}; expected one of {SPACES}")

    def children(self) -> tuple[Guidance, ...]:
        return (self.guided, self.reference)

    def passthrough(self) -> Guidance:
        return self.guided

    def apply(self, inputs: list[torch.Tensor], step: Step) -> torch.Tensor:
        g = to_space(inputs[0], step.x, step.sigma, self.space)
        ref = to_space(inputs[1], step.x, step.sigma, self.space)
        rescaled = g * _std(ref) / _std(g).clamp(min=1e-12)
        return from_space(self.phi * rescaled + (1 - self.phi) * g, step.x, step.sigma, self.space)


@dataclass(frozen=True)
class Threshold(Guidance):
    """Dynamic thresholding of x̂0 (Saharia et al. 2022, Imagen §2.3), space x0.

    ``s = clamp(quantile_p(|x̂0|), 1, max_value)`` per sample; ``x̂0 ← clip(x̂0, −s, s)/s``.
    """

    inner: Guidance
    percentile: float = 0.995
    max_value: float = 1.0e9

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
class _Plan:
    """What one window state needs: leaves per model, live rules in order, whether x needs grad."""

    leaves: dict[tuple[Denoiser, tuple[int, int, int, int] | None], list[int]]  # (model, area) → leaves
    rules: list[int]
    needs_grad: bool
    alias: dict[int, int]  # window id → the id of its live branch


@dataclass
class ForwardStats:
    """Counts of batched model forwards and of rows pushed through them (tests hold the promise)."""

    model_calls: int = 0
    rows: int = 0
    per_model: dict[str, int] = field(default_factory=dict)


class CompiledGuidance:
    """A GUIDANCE program ready to run as a denoiser ``(x, σ) → x̂0`` for one sampling run."""

    def __init__(
        self,
        root: Guidance,
        *,
        seeds: Sequence[int],
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        max_batch: int = 0,
    ):
        self.nodes: list[Guidance] = []
        self.children: list[tuple[int, ...]] = []
        ids: dict[Guidance, int] = {}
        self.root = self._collect(root, ids)
        self.device, self.dtype, self.max_batch = device, dtype, max_batch
        self.windows = [n for n in self.nodes if isinstance(n, Window)]
        self.conditions = {i: n.condition for i, n in enumerate(self.nodes) if isinstance(n, Prediction)}
        self.generators = [torch.Generator().manual_seed((int(s) ^ 0x5DEECE66D) % 2**64) for s in seeds]
        self.plans: dict[tuple[bool, ...], _Plan] = {}
        self.stats = ForwardStats()

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

    def _plan(self, sigma: float) -> _Plan:
        key = tuple(w.contains(sigma) for w in self.windows)
        if key in self.plans:
            return self.plans[key]
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
                alias[i] = self.children[i][0 if node.contains(sigma) else 1]
                stack.append(alias[i])
            else:
                stack.extend(self.children[i])
        leaves: dict[tuple[Denoiser, tuple[int, int, int, int] | None], list[int]] = {}
        rules: list[int] = []
        for i in sorted(live):  # post-order ids are a topological order
            node = self.nodes[i]
            if isinstance(node, Prediction):
                leaves.setdefault((node.model, node.area), []).append(i)
            elif not isinstance(node, Window):
                rules.append(i)
        needs_grad = any(self.nodes[i].grads_through_denoiser() for i in rules)
        self.plans[key] = plan = _Plan(leaves, rules, needs_grad, alias)
        return plan

    def _forward(
        self, model: Denoiser, leaf_ids: list[int], x: torch.Tensor, sigma: torch.Tensor
    ) -> list[torch.Tensor]:
        """All leaves of one model in one batched call (split in chunks only when ``max_batch`` says so)."""
        b, k = x.shape[0], len(leaf_ids)
        crops = [self._crop(x, self.nodes[i]) for i in leaf_ids]  # k × (B, C, h, w)
        xs = torch.cat(crops) if k > 1 else crops[0]  # (k·B, C, h, w)
        sigmas = sigma.repeat(k)  # (k·B,)
        conds = batch_conditions([self.conditions[i] for i in leaf_ids], b, x.device, self.dtype)
        rows = xs.shape[0]
        chunk = self.max_batch if 0 < self.max_batch < rows else rows
        outs = []
        for start in range(0, rows, chunk):
            part = slice(start, start + chunk)
            cond = {k: v[part] for k, v in conds.items()} if isinstance(conds, dict) else conds[part]
            outs.append(model(xs[part], sigmas[part], cond))
            self.stats.model_calls += 1
            self.stats.per_model[model.name] = self.stats.per_model.get(model.name, 0) + 1
        self.stats.rows += rows
        return list(torch.cat(outs).split(b))  # k × (B, C, H, W)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """One guided evaluation: x (B, C, H, W), σ (B,) → x̂0 (B, C, H, W)."""
        plan = self._plan(float(sigma.reshape(-1)[0]))
        values: dict[int, torch.Tensor] = {}
        with torch.set_grad_enabled(plan.needs_grad):
            x_in = x.detach().requires_grad_() if plan.needs_grad else x
            step = Step(
                x=x.detach(),
                sigma=sigma,
                generators=self.generators,
                x_grad=x_in if plan.needs_grad else None,
            )
            for (model, _), leaf_ids in plan.leaves.items():
                values.update(zip(leaf_ids, self._forward(model, leaf_ids, x_in, sigma), strict=True))
            for i in plan.rules:
                inputs = [values[self._resolve(c, plan)] for c in self.children[i]]
                values[i] = self.nodes[i].apply(inputs, step)
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
