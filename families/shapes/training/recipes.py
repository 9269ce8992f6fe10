"""The four training recipes: what a model is, how one step's loss is made, and what is measured after.

Every recipe draws batch ``step`` of :class:`ShapesDataset` (so a resumed run sees the same data) and
renders it on the training device. Recipes:

- ``denoiser``: ε-prediction (Ho et al. 2020) on the discrete VP schedule, x = x0 + σ·n, input
  x/sqrt(σ²+1), c_noise = t; the prompt is dropped to the null condition for 10% of examples and cut
  to its shape word or colour word for 15% each, so one network is conditional and unconditional (CFG,
  Ho & Salimans 2022) and partial prompts mean something.
- ``noisy_classifier``: cross-entropy on x0 + σ·n with σ from the denoiser's table, half of the draws
  uniform in t and half biased to low noise (t = T·u²) (Dhariwal & Nichol 2021).
- ``clip``: multi-positive InfoNCE between images (some blurred, faded or noisy, so it reads the
  blurry x̂0 of early steps) and caption word sets; a caption is a positive for every image it describes.
- ``evaluator``: cross-entropy on clean images with mild noise and blur; scores samples only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from families.shapes.data.shapes import (
    CLASS_NAMES,
    COLOURS,
    SHAPES,
    VOCAB,
    ShapesDataset,
    caption_for,
    label_multi_hot,
    random_prompt_multi_hot,
)
from families.shapes.networks.classifiers import Evaluator, NoisyClassifier
from families.shapes.networks.clip import ShapesCLIP
from families.shapes.networks.unet import ShapesUNet
from families.shapes.training.augment import adversarial_l2, augment, gaussian_blur
from nodes.diffusion.conventions import vp_sigmas

BETA_SCHEDULE, TIMESTEPS = "linear", 1000
SCHEDULE: dict[str, Any] = {"type": "discrete_vp", "beta_schedule": BETA_SCHEDULE, "timesteps": TIMESTEPS}
DATA_NOTE = (
    "procedural shapes (families.shapes.data.shapes): 16 classes = 4 shapes x 4 colours, 32x32 RGB, "
    "made on the fly"
)


@dataclass(frozen=True)
class Recipe:
    """A model kind with its defaults, its architecture config, its per-step loss and its metrics."""

    name: str
    kind: str
    filename: str
    architecture: Callable[..., nn.Module]
    config: dict[str, Any]
    smoke_config: dict[str, Any]
    loss: Callable[[nn.Module, ShapesDataset, int, int, torch.device], torch.Tensor]
    evaluate: Callable[[nn.Module, torch.device, int], dict[str, Any]]
    batch: int
    lr: float
    ema_decay: float
    data_seed: int
    extra_metadata: dict[str, Any] = field(default_factory=dict)
    notes: str = ""


def _step_generator(data: ShapesDataset, step: int) -> torch.Generator:
    # a second stream per step (noise levels, caption choice, augmentation), apart from the pictures'
    return torch.Generator().manual_seed((data.seed * 7_919 + step * 104_729 + 17) % (2**63))


@functools.cache
def _sigmas(device: torch.device) -> torch.Tensor:
    """The denoiser's σ table (T,), increasing, on ``device``."""
    return vp_sigmas(BETA_SCHEDULE, TIMESTEPS).to(device)


# --- denoiser -------------------------------------------------------------------------------------


def denoiser_loss(
    model: nn.Module, data: ShapesDataset, step: int, batch: int, device: torch.device
) -> torch.Tensor:
    assert isinstance(model, ShapesUNet)
    b = data.batch(step, batch, device)
    g = _step_generator(data, step)
    sigmas = _sigmas(device)
    t = torch.randint(0, len(sigmas), (batch,), generator=g).to(device)
    sigma = sigmas[t][:, None, None, None]
    noise = torch.randn_like(b.images)
    x = b.images + sigma * noise  # x = x0 + σ·n
    words = random_prompt_multi_hot(b.labels, g, null_prob=0.1, shape_only=0.15, colour_only=0.15)
    eps = model(x / (sigma**2 + 1).sqrt(), t.float(), model.encode_words(words))
    return F.mse_loss(eps.float(), noise)


@torch.no_grad()
def denoiser_metrics(model: nn.Module, device: torch.device, n: int) -> dict[str, Any]:
    """Held-out ε-MSE at a few timesteps, conditional (full caption) and unconditional."""
    assert isinstance(model, ShapesUNet)
    data = ShapesDataset(seed=10_001)
    b = data.batch(0, n, device)
    sigmas = _sigmas(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    noise = torch.randn(b.images.shape, generator=gen).to(device)
    out: dict[str, Any] = {"eps_mse_cond": {}, "eps_mse_uncond": {}}
    for t in (10, 100, 250, 500, 750, 990):
        sigma = sigmas[t]
        x_in = (b.images + sigma * noise) / (sigma**2 + 1).sqrt()
        c_noise = torch.full((n,), float(t), device=device)
        cond = model.encode_labels(b.labels)
        null = model.encode_prompts([""] * n)
        key = f"t={t} (sigma={sigma.item():.3g})"
        out["eps_mse_cond"][key] = round(F.mse_loss(model(x_in, c_noise, cond), noise).item(), 5)
        out["eps_mse_uncond"][key] = round(F.mse_loss(model(x_in, c_noise, null), noise).item(), 5)
    return out


# --- noise-aware classifier ----------------------------------------------------------------------


def noisy_classifier_loss(
    model: nn.Module, data: ShapesDataset, step: int, batch: int, device: torch.device
) -> torch.Tensor:
    b = data.batch(step, batch, device)
    g = _step_generator(data, step)
    sigmas = _sigmas(device)
    u = torch.rand(batch, generator=g)
    biased = torch.rand(batch, generator=g) < 0.5
    t = torch.where(biased, len(sigmas) * u**2, len(sigmas) * u).long().clamp(max=len(sigmas) - 1).to(device)
    sigma = sigmas[t]
    x = b.images + sigma[:, None, None, None] * torch.randn_like(b.images)
    return F.cross_entropy(model(x, sigma).float(), b.labels, label_smoothing=0.05)


CLASSIFIER_SIGMAS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)


@torch.no_grad()
def noisy_classifier_metrics(model: nn.Module, device: torch.device, n: int) -> dict[str, Any]:
    """Held-out accuracy (class, shape, colour) at fixed σ."""
    data = ShapesDataset(seed=10_002)
    b = data.batch(0, n, device)
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(b.images.shape, generator=gen).to(device)
    acc: dict[str, Any] = {}
    for s in CLASSIFIER_SIGMAS:
        sigma = torch.full((n,), s, device=device)
        pred = model(b.images + s * noise, sigma).argmax(-1)
        acc[f"sigma={s:g}"] = _accuracies(pred, b.labels)
    return {"accuracy_by_sigma": acc}


def _accuracies(pred: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    n_col = len(COLOURS)
    return {
        "class": round((pred == labels).float().mean().item(), 4),
        "shape": round((pred // n_col == labels // n_col).float().mean().item(), 4),
        "colour": round((pred % n_col == labels % n_col).float().mean().item(), 4),
    }


# --- CLIP ----------------------------------------------------------------------------------------


def clip_augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return augment(
        images, g, blur_prob=0.6, blur_max=3.0, fade_prob=0.6, fade_min=0.15, noise_prob=0.3, noise_max=0.2
    )


def clip_loss(
    model: nn.Module, data: ShapesDataset, step: int, batch: int, device: torch.device
) -> torch.Tensor:
    """Text→image: multi-positive InfoNCE over the batch (a caption is a positive of every image it
    describes). Image→text: softmax over all 16 full captions, 4 shape prompts and 4 colour prompts.

    (An in-batch image→text term alone can be met by matching colour-only captions, which are
    positives of every image of that colour, and teaches the image tower nothing about shape.)
    """
    assert isinstance(model, ShapesCLIP)
    b = data.batch(step, batch, device)
    g = _step_generator(data, step)
    images = clip_augment(b.images, g)
    words = random_prompt_multi_hot(b.labels, g, null_prob=0.0, shape_only=0.2, colour_only=0.2)  # (B, V)
    img = model.encode_image(images).float()  # (B, E)
    txt = model.encode_words(words).float()  # (B, E)
    scale = model.logit_scale.exp().clamp(max=100)
    logits = scale * img @ txt.T  # (B_img, B_txt)
    positive = (words[None, :, :] <= label_multi_hot(b.labels)[:, None, :]).all(-1)  # (B_img, B_txt)
    neg_inf = torch.finfo(logits.dtype).min
    t2i = torch.logsumexp(logits.masked_fill(~positive, neg_inf), 0) - torch.logsumexp(logits, 0)
    n_col = len(COLOURS)
    all_classes = torch.arange(len(CLASS_NAMES), device=device)
    full = model.encode_words(label_multi_hot(all_classes)).float()  # (K, E)
    eye = torch.eye(len(VOCAB), device=device)
    colours = model.encode_words(eye[:n_col]).float()  # (4, E)
    shapes = model.encode_words(eye[n_col:]).float()  # (4, E)
    i2t = (
        F.cross_entropy(scale * img @ full.T, b.labels)
        + F.cross_entropy(scale * img @ shapes.T, b.labels // n_col)
        + F.cross_entropy(scale * img @ colours.T, b.labels % n_col)
    ) / 3
    return (i2t - t2i.mean()) / 2


CLIP_ADV_EPS = 4.0  # L2 radius in [-1, 1] pixel units: RMS 0.07, far below a real colour or shape change


def clip_robust_loss(
    model: nn.Module, data: ShapesDataset, step: int, batch: int, device: torch.device
) -> torch.Tensor:
    """:func:`clip_loss` plus image→text cross-entropy (16 captions) on adversarial copies of the images.

    Each copy is one L2 gradient step of radius U(0, ε) against its own caption (fast adversarial training,
    Wong et al. 2020; Madry et al. 2018), so a small pixel change can no longer move the image
    embedding to another caption and the CLIP's input gradient has to follow colour and shape
    (Santurkar et al. 2019: gradients of robust models are perceptually aligned), which CLIP
    guidance relies on.
    """
    assert isinstance(model, ShapesCLIP)
    b = data.batch(step, batch, device)
    g = _step_generator(data, step + 1_000_003)
    images = clip_augment(b.images, g)
    captions = model.encode_words(label_multi_hot(torch.arange(len(CLASS_NAMES), device=device)))  # (K, E)
    scale = model.logit_scale.exp().clamp(max=100)

    def caption_loss(x: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            scale.detach() * model.encode_image(x).float() @ captions.detach().float().T, b.labels
        )

    eps = CLIP_ADV_EPS * torch.rand(batch, generator=g).to(device)  # (B,)
    adversarial = adversarial_l2(images, caption_loss, eps)  # (B, 3, H, W)
    adv = F.cross_entropy(scale * model.encode_image(adversarial).float() @ captions.float().T, b.labels)
    return (clip_loss(model, data, step, batch, device) + adv) / 2


@torch.no_grad()
def clip_metrics(model: nn.Module, device: torch.device, n: int) -> dict[str, Any]:
    """Zero-shot retrieval: image → the best of the 16 captions (and of 4 shape / 4 colour prompts)."""
    assert isinstance(model, ShapesCLIP)
    b = ShapesDataset(seed=10_003).batch(0, n, device)
    captions = model.encode_text([caption_for(k) for k in range(len(CLASS_NAMES))])
    shapes = model.encode_text([f"a {s}" for s in SHAPES])
    colours = model.encode_text(list(COLOURS))
    n_col = len(COLOURS)
    out: dict[str, Any] = {}
    for name, blur in (("clean", 0.0), ("blur_1.5px", 1.5), ("blur_3px", 3.0)):
        img = model.encode_image(gaussian_blur(b.images, torch.full((n,), blur, device=device)))
        out[f"retrieval_{name}"] = {
            "class": round(((img @ captions.T).argmax(-1) == b.labels).float().mean().item(), 4),
            "shape_prompt": round(
                ((img @ shapes.T).argmax(-1) == b.labels // n_col).float().mean().item(), 4
            ),
            "colour_prompt": round(
                ((img @ colours.T).argmax(-1) == b.labels % n_col).float().mean().item(), 4
            ),
        }
    out["retrieval_adversarial_l2_4"] = _adversarial_retrieval(model, b.images, b.labels, captions)
    out["logit_scale"] = round(model.logit_scale.exp().item(), 3)
    return out


def _adversarial_retrieval(
    model: ShapesCLIP, images: torch.Tensor, labels: torch.Tensor, captions: torch.Tensor
) -> float:
    """Caption retrieval after a one-step L2 attack of radius ``CLIP_ADV_EPS`` on every image."""
    scale = model.logit_scale.exp()
    eps = torch.full((len(images),), CLIP_ADV_EPS, device=images.device)

    def loss_of(x: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(scale * model.encode_image(x) @ captions.T, labels)

    adversarial = adversarial_l2(images, loss_of, eps)
    return round(
        ((model.encode_image(adversarial) @ captions.T).argmax(-1) == labels).float().mean().item(), 4
    )


# --- evaluator -----------------------------------------------------------------------------------


def evaluator_loss(
    model: nn.Module, data: ShapesDataset, step: int, batch: int, device: torch.device
) -> torch.Tensor:
    b = data.batch(step, batch, device)
    g = _step_generator(data, step)
    images = augment(
        b.images, g, blur_prob=0.3, blur_max=1.0, fade_prob=0.2, fade_min=0.7, noise_prob=0.5, noise_max=0.1
    )
    return F.cross_entropy(model(images).float(), b.labels)


@torch.no_grad()
def evaluator_metrics(model: nn.Module, device: torch.device, n: int) -> dict[str, Any]:
    b = ShapesDataset(seed=10_004).batch(0, n, device)
    gen = torch.Generator().manual_seed(2)
    noisy = b.images + 0.1 * torch.randn(b.images.shape, generator=gen).to(device)
    return {
        "accuracy_clean": _accuracies(model(b.images).argmax(-1), b.labels),
        "accuracy_noise_0.1": _accuracies(model(noisy).argmax(-1), b.labels),
    }


RECIPES: dict[str, Recipe] = {
    "denoiser": Recipe(
        name="denoiser",
        kind="denoiser",
        filename="checkpoints/shapes_unet.safetensors",
        architecture=ShapesUNet,
        config={
            "channels": [32, 64, 128, 128],
            "blocks_per_level": 2,
            "attention_levels": [2, 3],
            "emb_dim": 256,
        },
        smoke_config={
            "channels": [8, 16, 16, 16],
            "blocks_per_level": 1,
            "attention_levels": [3],
            "emb_dim": 32,
        },
        loss=denoiser_loss,
        evaluate=denoiser_metrics,
        batch=256,
        lr=4e-4,
        ema_decay=0.9995,
        data_seed=1,
        extra_metadata={"parametrization": "eps", "schedule": SCHEDULE, "null_condition": "empty prompt ''"},
        notes="Condition dropout: 10% null prompt, 15% shape word only, 15% colour word only, 60% both.",
    ),
    "noisy_classifier": Recipe(
        name="noisy_classifier",
        kind="noisy_classifier",
        filename="classifiers/shapes_noisy_classifier.safetensors",
        architecture=NoisyClassifier,
        config={"channels": [32, 64, 128, 256], "blocks_per_level": 2, "emb_dim": 128},
        smoke_config={"channels": [8, 8, 16, 16], "blocks_per_level": 1, "emb_dim": 16},
        loss=noisy_classifier_loss,
        evaluate=noisy_classifier_metrics,
        batch=256,
        lr=1e-3,
        ema_decay=0.999,
        data_seed=2,
        extra_metadata={
            "schedule": SCHEDULE,
            "input": "x = x0 + sigma*n (sampler sigma-space); scaled inside",
        },
        notes="Noise levels: half uniform in t, half t = T*u^2 (biased low); label smoothing 0.05.",
    ),
    "clip": Recipe(
        name="clip",
        kind="clip",
        filename="clip/shapes_clip.safetensors",
        architecture=ShapesCLIP,
        config={"channels": [32, 64, 128, 128], "blocks_per_level": 1, "embed_dim": 128},
        smoke_config={"channels": [8, 8, 16, 16], "blocks_per_level": 1, "embed_dim": 16},
        loss=clip_loss,
        evaluate=clip_metrics,
        batch=512,
        lr=1e-3,
        ema_decay=0.999,
        data_seed=3,
        notes="Text->image multi-positive InfoNCE in batch; image->text softmax over the 16 captions, "
        "4 shape and 4 colour prompts; "
        "captions 60% full, 20% shape only, 20% colour only; "
        "images 60% blurred (sigma<=3px), 60% faded (to 15-100% contrast), 30% noisy.",
    ),
    "clip_robust": Recipe(
        name="clip_robust",
        kind="clip",
        filename="clip/shapes_clip.safetensors",
        architecture=ShapesCLIP,
        config={"channels": [32, 64, 128, 128], "blocks_per_level": 1, "embed_dim": 128},
        smoke_config={"channels": [8, 8, 16, 16], "blocks_per_level": 1, "embed_dim": 16},
        loss=clip_robust_loss,
        evaluate=clip_metrics,
        batch=128,
        lr=1e-3,
        ema_decay=0.99,
        data_seed=5,
        notes="Fine-tuning for guidance: the clip recipe's loss plus image->text cross-entropy on "
        f"adversarial copies (one L2 gradient step of radius U(0, {CLIP_ADV_EPS}) per image against its "
        "caption), so that the CLIP's input gradient follows colour and shape instead of pixel noise.",
    ),
    "evaluator": Recipe(
        name="evaluator",
        kind="evaluator",
        filename="evaluators/shapes_evaluator.safetensors",
        architecture=Evaluator,
        config={"channels": [24, 48, 96, 128], "blocks_per_level": 1},
        smoke_config={"channels": [8, 8, 8, 8], "blocks_per_level": 1},
        loss=evaluator_loss,
        evaluate=evaluator_metrics,
        batch=256,
        lr=1e-3,
        ema_decay=0.999,
        data_seed=4,
        notes="Clean images, mild augmentation (noise<=0.1, blur<=1px, slight fade); never guides.",
    ),
}
# Autoguidance's guiding model (Karras et al. 2024): the denoiser's task, data and condition dropout in a
# smaller network trained far shorter, so its errors are a worse version of the shipped one's.
RECIPES["denoiser_small"] = replace(
    RECIPES["denoiser"],
    name="denoiser_small",
    filename="checkpoints/shapes_unet_small.safetensors",
    config={"channels": [16, 32, 64, 64], "blocks_per_level": 1, "attention_levels": [3], "emb_dim": 128},
    batch=64,
    lr=5e-4,
    ema_decay=0.999,
    notes=RECIPES["denoiser"].notes + " The weak guiding model for autoguidance: 1/6 of the "
    "parameters, trained on a small fraction of the examples.",
)


def lr_at(base: float, step: int, progress: float, warmup: int = 500) -> float:
    """Linear warm-up, then cosine decay to 10% over the run (progress = max of steps and time used)."""
    warm = min(1.0, (step + 1) / warmup)
    return base * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
