"""Guided sampling on CUDA (skipped where torch sees no CUDA device)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from graph_runtime.context import Context, Paths
from nodes.diffusion.types import Latent
from nodes.guidance_nodes import CFGCombine, ClassifierGrad, ClipLoss
from nodes.model_nodes import ClassifierLoader, ClipLoader, Condition, Model, NullCondition
from nodes.sampling_nodes import Sampler

pytestmark = pytest.mark.gpu


def guided_run(root: Path, device: str, latent: Latent) -> torch.Tensor:
    ctx = Context(device=torch.device(device), paths=Paths(output=root / "out"))
    model, text, _ = Model.run(ctx, checkpoint="tiny.safetensors", prediction="auto", weight_dtype="float32")
    (pos,) = Condition.run(ctx, clip=text, text="a red circle", kind="prompt")
    (neg,) = NullCondition.run(ctx, clip=text, meaning="empty prompt")
    (g,) = CFGCombine.run(ctx, model, pos, neg, 4.0)
    (g,) = ClassifierGrad.run(
        ctx, g, ClassifierLoader.run(ctx, classifier="tiny_cls.safetensors")[0], "red circle", 2.0
    )
    (g,) = ClipLoss.run(
        ctx, g, ClipLoader.run(ctx, clip="tiny_clip.safetensors")[0], "red", 20.0, 2, True, True, 0.0, "", 0.0
    )
    return Sampler.run(ctx, g, latent, 7, 4, "dpmpp_2m_sde", "karras", 1.0)[0].samples


def test_guided_sampling_on_cuda_matches_cpu_and_ignores_batch_position(model_dirs: Path) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    batch = Latent(torch.zeros(3, 3, 32, 32))
    on_gpu = guided_run(model_dirs, "cuda", batch)
    on_cpu = guided_run(model_dirs, "cpu", batch)
    alone = guided_run(model_dirs, "cuda", Latent(torch.zeros(1, 3, 32, 32), batch_index=(2,)))
    assert bool(on_gpu.isfinite().all())
    assert torch.allclose(on_gpu, on_cpu, atol=1e-2)
    assert torch.allclose(on_gpu[2:], alone, atol=1e-3)


if __name__ == "__main__":  # where pytest is not installed: python tests/nodes/test_gpu.py
    import os
    import tempfile

    import conftest  # type: ignore[import-not-found]  # this folder is sys.path[0] when run as a script

    root = Path(tempfile.mkdtemp())
    os.environ["GUIDEGRAPH_MODEL_DIRS"] = conftest.write_tiny_models(root)
    test_guided_sampling_on_cuda_matches_cpu_and_ignores_batch_position(root)
    print("test_gpu: passed")
