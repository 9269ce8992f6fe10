"""Stable Diffusion on guidegraph: one CFG step at full size on this machine, and the graph's overhead.

Run on demand (not a test):

    .venv/bin/python -m benchmarks.sd steps [--variants sd1,sdxl] [--threads 2]
    .venv/bin/python -m benchmarks.sd ratio [--variant sd1] [--size small|full] [--steps 4] [--repeat 3]

``steps``: full-size SD1.5 (512²) and SDXL base (1024²) architectures with random weights (built on
the meta device, then filled: no download), one CFG step (cond + uncond in one batched UNet forward)
through the compiled GUIDANCE program; seconds and peak RSS, each variant in its own process, so the
peaks do not mix. ``ratio``: the same UNet, prompts, latents and σ steps three ways, interleaved:
the whole graph (Model → Condition → CFGCombine → Sampler through the Executor), a hand-written
torch loop doing the same arithmetic, and diffusers' ``StableDiffusionPipeline`` (``output_type
="latent"``, so no VAE decode on any side). On a GPU: fp16 and ``--size full``. Writes markdown to
stdout; record it in benchmarks/results/sd.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SIZES = {"sd1": 512, "sd2_v": 768, "sdxl": 1024}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def one_step(variant: str, threads: int) -> dict[str, Any]:
    """Build full-size random networks, then time one CFG step (runs in its own process)."""
    from families.base import LoadOptions
    from families.sd.components import SDComponents
    from families.sd.files import ENCODERS
    from families.sd.make import build_networks
    from families.sd.model import checkpoint_from_components
    from nodes.diffusion.guidance import Prediction, cfg
    from nodes.diffusion.program import CompiledGuidance

    torch.set_num_threads(threads)
    start = time.perf_counter()
    configs, unet, vae, encoders = build_networks(variant, "full", seed=0)
    pads = [pad for _, _, pad in ENCODERS[variant]]
    components = SDComponents(
        variant=variant, unet=unet, vae=vae, text_encoders=list(encoders.values()), pad_tokens=pads,
        scheduler_config=configs["scheduler"], name=variant,
    )  # fmt: skip
    checkpoint = checkpoint_from_components(components, LoadOptions(device=torch.device("cpu")))
    build = time.perf_counter() - start
    params = sum(p.numel() for p in unet.parameters())
    text = checkpoint.clip
    pos, neg = text.encode_text("a photograph of an astronaut riding a horse"), text.encode_text("")
    model = checkpoint.model
    program = CompiledGuidance(
        cfg(Prediction(model, pos), Prediction(model, neg), 7.5), seeds=[0], device=torch.device("cpu")
    )
    side = SIZES[variant] // model.downscale
    x = torch.randn(1, model.latent_channels, side, side) * 14.6
    sigma = torch.tensor([14.6])
    with torch.no_grad():
        start = time.perf_counter()
        program(x, sigma)
        step = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss is KiB on Linux)
    return {"variant": variant, "pixels": SIZES[variant], "unet_params_M": params / 1e6, "build_s": build,
            "cfg_step_s": step, "peak_rss_GiB": peak, "forwards": program.stats.model_calls}  # fmt: skip


def cmd_steps(args: argparse.Namespace) -> None:
    rows = []
    for variant in args.variants.split(","):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.sd", "_one", variant, "--threads", str(args.threads)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"### One CFG step at full size, random weights ({platform.processor() or platform.machine()}, "
          f"{args.threads} threads, float32, torch {torch.__version__})\n")  # fmt: skip
    print("| architecture | image | UNet params | build | one CFG step (batch 2, one forward) | peak RSS |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['pixels']}² | {r['unet_params_M']:.0f} M | {r['build_s']:.1f} s | "
            f"{r['cfg_step_s']:.1f} s ({r['forwards']} forward) | {r['peak_rss_GiB']:.2f} GiB |"
        )


def cmd_ratio(args: argparse.Namespace) -> None:
    """Graph vs hand loop vs diffusers pipeline, same UNet and steps, interleaved repetitions."""
    import diffusers

    from families.sd.make import make_checkpoint
    from graph_runtime import Executor, Registry, WorkflowBuilder
    from graph_runtime.folders import register_folders
    from nodes import node_classes
    from nodes.diffusion.schedules import sigmas_for_denoise

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    tmp = Path(tempfile.mkdtemp())
    make_checkpoint(args.variant, tmp / "checkpoints" / "bench.safetensors", size=args.size)
    register_folders({"checkpoints": [tmp / "checkpoints"]})
    registry = Registry(node_classes())
    executor = Executor(registry, device=device, dtype=torch.float32)
    wb = WorkflowBuilder(registry)
    model = wb.add("Model", checkpoint="bench.safetensors")
    pos = wb.add("Condition", clip=model[1], text="a photograph of an astronaut riding a horse")
    neg = wb.add("NullCondition", clip=model[1])
    guidance = wb.add("CFGCombine", model=model, positive=pos, negative=neg, scale=7.5)
    pixels = SIZES[args.variant] if args.size == "full" else 64
    latent = wb.add("EmptyLatent", model=model, width=pixels, height=pixels, batch_size=args.batch)
    sampler = wb.add("Sampler", guidance=guidance, latent=latent, seed=0, steps=args.steps,
                     sampler_name="euler", scheduler="normal", node_id="sampler")  # fmt: skip
    first = executor.run(wb.prompt, outputs=["sampler"])
    assert first.ok, first.failures
    ckpt_model, text, vae = first.outputs[model.id]
    unet = ckpt_model.network.unet
    c, u = first.outputs[pos.id][0], first.outputs[neg.id][0]
    sigmas = sigmas_for_denoise("normal", ckpt_model, args.steps, 1.0).tolist()
    shape = first.outputs[sampler.id][0].samples.shape
    scheduler = diffusers.EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing"
    )
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae.vae, text_encoder=text.encoders[0], tokenizer=_tokenizer(), unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    seeds = iter(range(1, 10**6))
    context = torch.cat(
        [c.embedding[None].expand(shape[0], -1, -1), u.embedding[None].expand(shape[0], -1, -1)]
    )

    def graph() -> None:
        wb.prompt["sampler"]["inputs"]["seed"] = next(seeds)
        assert executor.run(wb.prompt, outputs=["sampler"]).executed == ["sampler"]

    def loop() -> None:
        """Euler with CFG by hand: the same UNet calls and arithmetic as the graph's program."""
        x = torch.randn(shape, device=device) * sigmas[0]
        ctx = context.to(device, dtype)  # (2B, 77, D)
        with torch.no_grad():
            for s, s_next in itertools.pairwise(sigmas):
                t = ckpt_model.c_noise(torch.full((2 * shape[0],), s, device=device))
                x_in = torch.cat([x, x]) / (s**2 + 1) ** 0.5
                eps = unet(x_in.to(dtype), t.to(dtype), encoder_hidden_states=ctx).sample.float()
                e_c, e_u = eps.chunk(2)
                denoised = x - s * (e_u + 7.5 * (e_c - e_u))
                x = x + (x - denoised) / s * (s_next - s)
        _sync(device)

    def pipeline() -> None:
        with torch.no_grad():
            pipe(prompt="a photograph of an astronaut riding a horse", num_inference_steps=args.steps,
                 guidance_scale=7.5, height=pixels, width=pixels, num_images_per_prompt=args.batch,
                 output_type="latent")  # fmt: skip
        _sync(device)

    runs: dict[str, list[float]] = {"graph": [], "loop": [], "pipeline": []}
    fns: dict[str, Callable[[], None]] = {"graph": graph, "loop": loop, "pipeline": pipeline}
    for name in fns:  # warm-up
        fns[name]()
    for _ in range(args.repeat):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(
        f"### Graph vs hand loop vs StableDiffusionPipeline ({device}, {dtype}, {args.variant} "
        f"{args.size}, {pixels}², batch {args.batch}, {args.steps} euler steps, median of {args.repeat})\n"
    )
    print("| path | seconds | ÷ hand loop | ÷ pipeline |\n|---|---:|---:|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:.3f} | {v / med['loop']:.3f} | {v / med['pipeline']:.3f} |")
    if device.type == "cuda":
        print(f"\npeak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


def _tokenizer() -> Any:
    from families.sd.tokenizer import clip_tokenizer

    return clip_tokenizer("<|endoftext|>")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    steps = sub.add_parser("steps")
    steps.add_argument("--variants", default="sd1,sdxl")
    steps.add_argument("--threads", type=int, default=2)
    one = sub.add_parser("_one")
    one.add_argument("variant")
    one.add_argument("--threads", type=int, default=2)
    ratio = sub.add_parser("ratio")
    ratio.add_argument("--variant", default="sd1")
    ratio.add_argument("--size", default="tiny", choices=("tiny", "full"))
    ratio.add_argument("--steps", type=int, default=4)
    ratio.add_argument("--batch", type=int, default=1)
    ratio.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.cmd == "_one":
        print(json.dumps(one_step(args.variant, args.threads)))
    elif args.cmd == "steps":
        cmd_steps(args)
    else:
        cmd_ratio(args)


if __name__ == "__main__":
    main()
