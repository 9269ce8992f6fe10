"""The procedural shapes dataset: reproducible from a seed, labels agree with captions and pixels."""

from __future__ import annotations

import torch

from families.shapes.data import (
    CLASS_NAMES,
    COLOURS,
    SHAPES,
    ShapesDataset,
    caption_for,
    class_index,
    class_name,
    class_parts,
    label_multi_hot,
    prompt_words,
    random_prompt_multi_hot,
    random_prompts,
)


def test_has_sixteen_or_more_classes_named_colour_then_shape() -> None:
    assert len(CLASS_NAMES) >= 16
    assert CLASS_NAMES[0] == "red circle"
    for k, name in enumerate(CLASS_NAMES):
        shape, colour = class_parts(k)
        assert name == f"{colour} {shape}" == class_name(k)
        assert class_index(shape, colour) == k


def test_same_seed_same_batch_and_other_seed_other_batch() -> None:
    a = ShapesDataset(seed=3).batch(5, 16)
    b = ShapesDataset(seed=3).batch(5, 16)
    c = ShapesDataset(seed=4).batch(5, 16)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (16, 3, 32, 32)
    assert a.images.min() >= -1 and a.images.max() <= 1


def test_captions_name_the_label() -> None:
    batch = ShapesDataset(seed=0).batch(0, 64)
    for label, caption in zip(batch.labels.tolist(), batch.captions, strict=True):
        shape, colour = class_parts(label)
        assert caption == f"a {colour} {shape}" == caption_for(label)
        assert prompt_words(caption) == [colour, shape]


def test_the_shape_is_painted_in_its_colour() -> None:
    # the pixel farthest from the background's grey is the shape's colour: its dominant channel agrees
    batch = ShapesDataset(seed=1).batch(0, 64)
    rgb = (batch.images + 1) / 2  # (B, 3, H, W)
    saturation = rgb.amax(1) - rgb.amin(1)  # (B, H, W)
    idx = saturation.flatten(1).argmax(1)
    pixel = rgb.flatten(2)[torch.arange(64), :, idx]  # (B, 3)
    for (r, g, b), label in zip(pixel.tolist(), batch.labels.tolist(), strict=True):
        colour = class_parts(label)[1]
        expected = {"red": r > g and r > b, "green": g > r and g > b, "blue": b > r and b > g}
        assert expected.get(colour, r > b and g > b), (colour, r, g, b)


def test_labels_can_be_requested() -> None:
    labels = torch.tensor([class_index("cross", "blue")] * 4)
    batch = ShapesDataset(seed=0).batch(0, 4, labels=labels)
    assert batch.captions == ["a blue cross"] * 4


def test_prompt_variety_covers_null_partial_and_full() -> None:
    labels = torch.randint(0, len(CLASS_NAMES), (400,), generator=torch.Generator().manual_seed(0))
    prompts = random_prompts(labels, torch.Generator().manual_seed(1))
    kinds = {len(prompt_words(p)) for p in prompts}
    assert kinds == {0, 1, 2}
    assert 0.05 < sum(p == "" for p in prompts) / 400 < 0.15
    words = random_prompt_multi_hot(labels, torch.Generator().manual_seed(1), 0.1, 0.15, 0.15)
    assert (words <= label_multi_hot(labels)).all()  # only the label's own words
    counts = words[:, : len(COLOURS)].sum(1) + words[:, len(COLOURS) :].sum(1)
    assert set(counts.tolist()) == {0.0, 1.0, 2.0}
    assert len(SHAPES) * len(COLOURS) == len(CLASS_NAMES)
