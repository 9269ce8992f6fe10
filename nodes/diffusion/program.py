"""A compiled GUIDANCE program: the per-step executor behind a Sampler's denoiser.

:class:`CompiledGuidance` turns the immutable program (:mod:`nodes.diffusion.guidance`) into a
denoiser ``(x, σ) → x̂0`` for one sampling run: it plans, per window state, which leaves are live,
batches all leaves of one model into ONE forward (and second-phase leaves into one more), runs the
rules in order and owns the run's per-rule state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from nodes.diffusion.conventions import Denoiser
from nodes.diffusion.guidance import Guidance, Prediction, SecondPhaseLeaf, Step, Window
from nodes.diffusion.perturbation import AttentionHook, Perturbation, perturbed, row_plan
from nodes.diffusion.types import batch_conditions


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
