"""Loaders (denoiser, classifier, CLIP) and conditions: thin nodes over ``nodes.networks.io``."""

from __future__ import annotations

from typing import Any

import torch

from graph_runtime.api import Combo, Context, FolderFiles, Node, Output, Socket, String
from graph_runtime.folders import resolve_file
from nodes.diffusion.conventions import Denoiser, denoiser_from_metadata
from nodes.diffusion.types import Classifier, Clip, Conditioning, label_index

# Pickles are listed too, so that picking one gives the loader's clear refusal rather than a bare
# "not among the options".
MODEL_FILES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def _load(kind: str, name: str, expected: str, ctx: Context) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load ``name`` from the ``kind`` folders (safetensors only) and check its declared kind."""
    from nodes.networks.io import load_network  # the models package; imported when a loader runs

    loaded = load_network(resolve_file(kind, name), device=ctx.device)
    if loaded.kind != expected:
        raise ValueError(
            f"{name}: its metadata says kind {loaded.kind!r}, but this loader needs {expected!r}"
        )
    return loaded.module, loaded.metadata


class Model(Node):
    """Load a denoiser from a safetensors file; its header says architecture, parametrization and schedule.

    The network is wrapped as a σ-space denoiser D(x, σ, cond) → x̂0 (eps / v / x0 prediction over a
    discrete VP schedule, or EDM). Pickled checkpoints (.ckpt, .pt, .bin) are refused.
    """

    display_name = "Load Model"
    category = "guidegraph/loaders"
    inputs = (
        Combo(
            name="checkpoint",
            options=FolderFiles("checkpoints", MODEL_FILES),
            tooltip="a denoiser in the checkpoints folder (safetensors; pickles are refused)",
        ),
    )
    outputs = (Output("MODEL", "MODEL"),)

    @staticmethod
    def run(ctx: Context, checkpoint: str) -> tuple[Denoiser]:
        module, metadata = _load("checkpoints", checkpoint, "denoiser", ctx)
        return (denoiser_from_metadata(module, metadata, name=checkpoint),)


class ClassifierLoader(Node):
    """Load a noise-aware classifier p(y | x, σ) (safetensors; metadata kind 'noisy_classifier')."""

    display_name = "Load Classifier"
    category = "guidegraph/loaders"
    inputs = (
        Combo(
            name="classifier",
            options=FolderFiles("classifiers", MODEL_FILES),
            tooltip="a noise-aware classifier in the classifiers folder (safetensors)",
        ),
    )
    outputs = (Output("CLASSIFIER", "CLASSIFIER"),)

    @staticmethod
    def run(ctx: Context, classifier: str) -> tuple[Classifier]:
        module, metadata = _load("classifiers", classifier, "noisy_classifier", ctx)
        labels = tuple(str(n) for n in (metadata.get("labels") or getattr(module, "labels", None) or ()))
        return (Classifier(module, labels, classifier),)


class ClipLoader(Node):
    """Load an image-text model (safetensors; metadata kind 'clip') for CLIP-loss guidance."""

    display_name = "Load CLIP"
    category = "guidegraph/loaders"
    inputs = (
        Combo(
            name="clip",
            options=FolderFiles("clip", MODEL_FILES),
            tooltip="an image-text model in the clip folder (safetensors)",
        ),
    )
    outputs = (Output("CLIP", "CLIP"),)

    @staticmethod
    def run(ctx: Context, clip: str) -> tuple[Clip]:
        module, _ = _load("clip", clip, "clip", ctx)
        return (Clip(module, clip),)


class Condition(Node):
    """A prompt or a class label → CONDITIONING, through the model's own encoder.

    'prompt' encodes the text ("a red circle"; partial prompts such as "circle" work); 'class label'
    takes one of the model's class names (or its index) and uses the label embedding.
    """

    category = "guidegraph/conditioning"
    inputs = (
        Socket(name="model", type="MODEL", tooltip="the model whose encoder turns the text into a condition"),
        String(
            name="text",
            default="a red circle",
            multiline=True,
            tooltip="a prompt, or a class name (or index) when kind is 'class label'",
        ),
        Combo(
            name="kind",
            options=("prompt", "class label"),
            default="prompt",
            tooltip="'prompt' encodes the text; 'class label' uses the model's label embedding",
        ),
    )
    outputs = (Output("CONDITIONING", "CONDITIONING"),)

    @staticmethod
    def run(ctx: Context, model: Denoiser, text: str, kind: str) -> tuple[Conditioning]:
        with torch.no_grad():
            if kind == "class label":
                index = label_index(text, model.labels, model.name)
                labels = torch.tensor([index], device=ctx.device)
                meaning = f"class {index} {model.labels[index]!r}"
                return (Conditioning.of(model.encode_labels(labels)[0], meaning),)
            return (Conditioning.of(model.encode_prompts([text])[0], f"prompt {text!r}"),)


class NullCondition(Node):
    """The unconditional condition, saying what 'unconditional' means for this model.

    'empty prompt' encodes "" (the learned null embedding of models trained with condition dropout);
    'zeroed embedding' is an all-zero embedding (SDXL's force_zeros_for_empty_prompt, ComfyUI's
    ConditioningZeroOut); 'null class' is the extra class index of class-conditional models that
    have one (k-diffusion's num_classes).
    """

    category = "guidegraph/conditioning"
    inputs = (
        Socket(name="model", type="MODEL", tooltip="the model whose unconditional condition to make"),
        Combo(
            name="meaning",
            options=("empty prompt", "zeroed embedding", "null class"),
            default="empty prompt",
            tooltip="what unconditional means here: empty prompt, all-zero embedding or null class",
        ),
    )
    outputs = (Output("CONDITIONING", "CONDITIONING"),)

    @staticmethod
    def run(ctx: Context, model: Denoiser, meaning: str) -> tuple[Conditioning]:
        with torch.no_grad():
            empty = model.encode_prompts([""])[0]
            if meaning == "empty prompt":
                return (Conditioning.of(empty, "null: empty prompt"),)
            if meaning == "zeroed embedding":
                return (Conditioning.of(torch.zeros_like(empty), "null: zeroed embedding"),)
            null_label = getattr(model.network, "null_label", None)
            if null_label is None:
                raise ValueError(
                    f"{model.name}: this model has no null class; its unconditional condition is the "
                    "empty prompt (choose meaning 'empty prompt')"
                )
            labels = torch.tensor([int(null_label)], device=ctx.device)
            return (Conditioning.of(model.encode_labels(labels)[0], "null: null class"),)


NODES: list[type[Node]] = [Model, ClassifierLoader, ClipLoader, Condition, NullCondition]
