"""Per-step cost of each guidance rule beyond CFG, measured side by side with plain CFG in one run.

Every program runs on the shipped shapes UNet at the same (x, σ) through ``CompiledGuidance``; the
table gives seconds per step and the ratio to CFG. Two-prediction rules (APG, CFG-Zero*, TCFG, CFG++,
rescale) batch the same two rows as CFG, so their ratio is the cost of the rule's own arithmetic;
Perp-Neg, PAG and SEG add a third row to the one batched forward; SAG adds a second forward of one
row per image (its input is built from the first forward's output). Usage::

    PYTHONPATH=. python benchmarks/rules.py [--device cpu] [--batch 4] [--reps 7] [--out FILE]
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable
from pathlib import Path

import torch
from guidance import model_files, side_by_side  # type: ignore[import-not-found]

from families.shapes.family import ShapesText
from families.shapes.networks import load_network
from graph_runtime.folders import register_folders, resolve_file
from nodes import MODEL_KINDS, MODELS_DIR
from nodes.diffusion.conventions import denoiser_from_metadata
from nodes.diffusion.guidance import Difference, Guidance, Prediction, cfg
from nodes.diffusion.perturbation import INFINITE_BLUR as BLUR
from nodes.diffusion.perturbation import Perturbation
from nodes.diffusion.program import CompiledGuidance
from nodes.diffusion.rules import AdaptiveProjected, PerpNeg, Renoise, Rescale, Tangential, ZeroStar
from nodes.diffusion.self_attention import sag_layer, self_attention_guidance


def programs(device: torch.device) -> dict[str, Guidance]:
    name = model_files()["checkpoints"]
    loaded = load_network(resolve_file("checkpoints", name), device=device)
    model = denoiser_from_metadata(loaded.module, loaded.metadata, name=name, encoder=name)
    text = ShapesText(model.network, name)
    c, u, n = (Prediction(model, text.encode_text(p)) for p in ("a red circle", "", "blue"))
    plain = cfg(c, u, 7.0)
    return {
        "cfg": plain,
        "apg": AdaptiveProjected(c, u, 7.0, 0.0, -0.5, 15.0, "x0"),
        "cfg_zero_star": ZeroStar(c, u, 7.0, 0, "eps"),
        "tcfg": Tangential(c, u, 7.0),
        "cfg_pp": Renoise(cfg(c, u, 0.6), u),
        "cfg_rescale": Rescale(plain, c, 0.7, "v"),
        "perp_neg": PerpNeg(c, n, u, 7.0, 1.0),
        "pag": Difference(plain, c, perturbed(c, Perturbation("identity_attention", ("mid",))), 3.0),
        "seg": Difference(plain, c, perturbed(c, Perturbation("blurred_queries", ("mid",), BLUR)), 3.0),
        "sag": self_attention_guidance(plain, u, 0.75, 1.0, 1.0, sag_layer(model.network, "mid")),
    }


def perturbed(leaf: Prediction, perturbation: Perturbation) -> Prediction:
    return Prediction(leaf.model, leaf.condition, perturbation=perturbation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    for kind in MODEL_KINDS:
        register_folders({kind: [MODELS_DIR / kind]})
    x = torch.randn(args.batch, 3, 32, 32, device=device) * 3
    sigmas = torch.tensor([10.0, 3.0, 1.0, 0.3, 0.0])
    inner = 4

    def step(program: Guidance) -> Callable[[], object]:
        def go() -> object:  # a fresh compile per call, as a sampling run does
            compiled = CompiledGuidance(program, seeds=list(range(args.batch)), device=device, sigmas=sigmas)
            with torch.no_grad():
                for s in sigmas[:inner].tolist():
                    compiled(x, torch.full((args.batch,), s, device=device))
            return compiled.stats.rows

        return go

    t = side_by_side({k: step(p) for k, p in programs(device).items()}, device, args.reps)
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    base = t["cfg"]
    lines = [
        f"### {device.type.upper()}: {hw}",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} images 3×32×32, "
        f"shipped UNet, {inner} steps per timing, median of {args.reps} interleaved runs.",
        "",
        "| rule | ms / step | × CFG |",
        "|---|---:|---:|",
        *(f"| {k} | {v / inner * 1000:.2f} | {v / base:.3f} |" for k, v in t.items()),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
