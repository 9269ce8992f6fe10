"""Batch plumbing for comparisons: concatenate IMAGE batches so one grid can show several runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from graph_runtime.api import Context, Node, Output, Socket

if TYPE_CHECKING:
    import torch

MAX_INPUTS = 8


class ImageBatch(Node):
    """Concatenate up to eight IMAGE batches, in input order, into one batch: (ΣBᵢ, H, W, C).

    Unconnected inputs drop out. Every batch must have the same height, width and channels; feed the
    result to ImageGrid to lay several runs side by side (rows of a comparison, say).
    """

    category = "guidegraph/image"
    inputs = (
        Socket(name="images_1", type="IMAGE", tooltip="the first batch"),
        *(
            Socket(name=f"images_{i}", type="IMAGE", optional=True, tooltip="another batch to append")
            for i in range(2, MAX_INPUTS + 1)
        ),
    )
    outputs = (Output("IMAGE", "IMAGE"),)

    @staticmethod
    def run(ctx: Context, **batches: torch.Tensor | None) -> tuple[torch.Tensor]:
        ordered = sorted(batches.items(), key=lambda item: int(item[0].rsplit("_", 1)[1]))
        given = [(name, b) for name, b in ordered if b is not None]
        shape = tuple(given[0][1].shape[1:])
        for name, batch in given:
            if tuple(batch.shape[1:]) != shape:
                raise ValueError(
                    f"{name} has images of shape {tuple(batch.shape[1:])} (H, W, C), but images_1 has "
                    f"{shape}; every batch must match"
                )
        import torch

        return (torch.cat([b for _, b in given], dim=0),)  # (ΣBᵢ, H, W, C)


NODES: list[type[Node]] = [ImageBatch]
