"""ComfyUI's conditioning nodes: combine, average, concatenate, areas, timestep ranges, zero-out.

A CONDITIONING value is one :class:`Conditioning` or a :class:`ConditioningSet` of entries (each
with a strength, an optional area and a schedule range); every guidance node takes either
(:func:`nodes.diffusion.regions.predict` turns a set into a per-pixel mix of predictions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graph_runtime.api import Context, Float, Int, Node, Output, Socket

if TYPE_CHECKING:
    from nodes.diffusion.regions import ConditioningSet
    from nodes.diffusion.types import Conditioning

MAX_RESOLUTION = 16384
CONDITIONING_OUT = (Output("CONDITIONING", "CONDITIONING"),)


def _map(value: Any, change: Any) -> Any:
    """Apply ``change(entry) -> entry`` to every entry, keeping a single condition single."""
    from nodes.diffusion.regions import ConditioningSet, entries_of

    entries = tuple(change(e) for e in entries_of(value))
    if len(entries) == 1 and not isinstance(value, ConditioningSet):
        return entries[0].condition
    return ConditioningSet(entries)


def _first(value: Any) -> Conditioning:
    from nodes.diffusion.regions import entries_of

    return entries_of(value)[0].condition


class ConditioningCombine(Node):
    """Use both conditionings: their predictions are averaged (per pixel, by strength and area)."""

    display_name = "Conditioning (Combine)"
    category = "conditioning"
    inputs = (
        Socket(name="conditioning_1", type="CONDITIONING", tooltip="the first condition set"),
        Socket(
            name="conditioning_2",
            type="CONDITIONING",
            tooltip="the second, run beside the first and averaged by the sampler",
        ),
    )
    outputs = CONDITIONING_OUT

    @staticmethod
    def run(ctx: Context, conditioning_1: Any, conditioning_2: Any) -> tuple[ConditioningSet]:
        from nodes.diffusion.regions import ConditioningSet, entries_of

        return (ConditioningSet(entries_of(conditioning_1) + entries_of(conditioning_2)),)


class ConditioningAverage(Node):
    """Interpolate token embeddings (and pooled outputs): ``s·to + (1 − s)·from``; ``from``'s tokens
    are cut or zero-padded to ``to``'s length."""

    display_name = "Conditioning (Average)"
    category = "conditioning"
    inputs = (
        Socket(name="conditioning_to", type="CONDITIONING", tooltip="the condition to blend into"),
        Socket(name="conditioning_from", type="CONDITIONING", tooltip="the condition to blend from"),
        Float(
            name="conditioning_to_strength",
            default=1.0,
            min=0.0,
            max=1.0,
            step=0.01,
            tooltip="the share of conditioning_to (1: it alone)",
        ),
    )
    outputs = CONDITIONING_OUT

    @staticmethod
    def run(
        ctx: Context, conditioning_to: Any, conditioning_from: Any, conditioning_to_strength: float
    ) -> tuple[Any]:
        import dataclasses

        import torch

        source = _first(conditioning_from)
        s = conditioning_to_strength

        def average(entry: Any) -> Any:
            to = entry.condition.embedding
            other = source.embedding[: to.shape[0]]
            if other.shape[0] < to.shape[0]:
                other = torch.cat([other, other.new_zeros(to.shape[0] - other.shape[0], *other.shape[1:])])
            extras = {}
            pooled_to, pooled_from = (
                dict(entry.condition.extras).get("pooled"),
                dict(source.extras).get("pooled"),
            )
            if pooled_to is not None and pooled_from is not None:
                extras["pooled"] = s * pooled_to + (1 - s) * pooled_from
            meaning = f"{s} × {entry.condition.meaning} + {1 - s} × {source.meaning}"
            cond = entry.condition.with_tensors(meaning, embedding=s * to + (1 - s) * other, **extras)
            return dataclasses.replace(entry, condition=cond)

        return (_map(conditioning_to, average),)


class ConditioningConcat(Node):
    """Append ``from``'s tokens to each of ``to``'s (pooled output and extras stay ``to``'s)."""

    display_name = "Conditioning (Concat)"
    category = "conditioning"
    inputs = (
        Socket(name="conditioning_to", type="CONDITIONING", tooltip="the condition whose tokens come first"),
        Socket(
            name="conditioning_from", type="CONDITIONING", tooltip="the condition whose tokens are appended"
        ),
    )
    outputs = CONDITIONING_OUT

    @staticmethod
    def run(ctx: Context, conditioning_to: Any, conditioning_from: Any) -> tuple[Any]:
        import dataclasses

        import torch

        source = _first(conditioning_from)

        def concat(entry: Any) -> Any:
            to = entry.condition.embedding
            if to.ndim != 2 or source.embedding.ndim != 2 or to.shape[-1] != source.embedding.shape[-1]:
                raise ValueError(
                    "conditioning_from: token embeddings of another width cannot be concatenated"
                )
            meaning = f"{entry.condition.meaning} ++ {source.meaning}"
            cond = entry.condition.with_tensors(meaning, embedding=torch.cat([to, source.embedding]))
            return dataclasses.replace(entry, condition=cond)

        return (_map(conditioning_to, concat),)


class ConditioningSetArea(Node):
    """Limit a conditioning to a rectangle (pixels) with a strength: combined with others, each area
    is denoised by the model run on that crop and blended in (area composition)."""

    display_name = "Conditioning (Set Area)"
    category = "conditioning"
    inputs = (
        Socket(name="conditioning", type="CONDITIONING", tooltip="the condition to restrict"),
        Int(
            name="width", default=64, min=64, max=MAX_RESOLUTION, step=8, tooltip="the area's width in pixels"
        ),
        Int(
            name="height",
            default=64,
            min=64,
            max=MAX_RESOLUTION,
            step=8,
            tooltip="the area's height in pixels",
        ),
        Int(name="x", default=0, min=0, max=MAX_RESOLUTION, step=8, tooltip="the area's left edge in pixels"),
        Int(name="y", default=0, min=0, max=MAX_RESOLUTION, step=8, tooltip="the area's top edge in pixels"),
        Float(
            name="strength",
            default=1.0,
            min=0.0,
            max=10.0,
            step=0.01,
            tooltip="the weight of this condition inside its area",
        ),
    )
    outputs = CONDITIONING_OUT

    @staticmethod
    def run(
        ctx: Context, conditioning: Any, width: int, height: int, x: int, y: int, strength: float
    ) -> tuple[ConditioningSet]:
        import dataclasses

        from nodes.diffusion.regions import ConditioningSet, entries_of

        entries = tuple(
            dataclasses.replace(e, area=(height, width, y, x), strength=strength)
            for e in entries_of(conditioning)
        )
        return (ConditioningSet(entries),)


class ConditioningSetTimestepRange(Node):
    """Use a conditioning only between two fractions of the schedule (0 = the first, noisiest step)."""

    display_name = "ConditioningSetTimestepRange"
    category = "advanced/conditioning"
    inputs = (
        Socket(name="conditioning", type="CONDITIONING", tooltip="the condition to restrict"),
        Float(
            name="start",
            default=0.0,
            min=0.0,
            max=1.0,
            step=0.001,
            tooltip="where in the schedule it starts applying (0: the first step)",
        ),
        Float(
            name="end",
            default=1.0,
            min=0.0,
            max=1.0,
            step=0.001,
            tooltip="where it stops applying (1: the last step)",
        ),
    )
    outputs = CONDITIONING_OUT

    @staticmethod
    def run(ctx: Context, conditioning: Any, start: float, end: float) -> tuple[ConditioningSet]:
        import dataclasses

        from nodes.diffusion.regions import ConditioningSet, entries_of

        if end < start:
            raise ValueError(f"end ({end}) must not be before start ({start})")
        return (
            ConditioningSet(
                tuple(dataclasses.replace(e, start=start, end=end) for e in entries_of(conditioning))
            ),
        )


class ConditioningZeroOut(Node):
    """All-zero conditioning (token embeddings and pooled output), as SDXL's empty negative."""

    display_name = "ConditioningZeroOut"
    category = "advanced/conditioning"
    inputs = (
        Socket(
            name="conditioning",
            type="CONDITIONING",
            tooltip="the condition whose embeddings to zero (an unconditional for SDXL-style CFG)",
        ),
    )
    outputs = CONDITIONING_OUT

    @staticmethod
    def run(ctx: Context, conditioning: Any) -> tuple[Any]:
        import dataclasses

        import torch

        def zero(entry: Any) -> Any:
            c = entry.condition
            zeros = {k: torch.zeros_like(v) for k, v in c.extras if k != "time_ids"}
            cond = c.with_tensors(f"zeroed {c.meaning}", embedding=torch.zeros_like(c.embedding), **zeros)
            return dataclasses.replace(entry, condition=cond)

        return (_map(conditioning, zero),)


class InstructPixToPixConditioning(Node):
    """The image to edit, for an InstructPix2Pix model (Brooks et al. 2023): both conditions carry its
    latent, which the model concatenates to the noisy latent; the output latent is empty, of its size.

    Pixels are cropped to multiples of 8 about the centre, as ComfyUI does. Wire ``positive`` as the
    image-and-text condition and ``negative`` as the image-only one of a dual CFG (DualCFGGuider's
    cond1 and cond2, or DualCFGCombine), with the plain negative prompt as the null (no image).
    """

    display_name = "InstructPixToPixConditioning"
    category = "conditioning/instructpix2pix"
    inputs = (
        Socket(name="positive", type="CONDITIONING", tooltip="the edit instruction's conditioning"),
        Socket(name="negative", type="CONDITIONING", tooltip="the negative prompt's conditioning"),
        Socket(name="vae", type="VAE", tooltip="the VAE that encodes the image to edit"),
        Socket(name="pixels", type="IMAGE", tooltip="the image to edit (one image)"),
    )
    outputs = (
        Output("positive", "CONDITIONING"),
        Output("negative", "CONDITIONING"),
        Output("latent", "LATENT"),
    )

    @staticmethod
    def run(ctx: Context, positive: Any, negative: Any, vae: Any, pixels: Any) -> tuple[Any, Any, Any]:
        import dataclasses

        import torch

        from nodes.diffusion.types import IMAGE_LATENT, Latent
        from nodes.diffusion.vae import encode_pixels

        if pixels.shape[0] != 1:
            raise ValueError(
                f"pixels: a batch of {pixels.shape[0]} images; InstructPix2Pix conditioning edits one "
                "image (split the batch and run one prompt per image)"
            )
        h, w = (pixels.shape[1] // 8) * 8, (pixels.shape[2] // 8) * 8
        if h == 0 or w == 0:
            raise ValueError(f"pixels: a {pixels.shape[2]}×{pixels.shape[1]} image; expected at least 8×8")
        top, left = (pixels.shape[1] % 8) // 2, (pixels.shape[2] % 8) // 2
        image = pixels[:, top : top + h, left : left + w, :3].float().permute(0, 3, 1, 2)  # (1, 3, h, w)
        latent = encode_pixels(vae, image * 2 - 1, ctx.device).float().cpu()  # (1, C, h/f, w/f)

        def with_image(entry: Any) -> Any:
            c = entry.condition
            meaning = f"{c.meaning} + image {w}×{h}"
            return dataclasses.replace(entry, condition=c.with_tensors(meaning, **{IMAGE_LATENT: latent[0]}))

        empty = Latent(torch.zeros_like(latent))
        return (_map(positive, with_image), _map(negative, with_image), empty)


NODES: list[type[Node]] = [
    ConditioningCombine,
    ConditioningAverage,
    ConditioningConcat,
    ConditioningSetArea,
    ConditioningSetTimestepRange,
    ConditioningZeroOut,
    InstructPixToPixConditioning,
]
