"""The rule contract (``Guidance``'s docstring), checked over every rule class.

For each rule of ``nodes.diffusion`` (RegionMix included; leaves, first- and second-phase, are not
rules): it is registered here (a new rule without a case fails), it declares a known space,
``children()`` lists its GUIDANCE fields in declaration order, ``apply`` reads its inputs in that
order (its output equals the formula evaluated by field name), its neutral setting equals its
pass-through, and its per-run state starts fresh at every compile.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

import nodes.diffusion.gradients as gradients
import nodes.diffusion.guidance as guidance
import nodes.diffusion.regions as regions
import nodes.diffusion.rules as rules
from nodes.diffusion.conventions import SPACES, from_space, to_space
from nodes.diffusion.guidance import Guidance, Prediction, SecondPhaseLeaf
from nodes.diffusion.program import CompiledGuidance
from nodes.diffusion.types import Classifier, Clip, Conditioning, ImageClassifier

CPU = torch.device("cpu")
SIGMAS = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5, 0.0])
Values = dict[str, torch.Tensor]


def all_rules() -> list[type[Guidance]]:
    found, stack = [], list(Guidance.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        leaf = issubclass(cls, Prediction | SecondPhaseLeaf)
        if not leaf and cls.__module__.startswith("nodes.diffusion."):
            found.append(cls)
    return sorted(found, key=lambda c: c.__name__)


def eps(v: torch.Tensor, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return to_space(v, x, s, "eps")


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1).reshape(-1, 1, 1, 1)


def apg_formula(v: Values, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    c, d = v["cond"], v["cond"] - v["uncond"]  # first step: momentum adds nothing
    d = d * torch.clamp(2.0 / dot(d, d).sqrt(), max=1.0)
    par = dot(d, c) / dot(c, c) * c
    return c + (6.0 - 1) * ((d - par) + 0.3 * par)


def zero_star_formula(v: Values, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    c, u = eps(v["cond"], x, s), eps(v["uncond"], x, s)
    a = dot(c, u) / dot(u, u)
    return from_space(a * u + 4.0 * (c - a * u), x, s, "eps")


def perp_neg_formula(v: Values, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    p, n, u = (eps(v[k], x, s) for k in ("positive", "negative", "null"))
    dp, dn = p - u, n - u
    return from_space(u + 4.0 * (dp - 0.7 * (dn - dot(dn, dp) / dot(dp, dp) * dp)), x, s, "eps")


def tangential_formula(v: Values, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    c, u = eps(v["cond"], x, s), eps(v["uncond"], x, s)
    out = []
    for cb, ub in zip(c, u, strict=True):
        _, _, vh = torch.linalg.svd(torch.stack([cb.flatten(), ub.flatten()]).double())
        ut = (ub.flatten().double() @ vh[0]) * vh[0]
        out.append(ut.reshape(ub.shape).float() + 4.0 * (cb - ut.reshape(ub.shape).float()))
    return from_space(torch.stack(out), x, s, "eps")


def rescale_formula(v: Values, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    g, ref = (to_space(v[k], x, s, "v") for k in ("guided", "reference"))
    std = lambda t: t.flatten(1).std(1).reshape(-1, 1, 1, 1)  # noqa: E731
    return from_space(0.5 * g * std(ref) / std(g) + 0.5 * g, x, s, "v")


def threshold_formula(v: Values, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    x0 = v["inner"]
    q = torch.quantile(x0.flatten(1).abs(), 0.9, dim=1).clamp(1.0, 2.0).reshape(-1, 1, 1, 1)
    return x0.clamp(-q, q) / q


def flat_classifier() -> Classifier:
    module = torch.nn.Module()
    module.forward = lambda x, s: torch.zeros(x.shape[0], 2) + 0 * x.sum()  # type: ignore[method-assign]
    return Classifier(module, ("a", "b"))


FLAT = flat_classifier()


class _ChannelMeans(torch.nn.Module):
    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return 4 * x0.mean(dim=(2, 3))  # (B, 3): one class per channel


CHANNELS = ImageClassifier(_ChannelMeans(), ("red", "green", "blue"), "channel means")

# name → (build(leaves, neutral), formula or None); leaves are the predictions c, u, n
Case = tuple[Callable[[list[Guidance], bool], Any], Callable[[Values, Any, Any], torch.Tensor] | None]
CASES: dict[str, Case] = {
    "Combine": (
        lambda p, neutral: guidance.Combine(
            p[1], ((p[0], 1.0 if neutral else 3.0), (p[2], 0.0 if neutral else -0.5))
        ),
        None,
    ),
    "Difference": (
        lambda p, neutral: guidance.Difference(p[0], p[1], p[2], 0.0 if neutral else 2.0),
        lambda v, x, s: v["inner"] + 2.0 * (v["plus"] - v["minus"]),
    ),
    "Window": (
        lambda p, neutral: guidance.Window(guidance.cfg(p[0], p[1], 3.0), p[0], 1e9 if neutral else 0.0, 1e9),
        None,
    ),
    "Rescale": (
        lambda p, neutral: rules.Rescale(guidance.cfg(p[0], p[1], 5.0), p[0], 0.0 if neutral else 0.5, "v"),
        rescale_formula,
    ),
    # no neutral setting: only a prediction already inside [−1, 1] passes unchanged
    "Threshold": (lambda p, neutral: None if neutral else rules.Threshold(p[0], 0.9, 2.0), threshold_formula),
    "AdaptiveProjected": (
        lambda p, neutral: rules.AdaptiveProjected(p[0], p[1], 1.0 if neutral else 6.0, 0.3, -0.5, 2.0, "x0"),
        apg_formula,
    ),
    "ZeroStar": (
        lambda p, neutral: rules.ZeroStar(p[0], p[1], 1.0 if neutral else 4.0, 0, "eps"),
        zero_star_formula,
    ),
    "PerpNeg": (
        lambda p, neutral: (
            rules.PerpNeg(p[0], p[2], p[1], 1.0, 0.0)
            if neutral
            else rules.PerpNeg(p[0], p[2], p[1], 4.0, 0.7)
        ),
        perp_neg_formula,
    ),
    "Tangential": (
        lambda p, neutral: rules.Tangential(p[0], p[1], 1.0 if neutral else 4.0),
        tangential_formula,
    ),
    "Scheduled": (
        lambda p, neutral: rules.Scheduled(
            guidance.cfg(p[0], p[1], 1.0 if neutral else 3.0), p[0], "linear_decreasing"
        ),
        lambda v, x, s: (
            v["reference"] + 2 * (1 - 2 / 5) * (v["guided"] - v["reference"])
        ),  # σ = 2: step 2 of 5
    ),
    "Renoise": (lambda p, neutral: rules.Renoise(p[0], p[1]), lambda v, x, s: v["guided"]),
    "ClassifierGradient": (
        lambda p, neutral: gradients.ClassifierGradient(p[0], FLAT, 0, 0.0 if neutral else 3.0),
        None,
    ),
    "RegionMix": (  # full-image entries: the strength-weighted mean; its own pass-through
        lambda p, neutral: regions.RegionMix(
            (p[0], p[1]), (1.0, 1.0 if neutral else 3.0), ((0.0, math.inf), (0.0, math.inf))
        ),
        None,
    ),
    "UniversalGradient": (
        lambda p, neutral: gradients.UniversalGradient(
            p[0], CHANNELS, 0, 0.0 if neutral else 2.0, 0 if neutral else 3, 0.2
        ),
        None,
    ),
    "ClipGradient": (
        lambda p, neutral: gradients.ClipGradient(
            p[0], CLIP, TEXT, 0.0 if neutral else 50.0, 0, False, False, 0.0, (), 100.0, 0.0, None, 1.0
        ),
        None,
    ),
}


class _Clip(torch.nn.Module):
    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.cat([x.mean(dim=(2, 3)), torch.ones_like(x[:, :1, 0, 0])], dim=1)
        return f / f.norm(dim=1, keepdim=True)


CLIP = Clip(_Clip(), "clip")
TEXT = Conditioning.of(torch.tensor([1.0, 0.0, 0.0, 0.3]) / 1.044, "red")


def test_every_rule_has_a_contract_case() -> None:
    assert sorted(c.__name__ for c in all_rules()) == sorted(CASES)


@pytest.fixture
def leaves(gaussian, cond) -> list[Guidance]:
    m = gaussian()
    return [Prediction(m, cond(m, w)) for w in ("red", "", "blue")]


def evaluate(program: Guidance, x: torch.Tensor, sigma: float) -> torch.Tensor:
    compiled = CompiledGuidance(program, seeds=range(x.shape[0]), device=CPU, sigmas=SIGMAS)
    return compiled(x, torch.full((x.shape[0],), sigma))


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_keeps_the_contract(name: str, leaves: list[Guidance]) -> None:
    build, formula = CASES[name]
    rule, neutral = build(leaves, False), build(leaves, True)
    assert rule.space in ("affine", "gradient", *SPACES)  # a field where the space is an input
    assert rule == build(leaves, False) and hash(rule) == hash(build(leaves, False))  # frozen, by content
    fields = [f.name for f in dataclasses.fields(rule) if isinstance(getattr(rule, f.name), Guidance)]
    if name not in ("Combine", "RegionMix"):  # their inputs are tuples (terms, leaves)
        assert rule.children() == tuple(getattr(rule, f) for f in fields)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2
    sigma = 2.0
    out = evaluate(rule, x, sigma)
    if formula is not None:
        values = {f: evaluate(getattr(rule, f), x, sigma) for f in fields}
        expected = formula(values, x, torch.full((2,), sigma))
        assert torch.allclose(out, expected, atol=1e-4), (out - expected).abs().max()
        assert not torch.allclose(out, evaluate(rule.passthrough(), x, sigma), atol=1e-4) or name == "Renoise"
    if neutral is not None:
        assert torch.allclose(
            evaluate(neutral, x, sigma), evaluate(neutral.passthrough(), x, sigma), atol=1e-5
        )


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_state_is_fresh_for_every_compiled_run(name: str, leaves: list[Guidance]) -> None:
    rule = CASES[name][0](leaves, False)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    firsts = []
    for _ in range(2):
        compiled = CompiledGuidance(rule, seeds=[0, 1], device=CPU, sigmas=SIGMAS)
        firsts.append(compiled(x, torch.full((2,), 4.0)))
        compiled(x, torch.full((2,), 2.0))  # a second step mutates any state
    assert torch.equal(firsts[0], firsts[1])
