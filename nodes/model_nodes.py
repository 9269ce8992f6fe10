"""Loaders (checkpoint, VAE, classifier, CLIP) and conditions: thin nodes over ``families``.

Node declarations import no torch and no family at module level: a declaration is cheap to list and
validate; the networks load when a node runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from graph_runtime.api import Combo, Context, FolderFiles, Footprint, Int, Node, Output, Socket, String
from nodes.diffusion.memory import checkpoint_cost

if TYPE_CHECKING:
    from families.base import Checkpoint
    from nodes.diffusion.types import Classifier, Clip, Conditioning, TextEncoder

# Pickles are listed too, so that picking one gives the loader's clear refusal rather than a bare
# "not among the options". A diffusers folder is listed by its folder name.
MODEL_FILES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
WEIGHT_DTYPES = ("auto", "float32", "float16", "bfloat16")


def load_options(ctx: Context, weight_dtype: str = "auto", prediction: str = "auto") -> Any:
    """LoadOptions for this run: the run's device; float16 on CUDA and float32 elsewhere unless asked."""
    import torch

    from families.base import LoadOptions

    if weight_dtype == "auto":
        dtype = torch.float16 if ctx.device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, weight_dtype)
    return LoadOptions(device=ctx.device, dtype=dtype, prediction=prediction)


def _shapes_network(kind: str, name: str, expected: str, ctx: Context) -> tuple[Any, dict[str, Any]]:
    """Load a shapes-family network of ``kind`` (safetensors only) and check its declared kind."""
    from families.shapes.networks.io import load_network
    from graph_runtime.folders import resolve_file

    loaded = load_network(resolve_file(kind, name), device=ctx.device)
    if loaded.kind != expected:
        raise ValueError(
            f"{name}: its metadata says kind {loaded.kind!r}, but this loader needs {expected!r}"
        )
    return loaded.module, loaded.metadata


class Model(Node):
    """Load a checkpoint → MODEL, CLIP (its text encoder) and VAE.

    Stable Diffusion 1.x / 2.x / SDXL single-file checkpoints (the original LDM layout) and diffusers
    folders, detected from their keys and shapes, and the project's own shapes models. MODEL is the
    network as a σ-space denoiser D(x, σ, cond) → x̂0 with its noise schedule and parametrization;
    ``prediction`` overrides what keys cannot tell (SD 2.x 768-v vs 512 base). Weights load once per
    file and are shared by every node that names it; pickles (.ckpt, .pt, .bin) are refused.
    """

    display_name = "Load Model"
    category = "guidegraph/loaders"
    inputs = (
        Combo(
            name="checkpoint",
            options=FolderFiles("checkpoints", MODEL_FILES, "model_index.json"),
            tooltip="a checkpoint in the checkpoints folder: a safetensors file or a diffusers folder",
        ),
        Combo(
            name="prediction",
            options=("auto", "eps", "v"),
            default="auto",
            tooltip="what the network predicts; 'auto' reads it from the file (SD 2.x: see the docs)",
        ),
        Combo(
            name="weight_dtype",
            options=WEIGHT_DTYPES,
            default="auto",
            tooltip="the weights' precision (auto: the device's default)",
        ),
    )
    outputs = (Output("MODEL", "MODEL"), Output("CLIP", "CLIP"), Output("VAE", "VAE"))

    @staticmethod
    def run(ctx: Context, checkpoint: str, prediction: str, weight_dtype: str) -> tuple[Any, Any, Any]:
        from families import load_checkpoint
        from graph_runtime.folders import resolve_file

        loaded: Checkpoint = load_checkpoint(
            resolve_file("checkpoints", checkpoint), load_options(ctx, weight_dtype, prediction)
        )
        return (loaded.model, loaded.clip, loaded.vae)

    @staticmethod
    def footprint(inputs: Mapping[str, Any]) -> Footprint:
        """MODEL's latent space and network cost, read from the file's header when it is one we know."""
        # None for a missing file, a folder or an unknown architecture
        return Footprint(outputs=(checkpoint_cost(str(inputs.get("checkpoint"))), None, None))


class VAELoader(Node):
    """Load a VAE file from ``models/vae`` (LDM or diffusers keys, safetensors only) → VAE."""

    display_name = "Load VAE"
    category = "guidegraph/loaders"
    inputs = (
        Combo(
            name="vae_name",
            options=FolderFiles("vae", MODEL_FILES),
            tooltip="a VAE in the vae folder (safetensors)",
        ),
    )
    outputs = (Output("VAE", "VAE"),)

    @staticmethod
    def run(ctx: Context, vae_name: str) -> tuple[Any]:
        from families.sd.model import load_vae_file
        from graph_runtime.folders import resolve_file

        return (load_vae_file(resolve_file("vae", vae_name), load_options(ctx)),)


class ClassifierLoader(Node):
    """Load a noise-aware classifier p(y | x, σ) (safetensors; metadata kind 'noisy_classifier').

    It takes x in the sampler's σ-space coordinates, in whatever space the model samples (pixels, or
    a VAE's latents): its input must match the latents it guides.
    """

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
        from nodes.diffusion.types import Classifier

        module, metadata = _shapes_network("classifiers", classifier, "noisy_classifier", ctx)
        labels = tuple(str(n) for n in (metadata.get("labels") or getattr(module, "labels", None) or ()))
        return (Classifier(module, labels, classifier),)


class ClipLoader(Node):
    """Load an image-text CLIP model (safetensors) → CLIP_MODEL, for CLIP-loss guidance.

    The project's shapes CLIP, or a CLIP in the transformers or open_clip layout (ViT-B/32, ViT-L/14
    configurations ship with guidegraph).
    """

    display_name = "Load CLIP"
    category = "guidegraph/loaders"
    inputs = (
        Combo(
            name="clip",
            options=FolderFiles("clip", MODEL_FILES),
            tooltip="an image-text model in the clip folder (safetensors)",
        ),
    )
    outputs = (Output("CLIP_MODEL", "CLIP_MODEL"),)

    @staticmethod
    def run(ctx: Context, clip: str) -> tuple[Clip]:
        from families.clip import load_clip_model
        from graph_runtime.folders import resolve_file

        return (load_clip_model(resolve_file("clip", clip), load_options(ctx), name=clip),)


class Condition(Node):
    """A prompt or a class label → CONDITIONING, through the model's text encoder (CLIP).

    'prompt' encodes the text: for Stable Diffusion through CLIP (SD 2.x from the penultimate layer,
    as trained; SDXL through both encoders, with the pooled embedding); prompts longer than 75
    tokens are encoded in chunks of 75 and concatenated, as ComfyUI does. ``clip_skip`` drops that
    many more final layers. 'class label' takes one of a class-conditional model's class names.
    """

    category = "guidegraph/conditioning"
    inputs = (
        Socket(name="clip", type="CLIP", tooltip="the text encoder (the CLIP output of Load Model)"),
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
        Int(
            name="clip_skip",
            default=0,
            min=0,
            max=22,
            optional=True,
            tooltip="drop this many more final layers of the text encoder (0: as the model was trained)",
        ),
    )
    outputs = (Output("CONDITIONING", "CONDITIONING"),)

    @staticmethod
    def run(ctx: Context, clip: TextEncoder, text: str, kind: str, clip_skip: int = 0) -> tuple[Conditioning]:
        from nodes.diffusion.types import label_index

        if kind == "class label":
            return (clip.encode_label(label_index(text, clip.labels, clip.name)),)
        return (clip.encode_text(text, clip_skip),)


class NullCondition(Node):
    """The unconditional condition, saying what 'unconditional' means for this model.

    'empty prompt' encodes "" (the learned null embedding of models trained with condition dropout,
    SD 1.x/2.x); 'zeroed embedding' is all zeros, pooled embedding included (SDXL's
    force_zeros_for_empty_prompt, ComfyUI's ConditioningZeroOut); 'null class' is the extra class
    index of class-conditional models that have one (k-diffusion's num_classes).
    """

    category = "guidegraph/conditioning"
    inputs = (
        Socket(name="clip", type="CLIP", tooltip="the text encoder whose unconditional condition to make"),
        Combo(
            name="meaning",
            options=("empty prompt", "zeroed embedding", "null class"),
            default="empty prompt",
            tooltip="what unconditional means here: empty prompt, all-zero embedding or null class",
        ),
    )
    outputs = (Output("CONDITIONING", "CONDITIONING"),)

    @staticmethod
    def run(ctx: Context, clip: TextEncoder, meaning: str) -> tuple[Conditioning]:
        import torch

        empty = clip.encode_text("")
        if meaning == "empty prompt":
            return (empty.with_tensors("null: empty prompt"),)
        if meaning == "zeroed embedding":
            zeros = {k: torch.zeros_like(v) for k, v in empty.extras if k != "time_ids"}
            return (
                empty.with_tensors(
                    "null: zeroed embedding", embedding=torch.zeros_like(empty.embedding), **zeros
                ),
            )
        if clip.null_label is None:
            raise ValueError(
                f"{clip.name}: this model has no null class; its unconditional condition is the "
                "empty prompt (choose meaning 'empty prompt')"
            )
        return (clip.encode_label(clip.null_label).with_tensors("null: null class"),)


NODES: list[type[Node]] = [Model, VAELoader, ClassifierLoader, ClipLoader, Condition, NullCondition]
