"""GUIDANCE programs: formula identities per rule, forward counts per step, determinism, autograd locality."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from nodes.diffusion.conventions import Denoiser, from_space, to_space
from nodes.diffusion.gradients import (
    ClassifierGradient,
    ClipGradient,
    UniversalGradient,
    clip_logit_scale,
    contrastive_clip_loss,
    make_cutouts,
    spherical_distance,
)
from nodes.diffusion.guidance import Guidance, Prediction, cfg, combine, window
from nodes.diffusion.program import CompiledGuidance
from nodes.diffusion.rules import Rescale, Threshold
from nodes.diffusion.sampling import guided_sample
from nodes.diffusion.schedules import sigmas_karras
from nodes.diffusion.types import Classifier, Clip, Conditioning, ImageClassifier
from tests.nodes.conftest import mixture_logits

CondFn = Callable[[Denoiser, str], Conditioning]
CPU = torch.device("cpu")


def run(program, x: torch.Tensor, sigma: float, seeds=None) -> tuple[torch.Tensor, CompiledGuidance]:
    compiled = CompiledGuidance(program, seeds=seeds or range(x.shape[0]), device=CPU)
    return compiled(x, torch.full((x.shape[0],), sigma)), compiled


def clip_term(inner: Guidance, clip: Clip, text: Conditioning, scale: float, **options) -> ClipGradient:
    """A CLIP term with every option off unless given: whole image, detached x̂0, no clamps."""
    plain = {"cutouts": 0, "augment": False, "through_denoiser": False, "grad_clamp": 0.0, "vae": None}
    plain |= {"contrast": (), "logit_scale": 100.0, "shift_clamp": 0.0, "decode_scale": 1.0}
    return ClipGradient(inner, clip, text, scale, **(plain | options))


def rows(model: Denoiser) -> list[int]:
    return model.network.calls


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 3


def test_cfg_scale_one_is_the_conditional_in_one_pass(gaussian, cond: CondFn, x) -> None:
    m = gaussian()
    c, u = Prediction(m, cond(m, "red")), Prediction(m, cond(m, ""))
    out, _ = run(cfg(c, u, 1.0), x, 2.0)
    assert rows(m) == [2]
    assert torch.equal(out, run(c, x, 2.0)[0])


def test_cfg_scale_zero_is_the_unconditional_not_the_conditional(gaussian, cond: CondFn, x) -> None:
    m = gaussian()
    c, u = Prediction(m, cond(m, "red")), Prediction(m, cond(m, ""))
    out, _ = run(cfg(c, u, 0.0), x, 2.0)
    assert torch.equal(out, run(u, x, 2.0)[0])
    assert not torch.allclose(out, run(c, x, 2.0)[0])


def test_cfg_follows_its_formula_with_one_batched_forward(gaussian, cond: CondFn, x) -> None:
    m = gaussian()
    c, u = Prediction(m, cond(m, "red")), Prediction(m, cond(m, "blue"))  # blue as a negative prompt
    out, compiled = run(cfg(c, u, 4.5), x, 2.0)
    dc, du = run(c, x, 2.0)[0], run(u, x, 2.0)[0]
    assert torch.allclose(out, du + 4.5 * (dc - du), atol=1e-5)
    assert compiled.stats.model_calls == 1 and rows(m)[0] == 4


@pytest.mark.parametrize("space", ["eps", "v"])
def test_affine_rules_give_the_same_result_in_every_space(gaussian, cond: CondFn, x, space: str) -> None:
    m = gaussian()
    preds = [Prediction(m, cond(m, p)) for p in ("", "red", "green", "blue")]
    program = combine(preds[0], [(preds[1], 3.0), (preds[2], 1.5), (preds[3], -2.0)])
    sigma = torch.full((2,), 1.7)
    out, _ = run(program, x, 1.7)
    u, *cs = (to_space(run(p, x, 1.7)[0], x, sigma, space) for p in preds)
    mixed = u + 3.0 * (cs[0] - u) + 1.5 * (cs[1] - u) - 2.0 * (cs[2] - u)
    assert torch.allclose(from_space(mixed, x, sigma, space), out, atol=1e-4)


def test_identical_leaves_are_evaluated_once(gaussian, cond: CondFn, x) -> None:
    m = gaussian()
    a, b = Prediction(m, cond(m, "red")), Prediction(m, cond(m, "red"))  # equal by content, distinct objects
    program = combine(Prediction(m, cond(m, "")), [(a, 2.0), (b, 1.0)])
    run(program, x, 2.0)
    assert rows(m) == [4]  # red once, null once


def test_zero_gradient_leaves_the_prediction_unchanged(gaussian, cond: CondFn, x) -> None:
    m = gaussian()
    flat = Classifier(torch.nn.Module(), ("a", "b"))
    flat.module.forward = lambda x, s: torch.zeros(x.shape[0], 2) + 0 * x.sum()
    base = Prediction(m, cond(m, "red"))
    assert torch.equal(run(ClassifierGradient(base, flat, 0, 10.0), x, 2.0)[0], run(base, x, 2.0)[0])


def test_window_outside_is_pass_through_and_costs_one_pass(gaussian, cond: CondFn, x) -> None:
    m = gaussian()
    c, u = Prediction(m, cond(m, "red")), Prediction(m, cond(m, ""))
    program = window(cfg(c, u, 5.0), sigma_hi=3.0, sigma_lo=1.0)
    inside, compiled = run(program, x, 2.0)
    outside = compiled(x, torch.full((2,), 8.0))
    assert rows(m) == [4, 2]
    assert torch.allclose(inside, run(cfg(c, u, 5.0), x, 2.0)[0])
    assert torch.equal(outside, run(c, x, 8.0)[0])


def test_window_passes_through_gradient_rules_without_calling_the_classifier(mixture, x) -> None:
    model, clf = mixture
    base = Prediction(model, Conditioning.of(torch.zeros(4), "null"))
    out, _ = run(window(ClassifierGradient(base, clf, 1, 3.0), 1.0, 0.5), x, 5.0)
    assert clf.module.calls == 0 and torch.equal(out, run(base, x, 5.0)[0])


def test_cfg_composable_and_classifier_take_one_model_call_and_one_classifier_call(mixture, x) -> None:
    model, clf = mixture
    emb = [Conditioning.of(torch.eye(4)[i], f"c{i}") for i in range(4)]
    null = Prediction(model, Conditioning.of(torch.zeros(4), "null"))
    neg = Prediction(model, emb[3])
    mix = combine(null, [(Prediction(model, emb[i]), w) for i, w in enumerate((2.0, 1.0, -0.5))])
    program = ClassifierGradient(cfg(mix, neg, 3.0), clf, 1, 2.0)
    _, compiled = run(program, x, 2.0)
    assert compiled.stats.model_calls == 1 and model.network.calls == [2 * 5]
    assert clf.module.calls == 1


def test_max_batch_splits_one_forward_into_chunks(gaussian, cond: CondFn, x) -> None:
    m = gaussian()
    program = cfg(Prediction(m, cond(m, "red")), Prediction(m, cond(m, "")), 3.0)
    full = run(program, x, 2.0)[0]
    compiled = CompiledGuidance(program, seeds=[0, 1], device=CPU, max_batch=3)
    assert torch.allclose(compiled(x, torch.full((2,), 2.0)), full) and rows(m)[1:] == [3, 1]


def test_rescale_phi_zero_is_identity_and_phi_one_matches_the_reference_std(
    gaussian, cond: CondFn, x
) -> None:
    m = gaussian()
    c, u = Prediction(m, cond(m, "red")), Prediction(m, cond(m, ""))
    guided, sigma = cfg(c, u, 7.0), torch.full((2,), 2.0)
    assert torch.allclose(run(Rescale(guided, c, 0.0, "v"), x, 2.0)[0], run(guided, x, 2.0)[0], atol=1e-6)
    out = to_space(run(Rescale(guided, c, 1.0, "v"), x, 2.0)[0], x, sigma, "v")
    ref = to_space(run(c, x, 2.0)[0], x, sigma, "v")
    assert torch.allclose(out.flatten(1).std(1), ref.flatten(1).std(1), rtol=1e-4)
    with pytest.raises(ValueError, match="space"):
        Rescale(guided, c, 0.5, "flow")


def test_dynamic_threshold_bounds_x0_to_unit_range(gaussian, cond: CondFn, x) -> None:
    m = gaussian(offset=3.0)
    out, _ = run(Threshold(Prediction(m, cond(m, "red")), 0.9, 1e9), x, 0.5)
    assert float(out.abs().max()) <= 1.0 + 1e-6


def test_classifier_gradient_moves_mixture_samples_to_the_requested_component(mixture) -> None:
    model, clf = mixture
    null = Prediction(model, Conditioning.of(torch.zeros(4), "null"))
    start = torch.zeros(16, 1, 4, 4)
    sigmas = sigmas_karras(20, model.sigma_min, 20.0)
    for label, mean in ((0, -1.0), (1, 1.0)):
        out, _ = guided_sample(
            ClassifierGradient(null, clf, label, 1.0), start, range(16), sigmas, "euler", device=CPU
        )
        per_sample = out.flatten(1).mean(1)
        assert bool((per_sample * mean > 0.5).all()), per_sample
    free, _ = guided_sample(null, start, range(16), sigmas, "euler", device=CPU)
    signs = free.flatten(1).mean(1).sign()
    assert 0 < int((signs > 0).sum()) < 16  # unguided: both components occur


def test_gradient_rules_work_inside_a_sampler_that_runs_without_grad(mixture, clip: Clip) -> None:
    model, clf = mixture
    null = Prediction(model, Conditioning.of(torch.zeros(4), "null"))
    text = Conditioning.of(clip.module.encode_text(["red"])[0], "clip 'red'")
    program = clip_term(
        ClassifierGradient(null, clf, 1, 1.0), clip, text, 200.0, cutouts=4, through_denoiser=True
    )
    start = torch.zeros(2, 3, 8, 8)
    with torch.no_grad():
        guided, _ = guided_sample(program, start, [3, 4], sigmas_karras(8, 0.05, 10.0), "euler", device=CPU)
        plain, _ = guided_sample(
            program.inner, start, [3, 4], sigmas_karras(8, 0.05, 10.0), "euler", device=CPU
        )
    red_gain = guided[:, 0].mean() - plain[:, 0].mean()
    assert float(red_gain) > 0.05 and not guided.requires_grad


@pytest.mark.parametrize("through", [False, True])
def test_clip_gradient_with_clamp_caps_its_rms(gaussian, cond: CondFn, clip: Clip, x, through: bool) -> None:
    m = gaussian()
    base = Prediction(m, cond(m, ""))
    text = Conditioning.of(clip.module.encode_text(["red"])[0], "clip 'red'")
    sigma = 2.0
    free = run(clip_term(base, clip, text, 1.0, through_denoiser=through), x, sigma)[0]
    capped = run(clip_term(base, clip, text, 1.0, through_denoiser=through, grad_clamp=1e-4), x, sigma)[0]
    plain = run(base, x, sigma)[0]
    rms = ((capped - plain) / sigma**2).flatten(1).pow(2).mean(1).sqrt()
    assert torch.allclose(rms, torch.full_like(rms, 1e-4), rtol=1e-3)
    assert not torch.allclose(free, plain)


def test_cutouts_are_seeded_per_sample() -> None:
    images = torch.randn(3, 3, 8, 8)
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    batch = make_cutouts(images, 5, gens([1, 2, 3]), augment=True)
    alone = make_cutouts(images[2:], 5, gens([3]), augment=True)
    assert torch.allclose(batch[10:], alone, atol=1e-6)


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_sde", "heun"])
def test_a_sample_does_not_depend_on_its_position_in_the_batch(
    gaussian, cond: CondFn, clip: Clip, sampler: str
) -> None:
    m = gaussian()
    text = Conditioning.of(clip.module.encode_text(["red"])[0], "clip 'red'")
    program = clip_term(
        cfg(Prediction(m, cond(m, "red")), Prediction(m, cond(m, "")), 3.0), clip, text, 5.0, cutouts=3
    )
    sigmas = sigmas_karras(6, m.sigma_min, 10.0)
    batch, _ = guided_sample(program, torch.zeros(3, 3, 8, 8), [10, 11, 12], sigmas, sampler, device=CPU)
    alone, _ = guided_sample(program, torch.zeros(1, 3, 8, 8), [12], sigmas, sampler, device=CPU)
    assert torch.allclose(batch[2:], alone, atol=1e-5)


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def test_contrastive_clip_loss_is_the_zero_shot_cross_entropy_on_the_target() -> None:
    image, texts = unit(torch.randn(5, 8)), unit(torch.randn(4, 8))
    expected = torch.nn.functional.cross_entropy(
        20.0 * image @ texts.T, torch.zeros(5, dtype=torch.long), reduction="none"
    )
    assert torch.allclose(contrastive_clip_loss(image, texts, 20.0), expected, atol=1e-6)


def test_contrastive_gradient_fades_once_the_target_dominates_where_the_distance_keeps_pulling() -> None:
    texts = torch.eye(4)  # target e0 against e1, e2, e3

    def grad_norms(image: torch.Tensor) -> tuple[float, float]:
        image = image.clone().requires_grad_()
        (g_ce,) = torch.autograd.grad(contrastive_clip_loss(unit(image), texts, 20.0).sum(), image)
        (g_sph,) = torch.autograd.grad(spherical_distance(unit(image), texts[:1]).sum(), image)
        return float(g_ce.norm()), float(g_sph.norm())

    undecided_ce, _ = grad_norms(torch.tensor([[0.5, 0.5, 0.5, 0.5]]))
    classified_ce, classified_sph = grad_norms(torch.tensor([[0.8, 0.3, 0.3, 0.3]]))
    assert undecided_ce > 1.0 and classified_ce < 1e-3 * undecided_ce
    assert classified_sph > 0.3  # the spherical distance still pulls toward e0 itself


def test_clip_gradient_with_contrast_fades_when_the_sample_is_already_the_target(
    gaussian, cond: CondFn, clip: Clip
) -> None:
    m = gaussian()
    base = Prediction(m, cond(m, ""))
    texts = clip.module.encode_text(["red", "green", "blue"])
    red, others = (
        Conditioning.of(texts[0], "red"),
        tuple(Conditioning.of(t, c) for t, c in zip(texts[1:], ("green", "blue"), strict=True)),
    )
    x = torch.zeros(2, 3, 8, 8)
    x[:, 0] = 3.0  # very red: D(x) keeps it red at σ = 0.5
    plain = run(base, x, 0.5)[0]
    contrast = run(clip_term(base, clip, red, 1.0, contrast=others, logit_scale=100.0), x, 0.5)[0]
    distance = run(clip_term(base, clip, red, 1.0), x, 0.5)[0]
    assert (contrast - plain).abs().max() < 1e-4 < (distance - plain).abs().max()


def test_clip_gradient_shift_clamp_caps_the_rms_of_the_x0_shift(
    gaussian, cond: CondFn, clip: Clip, x
) -> None:
    m = gaussian()
    base = Prediction(m, cond(m, ""))
    text = Conditioning.of(clip.module.encode_text(["red"])[0], "clip 'red'")
    plain = run(base, x, 3.0)[0]
    capped = run(clip_term(base, clip, text, 1e4, shift_clamp=0.1), x, 3.0)[0]
    rms = (capped - plain).flatten(1).pow(2).mean(1).sqrt()
    assert torch.allclose(rms, torch.full_like(rms, 0.1), rtol=1e-4)


def test_contrastive_clip_guidance_steers_a_sample_toward_its_prompt(mixture, clip: Clip) -> None:
    model, _ = mixture
    null = Prediction(model, Conditioning.of(torch.zeros(4), "null"))
    texts = clip.module.encode_text(["red", "green", "blue"])
    conds = [Conditioning.of(t, c) for t, c in zip(texts, ("red", "green", "blue"), strict=True)]
    sigmas, start, seeds = sigmas_karras(8, 0.05, 10.0), torch.zeros(4, 3, 8, 8), [1, 2, 3, 4]
    plain, _ = guided_sample(null, start, seeds, sigmas, "euler", device=CPU)
    for k, channel_name in enumerate(("red", "green", "blue")):
        rule = clip_term(
            null,
            clip,
            conds[k],
            3.0,
            through_denoiser=True,
            contrast=tuple(conds[:k] + conds[k + 1 :]),
            logit_scale=10.0,
            shift_clamp=1.0,
        )
        out, _ = guided_sample(rule, start, seeds, sigmas, "euler", device=CPU)
        gain = out.mean(dim=(2, 3)) - plain.mean(dim=(2, 3))  # (B, C)
        assert bool((gain.argmax(dim=1) == k).all()), (channel_name, gain)


def test_clip_logit_scale_reads_the_module_or_falls_back_to_openai_cap(clip: Clip) -> None:
    from families.shapes.networks import ShapesCLIP

    assert clip_logit_scale(clip) == 100.0
    assert abs(clip_logit_scale(Clip(ShapesCLIP(channels=[8, 8, 8, 8], embed_dim=8))) - 10.0) < 1e-4


class CleanMixtureClassifier(torch.nn.Module):
    """The exact posterior of the mixture's components given a clean x0: logits −‖x0 − μ_k‖²/(2s²)."""

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return mixture_logits(x0, torch.zeros(x0.shape[0]), (-1.0, 1.0), 0.3)


@pytest.mark.parametrize(("scale", "backward_steps", "lr"), [(0.02, 0, 0.0), (0.0, 5, 0.05)])
def test_universal_guidance_moves_mixture_samples_to_the_requested_component(
    mixture, scale: float, backward_steps: int, lr: float
) -> None:
    model, _ = mixture
    judge = ImageClassifier(CleanMixtureClassifier(), ("low", "high"), "clean")
    null = Prediction(model, Conditioning.of(torch.zeros(4), "null"))
    sigmas, start = sigmas_karras(20, model.sigma_min, 20.0), torch.zeros(16, 1, 4, 4)
    for label, mean in ((0, -1.0), (1, 1.0)):
        rule = UniversalGradient(null, judge, label, scale, backward_steps, lr)
        out, _ = guided_sample(rule, start, range(16), sigmas, "euler", device=CPU)
        assert bool((out.flatten(1).mean(1) * mean > 0.25).all())  # every seed on the requested side


class ChannelMeans(torch.nn.Module):
    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return 4 * x0.mean(dim=(2, 3))  # (B, 3): one class per colour channel


def test_universal_backward_guidance_lowers_the_loss_without_the_denoiser(gaussian, cond: CondFn, x) -> None:
    m = gaussian()
    base = Prediction(m, cond(m, "red"))
    judge = ImageClassifier(ChannelMeans(), ("red", "green", "blue"), "channel means")
    rule = UniversalGradient(base, judge, 1, 0.0, 4, 0.5)  # steer towards green
    plain, guided = run(base, x, 2.0)[0], run(rule, x, 2.0)
    assert rule.loss(guided[0]) < rule.loss(plain) - 0.1 and not rule.grads_through_denoiser()
    assert rows(m) == [2, 2]  # one forward each; the backward steps never call the model
