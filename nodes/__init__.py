"""guidegraph's built-in node library, registered through the ``guidegraph.nodes`` entry point.

Each node module lists its classes in ``NODES``; this pack is their concatenation (no registration by
import side effects). Math lives in ``nodes.diffusion`` (pure torch); networks live in ``families``.
"""

from __future__ import annotations

from pathlib import Path

from graph_runtime.api import Node, NodePack

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
MODEL_KINDS = ("checkpoints", "vae", "loras", "classifiers", "clip", "evaluators")


def node_classes() -> list[type[Node]]:
    """Every built-in node class, module by module."""
    from nodes import (
        batch_nodes,
        composition_nodes,
        guidance_nodes,
        image_nodes,
        model_nodes,
        rule_nodes,
        sampling_nodes,
        universal_nodes,
    )
    from nodes.comfy import conditioning, core, custom_sampling, latent, model_patches

    return [
        *model_nodes.NODES,
        *guidance_nodes.NODES,
        *rule_nodes.NODES,
        *composition_nodes.NODES,
        *universal_nodes.NODES,
        *sampling_nodes.NODES,
        *image_nodes.NODES,
        *batch_nodes.NODES,
        *core.NODES,
        *conditioning.NODES,
        *custom_sampling.NODES,
        *latent.NODES,
        *model_patches.NODES,
    ]


def node_pack() -> NodePack:
    """The built-in nodes and the folders they read (``models/<kind>/``; ``input/`` for LoadImage)."""
    folders = {kind: [MODELS_DIR / kind] for kind in MODEL_KINDS}
    folders["input"] = [Path("input").resolve()]
    return NodePack(name="guidegraph", nodes=node_classes(), model_folders=folders)
