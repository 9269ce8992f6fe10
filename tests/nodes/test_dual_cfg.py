"""Dual (two-scale) CFG of InstructPix2Pix against its formula, on the exact Gaussian denoiser.

Three conditions stand in for (c_I, c_T), (c_I, ∅) and (∅, ∅); the rule is a Combine over the null,
so it composes like CFG and its three predictions share one batched forward.
"""

from __future__ import annotations

import pytest
import torch

from graph_runtime.api import Context
from nodes.comfy.custom_sampling import DualCFGGuider
from nodes.diffusion.guidance import Prediction, dual_cfg
from nodes.diffusion.program import CompiledGuidance
from nodes.rule_nodes import DualCFGCombine


def evaluate(program, x: torch.Tensor, sigma: float) -> tuple[torch.Tensor, CompiledGuidance]:
    compiled = CompiledGuidance(program, seeds=range(x.shape[0]), device=torch.device("cpu"))
    return compiled(x, torch.full((x.shape[0],), sigma)), compiled


@pytest.fixture
def setup(gaussian, cond):
    model = gaussian()
    conditions = (cond(model, "red green"), cond(model, "green"), cond(model, ""))  # (I,T), (I,∅), (∅,∅)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 3
    leaves = [evaluate(Prediction(model, c), x, 2.0)[0] for c in conditions]
    return model, conditions, x, leaves


@pytest.mark.parametrize(("s_i", "s_t"), [(1.5, 7.5), (2.0, 0.5), (0.0, 3.0)])
def test_dual_cfg_is_the_papers_three_term_formula_in_one_forward_of_three_rows(setup, s_i, s_t) -> None:
    model, conditions, x, (full, image, null) = setup
    model.network.calls.clear()
    got, compiled = evaluate(DualCFGCombine.run(Context(), model, *conditions, s_i, s_t)[0], x, 2.0)
    assert torch.allclose(got, null + s_i * (image - null) + s_t * (full - image), atol=1e-5)
    assert model.network.calls == [3 * x.shape[0]]  # one batched forward, three rows per sample
    assert compiled.stats.model_calls == 1


def test_comfyui_styles_regular_and_nested_follow_its_formulas(setup) -> None:
    model, (full, image, null), x, (d_full, d_image, d_null) = setup
    s1, s2 = 4.0, 1.5  # cfg_conds (text), cfg_cond2_negative (image)
    (regular,) = DualCFGGuider.run(Context(), model, full, image, null, s1, s2, "regular")
    (nested,) = DualCFGGuider.run(Context(), model, full, image, null, s1, s2, "nested")
    expected_regular = d_null + s2 * (d_image - d_null) + s1 * (d_full - d_image)
    expected_nested = d_null + s2 * (d_image + s1 * (d_full - d_image) - d_null)
    assert torch.allclose(evaluate(regular, x, 2.0)[0], expected_regular, atol=1e-5)
    assert torch.allclose(evaluate(nested, x, 2.0)[0], expected_nested, atol=1e-5)
    assert regular == DualCFGCombine.run(Context(), model, full, image, null, s2, s1)[0]  # one rule


def test_equal_scales_skip_the_image_only_prediction_and_scale_one_is_the_full_condition(setup) -> None:
    model, conditions, x, (full, _, null) = setup
    model.network.calls.clear()
    got, _ = evaluate(DualCFGCombine.run(Context(), model, *conditions, 3.0, 3.0)[0], x, 2.0)
    assert torch.allclose(got, null + 3.0 * (full - null), atol=1e-5)  # plain CFG against (∅, ∅)
    assert model.network.calls == [2 * x.shape[0]]
    program = dual_cfg(*(Prediction(model, c) for c in conditions), 1.0, 1.0, nested=False)
    assert program == Prediction(model, conditions[0])
