"""Rules beyond CFG against diffusers' guiders on the same inputs, and the per-run machinery they use:
momentum state, step-counted zero-init, step-fraction windows, schedules and CFG++ re-noising."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers.guiders import (
    AdaptiveProjectedGuidance,
    AutoGuidance,
    ClassifierFreeZeroStarGuidance,
    PerturbedAttentionGuidance,
    SkipLayerGuidance,
    SmoothedEnergyGuidance,
    TangentialClassifierFreeGuidance,
)
from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer, normalized_guidance

from nodes.diffusion.conventions import from_space, to_space
from nodes.diffusion.guidance import Difference, Prediction, Step, cfg, combine, step_window
from nodes.diffusion.program import CompiledGuidance
from nodes.diffusion.rules import AdaptiveProjected, Momentum, Renoise, Scheduled, Tangential, ZeroStar
from nodes.diffusion.sampling import guided_sample
from nodes.diffusion.schedules import sigmas_karras

CPU = torch.device("cpu")


def pair(seed: int = 0, shape: tuple[int, ...] = (2, 3, 8, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(shape, generator=g)
    return c, c * 0.7 + 0.4 * torch.randn(shape, generator=g)


def step_at(x: torch.Tensor, sigma: float, index: int = 0, state=None) -> Step:
    return Step(x, torch.full((x.shape[0],), sigma), [], None, index, index / 10, state)


@pytest.mark.parametrize("eta,momentum,r", [(0.0, -0.5, 3.0), (1.0, 0.0, 0.0), (0.4, 0.3, 50.0)])
def test_apg_matches_diffusers_original_formulation_at_scale_minus_one(eta, momentum, r) -> None:
    rule = AdaptiveProjected(None, None, 7.0, eta, momentum, r, "x0")  # type: ignore[arg-type]
    state, buffer = Momentum(), MomentumBuffer(momentum) if momentum else None
    x = torch.zeros(2, 3, 8, 8)
    for k in range(3):  # three steps: the momentum carries over
        c, u = pair(k)
        ours = rule.apply([c, u], step_at(x, 1.0, k, state))
        theirs = normalized_guidance(c, u, 6.0, buffer, eta, r, use_original_formulation=True)
        assert torch.allclose(ours, theirs, atol=1e-5)


def test_apg_default_diffusers_form_is_not_the_paper() -> None:
    """diffusers' default returns D_u + w·update; the paper D_c + (w − 1)·update (guidance-methods §1F.1)."""
    c, u = pair(3)
    guider = AdaptiveProjectedGuidance(guidance_scale=7.0, eta=0.0, adaptive_projected_guidance_rescale=0.0)
    guider.set_state(step=0, num_inference_steps=10, timestep=torch.tensor(500))
    ours = AdaptiveProjected(None, None, 7.0, 0.0, 0.0, 0.0, "x0").apply(  # type: ignore[arg-type]
        [c, u], step_at(torch.zeros_like(c), 1.0, 0, Momentum())
    )
    assert not torch.allclose(ours, guider.forward(c, u).pred, atol=1e-3)


def test_cfg_zero_star_matches_diffusers_in_eps_space_after_its_zero_init() -> None:
    x, sigma = torch.randn(2, 3, 8, 8), 1.5
    s = torch.full((2,), sigma)
    guider = ClassifierFreeZeroStarGuidance(guidance_scale=4.0, zero_init_steps=1)
    rule = ZeroStar(None, None, 4.0, 1, "eps")  # type: ignore[arg-type]
    for k in range(1, 4):
        dc, du = pair(10 + k)
        guider.set_state(step=k, num_inference_steps=10, timestep=torch.tensor(500))
        theirs = guider.forward(to_space(dc, x, s, "eps"), to_space(du, x, s, "eps")).pred
        ours = rule.apply([dc, du], step_at(x, sigma, k))
        assert torch.allclose(to_space(ours, x, s, "eps"), theirs, atol=1e-5)
    # zero-init: the paper's zero flow velocity (x0 = x_t), D = x/(1 + σ); diffusers zeroes ε (D = x)
    assert torch.allclose(rule.apply([dc, du], step_at(x, sigma, 0)), x / (1 + sigma))
    guider.set_state(step=0, num_inference_steps=10, timestep=torch.tensor(500))
    assert not guider.forward(to_space(dc, x, s, "eps"), to_space(du, x, s, "eps")).pred.any()


def test_tcfg_matches_diffusers_in_eps_space() -> None:
    x, s = torch.randn(2, 3, 8, 8), torch.full((2,), 0.8)
    dc, du = pair(20)
    guider = TangentialClassifierFreeGuidance(guidance_scale=5.0)
    guider.set_state(step=0, num_inference_steps=10, timestep=torch.tensor(500))
    theirs = guider.forward(to_space(dc, x, s, "eps"), to_space(du, x, s, "eps")).pred
    ours = Tangential(None, None, 5.0).apply([dc, du], step_at(x, 0.8))  # type: ignore[arg-type]
    assert torch.allclose(to_space(ours, x, s, "eps"), theirs, atol=1e-4)


@pytest.mark.parametrize(
    "guider",
    [
        PerturbedAttentionGuidance(
            guidance_scale=5.0,
            perturbed_guidance_scale=3.0,
            perturbed_guidance_start=0.0,
            perturbed_guidance_stop=1.0,
            perturbed_guidance_layers=[0],
        ),
        SkipLayerGuidance(
            guidance_scale=5.0,
            skip_layer_guidance_scale=3.0,
            skip_layer_guidance_start=0.0,
            skip_layer_guidance_stop=1.0,
            skip_layer_guidance_layers=[0],
        ),
        SmoothedEnergyGuidance(
            guidance_scale=5.0,
            seg_guidance_scale=3.0,
            seg_guidance_start=0.0,
            seg_guidance_stop=1.0,
            seg_guidance_layers=[0],
        ),
    ],
)
def test_perturbed_terms_on_cfg_match_diffusers_combine(gaussian, cond, guider) -> None:
    m = gaussian()
    c, u, p = (Prediction(m, cond(m, w)) for w in ("red", "", "blue"))  # p stands in for the perturbed c
    x = torch.randn(2, 3, 8, 8)
    compiled = CompiledGuidance(Difference(cfg(c, u, 5.0), c, p, 3.0), seeds=[0, 1], device=CPU)
    ours = compiled(x, torch.full((2,), 2.0))
    dc, du, dp = (CompiledGuidance(q, seeds=[0, 1], device=CPU)(x, torch.full((2,), 2.0)) for q in (c, u, p))
    guider.set_state(step=1, num_inference_steps=10, timestep=torch.tensor(500))
    assert torch.allclose(ours, guider.forward(dc, du, dp).pred, atol=1e-5)
    assert compiled.stats.model_calls == 1 and m.network.calls[0] == 6  # three leaves, one forward


def test_autoguidance_is_diffusers_combine_with_the_weak_prediction_as_base(gaussian, cond) -> None:
    good, weak = gaussian(std=0.5), gaussian(std=0.3)
    c = cond(good, "red")
    program = combine(Prediction(weak, c), [(Prediction(good, c), 2.5)])
    x, s = torch.randn(2, 3, 8, 8), torch.full((2,), 1.0)
    compiled = CompiledGuidance(program, seeds=[0, 1], device=CPU)
    ours = compiled(x, s)
    d_good = CompiledGuidance(Prediction(good, c), seeds=[0, 1], device=CPU)(x, s)
    d_weak = CompiledGuidance(Prediction(weak, c), seeds=[0, 1], device=CPU)(x, s)
    guider = AutoGuidance(guidance_scale=2.5, auto_guidance_layers=[0], dropout=1.0)
    guider.set_state(step=0, num_inference_steps=10, timestep=torch.tensor(500))
    assert torch.allclose(ours, guider.forward(d_good, d_weak).pred, atol=1e-5)
    assert compiled.stats.per_model == {"fake": 2}  # two networks: one forward each


def test_step_fraction_window_guides_exactly_the_steps_diffusers_would(gaussian, cond) -> None:
    m = gaussian()
    c, u = Prediction(m, cond(m, "red")), Prediction(m, cond(m, ""))
    program = step_window(cfg(c, u, 4.0), 0.25, 0.6)
    sigmas = sigmas_karras(10, 0.1, 10.0)
    guided_sample(program, torch.zeros(1, 3, 8, 8), [0], sigmas, "euler", device=CPU)
    guided_steps = [i for i, rows in enumerate(m.network.calls) if rows == 2]
    assert guided_steps == [i for i in range(10) if int(0.25 * 10) <= i < int(0.6 * 10)]


def test_schedule_scales_cfg_by_the_run_progress(gaussian, cond) -> None:
    m = gaussian()
    c, u = Prediction(m, cond(m, "red")), Prediction(m, cond(m, ""))
    sigmas = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.0])
    rule = Scheduled(cfg(c, u, 5.0), c, "cosine_increasing")
    compiled = CompiledGuidance(rule, seeds=[0], device=CPU, sigmas=sigmas)
    x = torch.randn(1, 3, 8, 8)
    for i, sigma in enumerate(sigmas[:-1].tolist()):
        w = 1 + (1 - math.cos(math.pi * i / 4)) * (5.0 - 1)
        expected = CompiledGuidance(cfg(c, u, w), seeds=[0], device=CPU)(x, torch.full((1,), sigma))
        assert torch.allclose(compiled(x, torch.full((1,), sigma)), expected, atol=1e-5)
    with pytest.raises(ValueError, match="schedule"):
        CompiledGuidance(rule, seeds=[0], device=CPU)(x, torch.full((1,), 2.0))


def test_cfg_plus_plus_renoises_with_the_unconditional_prediction(gaussian, cond) -> None:
    m = gaussian()
    c, u = Prediction(m, cond(m, "red")), Prediction(m, cond(m, ""))
    sigmas = torch.tensor([3.0, 1.0, 0.0])
    out, _ = guided_sample(
        Renoise(cfg(c, u, 0.6), u), torch.zeros(1, 3, 8, 8), [5], sigmas, "ddim", device=CPU
    )
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(5)) * 3.0  # the start
    for s, s_next in ((3.0, 1.0), (1.0, 0.0)):
        at = torch.full((1,), s)
        d_guided = CompiledGuidance(cfg(c, u, 0.6), seeds=[5], device=CPU)(x, at)
        d_u = CompiledGuidance(u, seeds=[5], device=CPU)(x, at)
        x = d_guided + s_next * (x - d_u) / s
    assert torch.allclose(out, x, atol=1e-5)
    plain, _ = guided_sample(cfg(c, u, 0.6), torch.zeros(1, 3, 8, 8), [5], sigmas, "ddim", device=CPU)
    assert not torch.allclose(out, plain, atol=1e-3)
    with pytest.raises(ValueError, match="CFG\\+\\+"):
        guided_sample(Renoise(cfg(c, u, 0.6), u), torch.zeros(1, 3, 8, 8), [5], sigmas, "heun", device=CPU)


def test_apg_momentum_state_starts_fresh_each_sampling_run(gaussian, cond) -> None:
    m = gaussian()
    c, u = Prediction(m, cond(m, "red")), Prediction(m, cond(m, ""))
    rule = AdaptiveProjected(c, u, 6.0, 0.0, -0.5, 0.0, "x0")
    sigmas = sigmas_karras(6, 0.1, 10.0)
    runs = [
        guided_sample(rule, torch.zeros(1, 3, 8, 8), [1], sigmas, "euler", device=CPU)[0] for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1]) and hash(rule) == hash(
        AdaptiveProjected(c, u, 6.0, 0.0, -0.5, 0.0, "x0")
    )
    no_momentum, _ = guided_sample(
        AdaptiveProjected(c, u, 6.0, 0.0, 0.0, 0.0, "x0"),
        torch.zeros(1, 3, 8, 8),
        [1],
        sigmas,
        "euler",
        device=CPU,
    )
    assert not torch.allclose(runs[0], no_momentum)


def test_cfg_zero_star_zero_init_has_zero_flow_velocity_for_its_steps(gaussian, cond) -> None:
    m = gaussian()
    c, u = Prediction(m, cond(m, "red")), Prediction(m, cond(m, ""))
    sigmas = torch.tensor([6.0, 3.0, 1.0, 0.0])
    seen = []
    guided_sample(
        ZeroStar(c, u, 4.0, 2, "eps"),
        torch.zeros(1, 3, 8, 8),
        [2],
        sigmas,
        "euler",
        device=CPU,
        callback=lambda i, x, s, d: seen.append(torch.allclose(d, x / (1 + s))),
    )
    assert seen == [True, True, False]
    with pytest.raises(ValueError, match="multistep sampler 'dpmpp_2m'"):
        guided_sample(
            ZeroStar(c, u, 4.0, 2, "eps"), torch.zeros(1, 3, 8, 8), [2], sigmas, "dpmpp_2m", device=CPU
        )


def test_eps_space_rules_round_trip_through_x0() -> None:
    x, s = torch.randn(2, 3, 4, 4), torch.full((2,), 0.7)
    d = torch.randn(2, 3, 4, 4)
    assert torch.allclose(from_space(to_space(d, x, s, "eps"), x, s, "eps"), d, atol=1e-6)
