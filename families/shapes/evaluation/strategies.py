"""The eval's strategies are the shipped workflows, so the table measures what a user runs.

A strategy names a workflow in ``workflows/``, the input that carries its scale, and fixed changes
(a variant such as uncapped CLIP guidance). For each requested class the prompt inputs get the
class's caption and the classifier label its name. Values are set by node class and input name, never
by id or wiring, so the workflows may be rewritten freely. The GUIDANCE program is then built by the
graph runtime, exactly as ``guidegraph run`` builds it: the output of the node feeding the
workflow's Sampler.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from families.shapes.data.shapes import caption_for, class_name
from graph_runtime import Executor
from nodes.diffusion.conventions import Denoiser
from nodes.diffusion.guidance import Guidance

WORKFLOWS = Path(__file__).resolve().parents[3] / "workflows"
PROMPT_INPUTS = (("Condition", "text"), ("ClipLoss", "prompt"))
LABEL_INPUTS = (("ClassifierGrad", "label"), ("UniversalGuidance", "label"))
FILE_INPUTS = {"denoiser": ("Model", "checkpoint"), "weak_denoiser": ("Model", "checkpoint")}
FILE_INPUTS |= {"classifier": ("ClassifierLoader", "classifier"), "clip": ("ClipLoader", "clip")}
FILE_INPUTS |= {"evaluator": ("ImageClassifierLoader", "network")}


@dataclass(frozen=True)
class Strategy:
    """A shipped workflow with its scale input; ``fixed``: (class, input, value) set besides."""

    workflow: str
    scale: tuple[str, str]
    description: str
    fixed: tuple[tuple[str, str, Any], ...] = ()


STRATEGIES: dict[str, Strategy] = {
    "none": Strategy("cfg", ("CFGCombine", "scale"), "the cfg workflow at w = 0: the unconditional model"),
    "cfg": Strategy("cfg", ("CFGCombine", "scale"), "classifier-free guidance u + w·(c − u)"),
    "apg": Strategy("apg", ("APG", "scale"), "APG, x0 space, η = 0, β = −0.5, r = 15"),
    "cfg_zero_star": Strategy(
        "cfg_zero_star", ("CFGZeroStar", "scale"), "CFG-Zero*, ε space, zero-init for 1 step"
    ),
    "cfg_pp": Strategy("cfg_pp", ("CFGPlusPlus", "scale"), "CFG++: x̂0 at λ, re-noised with u (scale = λ)"),
    "cfg_rescale": Strategy(
        "cfg_rescale", ("CFGCombine", "scale"), "CFG rescaled to the conditional std, φ = 0.7, v space"
    ),
    "cfg_interval": Strategy(
        "cfg_interval", ("CFGCombine", "scale"), "CFG on steps 25–75% only, c elsewhere"
    ),
    "cfg_schedule": Strategy(
        "cfg_schedule", ("CFGCombine", "scale"), "CFG with w rising linearly over the run (mean w)"
    ),
    "tcfg": Strategy("tcfg", ("TangentialCFG", "scale"), "tangential-damping CFG, ε space"),
    "pag": Strategy("pag", ("PAG", "scale"), "CFG at w = 3 plus PAG on the mid-block attention (scale = s)"),
    "autoguidance": Strategy(
        "autoguidance",
        ("Autoguidance", "scale"),
        "autoguidance alone, c_weak + w·(c − c_weak), weak model shapes_unet_small (CFG term at w = 1)",
        (("CFGCombine", "scale", 1.0),),
    ),
    "autoguidance_cfg": Strategy(
        "autoguidance",
        ("Autoguidance", "scale"),
        "autoguidance plus the workflow's CFG at w_cfg = 2: c + (w − 1)·(c − c_weak) + (w_cfg − 1)·(c − u)",
    ),
    "sag": Strategy(
        "sag",
        ("SAG", "scale"),
        "CFG at w = 3 plus SAG on u, mid-block map, blur σ 1 (scale = s)",
    ),
    "classifier": Strategy(
        "classifier", ("ClassifierGrad", "scale"), "unconditional model + noise-aware classifier gradient"
    ),
    "clip": Strategy(
        "clip",
        ("ClipLoss", "scale"),
        "unconditional model + CLIP loss through the denoiser, x̂0 shift capped at 1",
    ),
    "clip_uncapped": Strategy(
        "clip",
        ("ClipLoss", "scale"),
        "as clip without the cap (shift_clamp 0): the classic recipe",
        (("ClipLoss", "shift_clamp", 0.0),),
    ),
    "cfg_classifier": Strategy(
        "cfg_classifier", ("ClassifierGrad", "scale"), "CFG at w = 2 plus the classifier gradient"
    ),
    "universal": Strategy(
        "universal_guidance",
        ("UniversalGuidance", "backward_lr"),
        "unconditional model + universal backward guidance by the evaluator (5 steps, x̂0 clamped), "
        "self-recurrence k = 4 (scale = step size)",
    ),
    "universal_k1": Strategy(
        "universal_guidance",
        ("UniversalGuidance", "backward_lr"),
        "as universal with recurrence k = 1 (scale = step size)",
        (("Sampler", "recurrence", 1),),
    ),
    "universal_forward": Strategy(
        "universal_guidance",
        ("UniversalGuidance", "scale"),
        "as universal with forward guidance instead of backward (through the denoiser, no backward steps)",
        (("UniversalGuidance", "backward_steps", 0),),
    ),
}


def load_workflow(name: str) -> dict[str, Any]:
    prompt: dict[str, Any] = json.loads((WORKFLOWS / f"{name}.api.json").read_text(encoding="utf-8"))
    return prompt


def set_inputs(prompt: dict[str, Any], class_type: str, name: str, value: Any) -> int:
    """Set input ``name`` of every node of ``class_type``; returns how many were set."""
    nodes = [n for n in prompt.values() if n["class_type"] == class_type and name in n["inputs"]]
    for node in nodes:
        node["inputs"][name] = value
    return len(nodes)


def strategy_prompt(strategy: Strategy, scale: float, label: int, files: dict[str, str]) -> dict[str, Any]:
    """The workflow of ``strategy`` with its scale, fixed values, class and model files set."""
    prompt = load_workflow(strategy.workflow)
    if not set_inputs(prompt, *strategy.scale, scale):
        raise ValueError(
            f"workflow {strategy.workflow!r} has no {strategy.scale[0]} with input {strategy.scale[1]!r}"
        )
    for class_type, name, value in strategy.fixed:
        set_inputs(prompt, class_type, name, value)
    for class_type, name in PROMPT_INPUTS:
        set_inputs(prompt, class_type, name, caption_for(label))
    for class_type, name in LABEL_INPUTS:
        set_inputs(prompt, class_type, name, class_name(label))
    swap_files(prompt, files)
    return prompt


def swap_files(prompt: dict[str, Any], files: dict[str, str]) -> None:
    """Point every loader that names a shipped file (``DEFAULT_FILES``) at the file chosen for its key,
    all at once, so the denoiser and the weak denoiser of one workflow each get their own."""
    from families.shapes.evaluation.cli import DEFAULT_FILES

    swaps: dict[tuple[str, str], dict[str, str]] = {}
    for key, file_name in files.items():
        swaps.setdefault(FILE_INPUTS[key], {})[Path(DEFAULT_FILES[key]).name] = file_name
    for node in prompt.values():
        for (class_type, name), by_name in swaps.items():
            if node["class_type"] == class_type and node["inputs"].get(name) in by_name:
                node["inputs"][name] = by_name[node["inputs"][name]]


def sampler_inputs(prompt: dict[str, Any], workflow: str) -> dict[str, Any]:
    """The inputs of the workflow's one Sampler."""
    samplers = [n for n in prompt.values() if n["class_type"] == "Sampler"]
    if len(samplers) != 1:
        raise ValueError(f"workflow {workflow!r} has {len(samplers)} Samplers; the eval needs exactly one")
    inputs: dict[str, Any] = samplers[0]["inputs"]
    return inputs


def recurrence(strategy: Strategy) -> int:
    """The self-recurrence k of the workflow's Sampler (1 when it has none), fixed values applied."""
    prompt = load_workflow(strategy.workflow)
    for class_type, name, value in strategy.fixed:
        set_inputs(prompt, class_type, name, value)
    return int(sampler_inputs(prompt, strategy.workflow).get("recurrence", 1))


def build_program(
    executor: Executor, strategy: Strategy, scale: float, label: int, files: dict[str, str]
) -> tuple[Guidance, Denoiser | None]:
    """The GUIDANCE program the workflow builds for one class, through the graph runtime, and the
    model its Sampler names as ``schedule_model`` (None when it names none)."""
    prompt = strategy_prompt(strategy, scale, label, files)
    sampler = sampler_inputs(prompt, strategy.workflow)
    links = {"guidance": sampler["guidance"], "schedule_model": sampler.get("schedule_model")}
    targets = {name: (str(link[0]), int(link[1])) for name, link in links.items() if link is not None}
    result = executor.run(prompt, outputs=sorted({node for node, _ in targets.values()}))
    if result.failures:
        failure = next(iter(result.failures.values()))
        where = f"workflow {strategy.workflow!r}, node {failure.node_id} ({failure.class_type})"
        raise ValueError(f"{where}: {failure.message}")
    values = {name: result.outputs[node][index] for name, (node, index) in targets.items()}
    return values["guidance"], values.get("schedule_model")
