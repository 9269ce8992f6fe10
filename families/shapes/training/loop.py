"""The training loop shared by every recipe: AdamW, warm-up + cosine LR, EMA, bf16 autocast on CUDA,
a wall-clock budget, resumable checkpoints (safetensors, never pickles) and a JSON-lines log.
"""

from __future__ import annotations

import copy
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from families.shapes.data.shapes import CLASS_NAMES, ShapesDataset
from families.shapes.networks.io import load_network, save_network
from families.shapes.training.recipes import DATA_NOTE, RECIPES, Recipe, lr_at


@dataclass
class TrainOptions:
    """What one ``guidegraph train`` run does; ``None`` means the recipe's default."""

    recipe: str
    out: Path
    run_dir: Path
    steps: int = 100_000
    max_minutes: float | None = None
    batch: int | None = None
    lr: float | None = None
    seed: int | None = None
    device: str | None = None
    resume: bool = False
    smoke: bool = False
    log_every: int = 100
    checkpoint_every: int = 2_000
    metric_samples: int = 2_048
    quiet: bool = False
    init: Path | None = None  # start from the weights of a shipped safetensors file
    autocast_cpu: bool = False  # bf16 autocast on the CPU too (only to test the CUDA code path)


def pick_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    state = opt.state_dict()
    tensors = {
        f"opt.{idx}.{key}": (val if isinstance(val, torch.Tensor) else torch.tensor(val))
        .detach()
        .cpu()
        .contiguous()
        for idx, slots in state["state"].items()
        for key, val in slots.items()
    }
    return tensors, json.dumps(state["param_groups"])


def save_checkpoint(
    path: Path, model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer, info: dict
) -> None:
    """Model, EMA and optimizer state in one safetensors file; step, time and options in its metadata."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors |= {f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
    opt_tensors, groups = _optimizer_tensors(opt)
    tensors |= opt_tensors
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"info": json.dumps(info), "param_groups": groups})
    tmp.replace(path)


def load_checkpoint(path: Path, model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Restore a checkpoint written by :func:`save_checkpoint`; returns its info (step, elapsed seconds)."""
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, val in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = val
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return json.loads(meta["info"])


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1 - decay)


def train(options: TrainOptions) -> dict[str, Any]:
    """Train one recipe until ``steps`` or ``max_minutes``; write the EMA weights with metadata to ``out``."""
    recipe: Recipe = RECIPES[options.recipe]
    device = pick_device(options.device)
    seed = options.seed if options.seed is not None else recipe.data_seed
    batch = options.batch or recipe.batch
    base_lr = options.lr or recipe.lr
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    config = dict(recipe.smoke_config if options.smoke else recipe.config)
    if recipe.kind in ("noisy_classifier", "evaluator"):
        config["labels"] = list(CLASS_NAMES)
    model = recipe.architecture(**config)
    earlier: dict[str, Any] = {}
    if options.init is not None:
        start_from = load_network(options.init)
        config = dict(start_from.metadata["config"])
        model = start_from.module.train().requires_grad_(True)
        earlier = dict(start_from.metadata["training"])
        _say(options, f"starting from {options.init} ({start_from.metadata['training']['steps']} steps)")
    model = model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=base_lr, betas=(0.9, 0.99), weight_decay=0.01)
    data = ShapesDataset(seed=seed)
    ckpt_path = options.run_dir / "checkpoint.safetensors"
    log_path = options.run_dir / "log.jsonl"
    options.run_dir.mkdir(parents=True, exist_ok=True)
    step, elapsed_before = 0, 0.0
    if options.resume and ckpt_path.exists():
        resumed = load_checkpoint(ckpt_path, model, ema, opt)
        step, elapsed_before = int(resumed["step"]), float(resumed["elapsed_s"])
        _say(options, f"resumed {recipe.name} at step {step} ({elapsed_before:.0f} s already spent)")
    budget = options.max_minutes * 60 if options.max_minutes else None
    autocast = device.type == "cuda" or options.autocast_cpu
    n_params = sum(p.numel() for p in model.parameters())
    _say(options, f"training {recipe.name}: {n_params / 1e6:.2f}M parameters, batch {batch}, on {device}")
    start = time.time()
    last_log, losses = start, []
    model.train()
    while step < options.steps:
        elapsed = elapsed_before + time.time() - start
        if budget is not None and elapsed >= budget:
            break
        progress = max(step / options.steps, elapsed / budget if budget else 0.0)
        lr = lr_at(base_lr, step, progress, warmup=min(500, max(1, options.steps // 10)))
        for group in opt.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = recipe.loss(model, data, step, batch, device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, model, min(recipe.ema_decay, (1 + step) / (10 + step)))
        step += 1
        losses.append(loss.detach())
        if step % options.log_every == 0 or step == options.steps:
            now = time.time()
            mean_loss = torch.stack(losses).mean().item()
            rate = len(losses) / max(now - last_log, 1e-9)
            entry = {
                "step": step,
                "loss": round(mean_loss, 5),
                "lr": lr,
                "steps_per_s": round(rate, 2),
                "elapsed_s": round(elapsed_before + now - start, 1),
            }
            _log(log_path, entry)
            _say(
                options,
                f"[{recipe.name}] step {step} loss {mean_loss:.4f} lr {lr:.2e} {rate:.1f} it/s "
                f"{entry['elapsed_s']:.0f}s",
            )
            last_log, losses = now, []
        if step % options.checkpoint_every == 0:
            info = {
                "step": step,
                "elapsed_s": elapsed_before + time.time() - start,
                "seed": seed,
                "batch": batch,
            }
            save_checkpoint(ckpt_path, model, ema, opt, info)
    wall = elapsed_before + time.time() - start
    save_checkpoint(
        ckpt_path, model, ema, opt, {"step": step, "elapsed_s": wall, "seed": seed, "batch": batch}
    )
    ema.eval()
    metrics = recipe.evaluate(ema, device, 16 if options.smoke else options.metric_samples)
    metadata: dict[str, Any] = {
        "kind": recipe.kind,
        "config": config,
        **recipe.extra_metadata,
        "training": {
            "recipe": recipe.name,
            "data": f"{DATA_NOTE}; seed {seed}; batch i is ShapesDataset(seed).batch(i, batch)",
            "steps": step + int(earlier.get("steps", 0)),
            "batch": batch,
            "examples_seen": step * batch + int(earlier.get("examples_seen", 0)),
            "seed": seed,
            "optimizer": f"AdamW(lr={base_lr}, betas=(0.9, 0.99), weight_decay=0.01), warm-up, cosine to 10%",
            "ema_decay": recipe.ema_decay,
            "precision": "bf16 autocast" if autocast else "float32",
            "wall_time_s": round(wall + float(earlier.get("wall_time_s", 0.0)), 1),
            "continued_from": (
                {k: earlier.get(k) for k in ("steps", "batch", "wall_time_s", "optimizer")}
                if earlier
                else None
            ),
            "device": device_description(device),
            "parameters": n_params,
            "notes": recipe.notes,
            "command": " ".join(sys.argv[1:]) if sys.argv else "",
        },
        "metrics": metrics,
    }
    if recipe.kind in ("noisy_classifier", "evaluator"):
        metadata["labels"] = list(CLASS_NAMES)
    save_network(ema, options.out, metadata, half=True)
    _log(log_path, {"final": True, "step": step, "wall_time_s": round(wall, 1), "metrics": metrics})
    _say(
        options,
        f"[{recipe.name}] wrote {options.out} after {step} steps, {wall:.0f} s: {json.dumps(metrics)}",
    )
    return metadata


def _log(path: Path, entry: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(entry) + "\n")


def _say(options: TrainOptions, message: str) -> None:
    if not options.quiet:
        print(message, flush=True)
