"""guidegraph's built-in node library, registered through the ``guidegraph.nodes`` entry point."""

from __future__ import annotations

from pathlib import Path

from graph_runtime.api import NodePack

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def node_pack() -> NodePack:
    """The built-in nodes and the model folders they read (``models/<kind>/``)."""
    node_classes: list = []  # filled in as node modules land
    folders = {kind: [MODELS_DIR / kind] for kind in ("checkpoints", "classifiers", "clip", "evaluators")}
    return NodePack(name="guidegraph", nodes=node_classes, model_folders=folders)
