"""Guidance engine benchmarks, measured side by side in one run (interleaved repetitions, medians).

(a) a CFG sampling run through the whole graph (executor + nodes + compiled GUIDANCE program) versus a
    plain hand-written torch loop doing the same arithmetic with the same network, steps and sampler;
(b) batched CFG (one forward of 2B rows) versus unbatched (two forwards of B rows);
(c) the per-step cost of ClassifierGrad and ClipLoss relative to one model forward;
(d) the same on CUDA with ``--device cuda`` (the card's name is recorded).

Uses the shipped models in ``models/`` when present, else the same architectures with random weights
(speed does not depend on the weights). Usage::

    PYTHONPATH=. python benchmarks/guidance.py [--device cpu|cuda] [--steps 10] [--batch 4] [--out FILE]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from families.shapes.family import ShapesText  # noqa: E402
from graph_runtime import Executor, Registry  # noqa: E402
from graph_runtime.folders import register_folders  # noqa: E402
from nodes import MODEL_KINDS, MODELS_DIR, node_classes  # noqa: E402
from nodes.diffusion.conventions import Denoiser, vp_sigmas  # noqa: E402
from nodes.diffusion.gradients import ClassifierGradient, ClipGradient  # noqa: E402
from nodes.diffusion.guidance import Guidance, Prediction, cfg  # noqa: E402
from nodes.diffusion.program import CompiledGuidance  # noqa: E402
from nodes.diffusion.samplers import PerSampleNoise  # noqa: E402
from nodes.diffusion.sampling import guided_sample  # noqa: E402
from nodes.diffusion.schedules import sigmas_karras  # noqa: E402
from nodes.diffusion.types import Classifier, Clip, Conditioning  # noqa: E402

SCALE = 5.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def side_by_side(fns: dict[str, Callable[[], object]], device: torch.device, reps: int) -> dict[str, float]:
    """Median seconds per function, repetitions interleaved so drift hits all alike (one warm-up each)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(timed(fn, device))
    return {name: statistics.median(ts) for name, ts in times.items()}


def model_files() -> dict[str, str]:
    """Shipped files per kind, or random-weight stand-ins written to a temporary folder."""
    from families.shapes.networks import NoisyClassifier, ShapesUNet, read_metadata, save_network
    from families.shapes.networks.clip import ShapesCLIP

    found: dict[str, str] = {}
    wanted = {"checkpoints": "denoiser", "classifiers": "noisy_classifier", "clip": "clip"}
    for kind, meta_kind in wanted.items():
        # the largest of a kind: shapes_unet, not the small one that autoguidance guides with
        for path in sorted((MODELS_DIR / kind).glob("*.safetensors"), key=lambda p: -p.stat().st_size):
            if read_metadata(path).get("kind") == meta_kind:
                found[kind] = path.name
                break
    if len(found) == len(wanted):
        return found
    tmp = Path(tempfile.mkdtemp(prefix="guidegraph-bench-"))
    schedule = {"type": "discrete_vp", "beta_schedule": "linear", "timesteps": 1000}
    stand_ins = {
        "checkpoints": (
            ShapesUNet(),
            {"kind": "denoiser", "config": {}, "parametrization": "eps", "schedule": schedule},
        ),
        "classifiers": (
            NoisyClassifier(),
            {"kind": "noisy_classifier", "config": {}, "labels": ["red circle"]},
        ),
        "clip": (ShapesCLIP(), {"kind": "clip", "config": {}}),
    }
    for kind, (module, meta) in stand_ins.items():
        if kind not in found:
            if kind == "classifiers":
                meta["labels"] = [str(n) for n in getattr(module, "labels", [])]
            save_network(module, tmp / kind / f"random_{kind}.safetensors", meta)
            found[kind] = f"random_{kind}.safetensors"
    register_folders({kind: [tmp / kind] for kind in MODEL_KINDS})
    return found


def hand_loop(
    net: torch.nn.Module, cond: torch.Tensor, uncond: torch.Tensor, sigmas: torch.Tensor, seeds: list[int]
) -> torch.Tensor:
    """Plain torch: Euler + batched CFG over an eps network, σ → t by log-σ interpolation, no engine."""
    b = len(seeds)
    device = cond.device
    log_table = vp_sigmas("linear", 1000).to(device, torch.float64).log()
    noise = PerSampleNoise(seeds, (3, 32, 32), device, torch.float32)
    x = noise() * float(sigmas[0])
    embeddings = torch.cat([uncond.expand(b, -1), cond.expand(b, -1)])  # (2B, D)
    with torch.no_grad():
        for i in range(len(sigmas) - 1):
            sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
            s = torch.full((2 * b,), sigma, device=device)
            ls = s.to(torch.float64).clamp(float(log_table[0].exp()), float(log_table[-1].exp())).log()
            hi = torch.searchsorted(log_table, ls).clamp(1, len(log_table) - 1)
            t = ((hi - 1) + (ls - log_table[hi - 1]) / (log_table[hi] - log_table[hi - 1])).float()
            xx = torch.cat([x, x])  # (2B, 3, 32, 32)
            eps = net(xx / math.sqrt(sigma**2 + 1), t, embeddings)
            denoised = xx - sigma * eps
            du, dc = denoised.chunk(2)
            guided = du + SCALE * (dc - du)
            x = x + (x - guided) / sigma * (sigma_next - sigma)
    return x


class Prompt:
    """A minimal API-prompt builder (WorkflowBuilder needs pydantic, absent on some GPU hosts)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.prompt: dict[str, dict] = {}

    def add(self, class_type: str, **inputs: object) -> str:
        node_id = str(len(self.prompt) + 1)
        cls = self.registry.get(class_type)
        assert cls is not None, class_type
        values = {k: (v.link() if isinstance(v, NodeId) else v) for k, v in inputs.items()}
        for spec in cls.inputs:
            if spec.name not in values and spec.is_widget and spec.has_default:
                values[spec.name] = getattr(spec, "default", None)
        self.prompt[node_id] = {"class_type": class_type, "inputs": values}
        return NodeId(node_id)

    def set(self, node_id: str, name: str, value: object) -> None:
        self.prompt[node_id]["inputs"][name] = value


class NodeId(str):
    """A node id that links its first output when passed as an input value; ``out(i)`` links output i."""

    output = 0

    def out(self, index: int) -> NodeId:
        linked = NodeId(self)
        linked.output = index
        return linked

    def link(self) -> list[object]:
        return [str.__str__(self), self.output]


def bench_graph_vs_loop(
    device: torch.device, steps: int, batch: int, reps: int, files: dict[str, str]
) -> dict:
    registry = Registry(node_classes())
    executor = Executor(registry, device=device, dtype=torch.float32)
    wb = Prompt(registry)
    model = wb.add("Model", checkpoint=files["checkpoints"])
    pos = wb.add("Condition", clip=model.out(1), text="a red circle")
    neg = wb.add("NullCondition", clip=model.out(1))
    guidance = wb.add("CFGCombine", model=model, positive=pos, negative=neg, scale=SCALE)
    latent = wb.add("EmptyLatent", model=model, width=32, height=32, batch_size=batch)
    sampler = wb.add(
        "Sampler",
        guidance=guidance,
        latent=latent,
        seed=0,
        steps=steps,
        sampler_name="euler",
        scheduler="karras",
    )
    cold = timed(lambda: executor.run(wb.prompt, outputs=[sampler]), device)
    outputs = executor.run(wb.prompt, outputs=[sampler]).outputs
    denoiser: Denoiser = outputs[model][0]
    c_pos: Conditioning = outputs[pos][0]
    c_neg: Conditioning = outputs[neg][0]
    sigmas = sigmas_karras(steps, denoiser.sigma_min, denoiser.sigma_max)
    seed = iter(range(1, 10**6))

    def graph() -> object:
        wb.set(sampler, "seed", next(seed))  # a new seed: only the Sampler runs, as in interactive use
        result = executor.run(wb.prompt, outputs=[sampler])
        assert result.ok and result.executed == [sampler], result.failures
        return result

    def loop() -> object:
        s = next(seed)
        return hand_loop(
            denoiser.network,
            c_pos.embedding.to(device),
            c_neg.embedding.to(device),
            sigmas,
            list(range(s, s + batch)),
        )

    # Same seed, same arithmetic: the two paths must agree before their times mean anything.
    wb.set(sampler, "seed", 123)
    via_graph = executor.run(wb.prompt, outputs=[sampler]).outputs[sampler][0].samples
    by_hand = hand_loop(
        denoiser.network,
        c_pos.embedding.to(device),
        c_neg.embedding.to(device),
        sigmas,
        list(range(123, 123 + batch)),
    )
    max_diff = float((via_graph.to(device) - by_hand).abs().max())
    t = side_by_side({"graph": graph, "loop": loop}, device, reps)
    return {"cold": cold, "graph": t["graph"], "loop": t["loop"], "max_diff": max_diff, "denoiser": denoiser}


def bench_batching(device: torch.device, denoiser: Denoiser, steps: int, batch: int, reps: int) -> dict:
    text = ShapesText(denoiser.network, denoiser.name)
    c, u = text.encode_text("a red circle"), text.encode_text("")
    program = cfg(Prediction(denoiser, c), Prediction(denoiser, u), SCALE)
    start = torch.zeros(batch, 3, 32, 32)
    sigmas = sigmas_karras(steps, denoiser.sigma_min, denoiser.sigma_max)

    def run(max_batch: int) -> Callable[[], object]:
        return lambda: guided_sample(
            program, start, list(range(batch)), sigmas, "euler", device=device, max_batch=max_batch
        )

    t = side_by_side({"batched": run(0), "unbatched": run(batch)}, device, reps)
    return t


def bench_gradients(
    device: torch.device, denoiser: Denoiser, clf: Classifier, clip: Clip, batch: int, reps: int
) -> dict[str, float]:
    """Seconds per program step for a single prediction, plus each gradient rule on top of it."""
    c = ShapesText(denoiser.network, denoiser.name).encode_text("a red circle")
    base = Prediction(denoiser, c)
    with torch.no_grad():
        text = Conditioning.of(clip.encode_text(["a red circle"])[0], "clip red")

    def clip_rule(through: bool) -> ClipGradient:  # 4 flipped cutouts, no clamps
        return ClipGradient(base, clip, text, 100.0, 4, True, through, 0.0, (), 100.0, 0.0, None, 1.0)

    programs: dict[str, Guidance] = {
        "forward": base,
        "classifier": ClassifierGradient(base, clf, 0, 1.0),
        "clip_detached": clip_rule(False),
        "clip_through": clip_rule(True),
    }
    x = torch.randn(batch, 3, 32, 32, device=device) * 5
    sigma = torch.full((batch,), 5.0, device=device)
    inner = 5

    def step(program: Guidance) -> Callable[[], object]:
        compiled = CompiledGuidance(program, seeds=list(range(batch)), device=device)

        def go() -> object:
            with torch.no_grad():
                for _ in range(inner):
                    compiled(x, sigma)
            return None

        return go

    t = side_by_side({name: step(p) for name, p in programs.items()}, device, reps)
    return {name: seconds / inner for name, seconds in t.items()}


def load(kind: str, name: str, device: torch.device) -> torch.nn.Module:
    from families.shapes.networks import load_network
    from graph_runtime.folders import resolve_file

    return load_network(resolve_file(kind, name), device=device).module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown section here too")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    for kind in MODEL_KINDS:
        register_folders({kind: [MODELS_DIR / kind]})
    files = model_files()
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}"
    print(f"device {device} ({hw}), torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)

    a = bench_graph_vs_loop(device, args.steps, args.batch, args.reps, files)
    print(
        f"(a) graph {a['graph']:.4f}s  loop {a['loop']:.4f}s  ratio {a['graph'] / a['loop']:.3f}", flush=True
    )
    denoiser = a["denoiser"]
    b = bench_batching(device, denoiser, args.steps, args.batch, args.reps)
    print(f"(b) batched {b['batched']:.4f}s  unbatched {b['unbatched']:.4f}s", flush=True)
    clf_module = load("classifiers", files["classifiers"], device)
    clf = Classifier(clf_module, tuple(getattr(clf_module, "labels", ["?"])), files["classifiers"])
    clip = Clip(load("clip", files["clip"], device), files["clip"])
    c = bench_gradients(device, denoiser, clf, clip, args.batch, args.reps)
    print("(c) " + "  ".join(f"{k} {v * 1000:.2f}ms" for k, v in c.items()), flush=True)

    fwd = c["forward"]
    lines = [
        f"### {device.type.upper()}: {hw}",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; models: {', '.join(files.values())}; "
        f"batch {args.batch} images 3×32×32, {args.steps} steps, median of {args.reps} interleaved runs.",
        "",
        "| measure | time | ratio |",
        "|---|---|---|",
        f"| (a) CFG euler run through the graph (Sampler re-runs, upstream cached) | {a['graph']:.4f} s | "
        f"**{a['graph'] / a['loop']:.3f}** × hand loop |",
        f"| (a) same arithmetic as a hand-written torch loop | {a['loop']:.4f} s | 1 |",
        f"| (a) first, cold run of the workflow (load + encode + sample) | {a['cold']:.4f} s | — |",
        f"| (a) max abs difference graph vs loop, same seed | {a['max_diff']:.2e} | — |",
        f"| (b) CFG batched: one forward of 2B rows per step | {b['batched']:.4f} s | 1 |",
        f"| (b) CFG unbatched: two forwards of B rows per step | {b['unbatched']:.4f} s | "
        f"{b['unbatched'] / b['batched']:.3f} × batched |",
        f"| (c) one step, single prediction (= one model forward of B rows) | {fwd * 1000:.2f} ms | 1 |",
        f"| (c) ClassifierGrad, extra per step | {(c['classifier'] - fwd) * 1000:.2f} ms | "
        f"{(c['classifier'] - fwd) / fwd:.2f} × forward |",
        f"| (c) ClipLoss, detached x̂0, 4 cutouts, extra per step "
        f"| {(c['clip_detached'] - fwd) * 1000:.2f} ms | "
        f"{(c['clip_detached'] - fwd) / fwd:.2f} × forward |",
        f"| (c) ClipLoss through the denoiser, 4 cutouts, extra per step "
        f"| {(c['clip_through'] - fwd) * 1000:.2f} ms | "
        f"{(c['clip_through'] - fwd) / fwd:.2f} × forward |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
