"""The project's small networks and their safetensors I/O.

Images are (B, 3, 32, 32) in [-1, 1]. Architectures: :class:`ShapesUNet` (conditional ε-prediction
denoiser), :class:`NoisyClassifier` (σ-conditioned, for classifier guidance), :class:`ShapesCLIP`
(image/text embeddings, for CLIP-loss guidance) and :class:`Evaluator` (clean-image classifier used
only to score samples). Files are loaded with :func:`load_network`; pickles are refused.
"""

from __future__ import annotations

from families.base import UnsafeModelFileError
from families.shapes.networks.classifiers import Evaluator, NoisyClassifier
from families.shapes.networks.clip import ShapesCLIP
from families.shapes.networks.io import (
    ARCHITECTURES,
    LoadedNetwork,
    ModelMetadataError,
    build_network,
    load_network,
    read_metadata,
    save_network,
)
from families.shapes.networks.unet import ShapesUNet

__all__ = [
    "ARCHITECTURES",
    "Evaluator",
    "LoadedNetwork",
    "ModelMetadataError",
    "NoisyClassifier",
    "ShapesCLIP",
    "ShapesUNet",
    "UnsafeModelFileError",
    "build_network",
    "load_network",
    "read_metadata",
    "save_network",
]
