"""Procedural data: pictures of coloured shapes with labels and captions, made by code from a seed.

Conventions: images are (B, 3, 32, 32) float tensors in [-1, 1]; a class is "<colour> <shape>" with
index ``shape_index * len(COLOURS) + colour_index``; captions are built from the class words.
"""

from __future__ import annotations

from families.shapes.data.shapes import (
    CLASS_NAMES,
    COLOURS,
    IMAGE_SIZE,
    SHAPES,
    VOCAB,
    ShapesBatch,
    ShapesDataset,
    caption_for,
    class_index,
    class_name,
    class_parts,
    label_multi_hot,
    prompt_words,
    random_prompt_multi_hot,
    random_prompts,
    render_shapes,
    sample_shape_params,
)

__all__ = [
    "CLASS_NAMES",
    "COLOURS",
    "IMAGE_SIZE",
    "SHAPES",
    "VOCAB",
    "ShapesBatch",
    "ShapesDataset",
    "caption_for",
    "class_index",
    "class_name",
    "class_parts",
    "label_multi_hot",
    "prompt_words",
    "random_prompt_multi_hot",
    "random_prompts",
    "render_shapes",
    "sample_shape_params",
]
