"""Small analytic fakes for the node-library tests: exact Gaussian denoisers, a mixture classifier, a CLIP.

Gaussian data x0 ~ N(m, s²·I) has the exact denoiser D(x, σ) = m + s²/(s² + σ²)·(x − m), so samplers
and guidance rules can be checked against closed forms. The fake networks speak the models contract:
``network(c_in·x, t, cond) → raw`` for a discrete VP eps/v/x0 model.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from nodes.diffusion.conventions import Denoiser, t_to_sigma, vp_sigmas
from nodes.diffusion.types import Classifier, Clip, Conditioning

CHANNELS, SIZE, EMBED = 3, 8, 4
WORDS = {"": 0, "red": 1, "green": 2, "blue": 3}


def embed_prompt(prompt: str) -> torch.Tensor:
    """'red' → one-hot (D,); '' → zeros (the null condition); several words add up."""
    out = torch.zeros(EMBED)
    for word in prompt.split():
        out[WORDS[word]] += 1.0
    return out


class GaussianNet(nn.Module):
    """The exact denoiser of x0 ~ N(m(cond), s²) as a discrete VP network; counts its forwards.

    m(cond) = offset + cond[:, 1:4] per channel: the null embedding gives the unconditional mean.
    """

    def __init__(self, parametrization: str = "eps", std: float = 0.5, offset: float = 0.0):
        super().__init__()
        self.parametrization, self.std, self.offset = parametrization, std, offset
        self.table = vp_sigmas("linear", 1000)
        self.calls: list[int] = []  # rows per forward
        self.labels = ["red", "green", "blue"]

    def mean(self, cond: torch.Tensor) -> torch.Tensor:
        return (self.offset + cond[:, 1:4])[:, :, None, None]  # (B, C, 1, 1)

    def forward(self, x_in: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        self.calls.append(x_in.shape[0])
        sigma = t_to_sigma(t, self.table).to(x_in.dtype)[:, None, None, None]  # (B, 1, 1, 1)
        alpha = (sigma**2 + 1).rsqrt()
        x = x_in / alpha
        m = self.mean(cond)
        x0 = m + self.std**2 / (self.std**2 + sigma**2) * (x - m)
        eps = (x - x0) / sigma
        if self.parametrization == "eps":
            return eps
        if self.parametrization == "x0":
            return x0
        return alpha * eps - sigma * alpha * x0  # v

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        return torch.stack([embed_prompt(p) for p in prompts])

    def encode_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.stack([embed_prompt(self.labels[int(i)]) for i in labels])


class MixtureNet(nn.Module):
    """Exact unconditional eps-denoiser of an equal mixture of N(μ_k, s²·I), μ_k = ±a per pixel."""

    def __init__(self, means: tuple[float, ...] = (-1.0, 1.0), std: float = 0.3):
        super().__init__()
        self.means, self.std = means, std
        self.table = vp_sigmas("linear", 1000)
        self.calls: list[int] = []

    def forward(self, x_in: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        self.calls.append(x_in.shape[0])
        sigma = t_to_sigma(t, self.table).to(x_in.dtype)[:, None, None, None]
        x = x_in * (sigma**2 + 1).sqrt()
        var = self.std**2 + sigma**2
        logits = mixture_logits(x, sigma.flatten(), self.means, self.std)  # (B, K)
        weights = logits.softmax(-1)[:, :, None, None, None]  # (B, K, 1, 1, 1)
        mus = torch.tensor(self.means, dtype=x.dtype)[None, :, None, None, None]
        x0 = (weights * (mus + self.std**2 / var[:, None] * (x[:, None] - mus))).sum(1)
        return (x - x0) / sigma


def mixture_logits(
    x: torch.Tensor, sigma: torch.Tensor, means: tuple[float, ...], std: float
) -> torch.Tensor:
    """log N(x; μ_k, (s² + σ²)·I) up to a shared constant: the exact noise-aware classifier."""
    var = std**2 + sigma**2  # (B,)
    return torch.stack([-((x - m) ** 2).flatten(1).sum(1) / (2 * var) for m in means], dim=1)


class MixtureClassifier(nn.Module):
    def __init__(self, means: tuple[float, ...] = (-1.0, 1.0), std: float = 0.3):
        super().__init__()
        self.means, self.std = means, std
        self.calls = 0
        self.labels = ["low", "high"]

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return mixture_logits(x, sigma, self.means, self.std)


class ChannelClip(nn.Module):
    """encode_image = normalised per-channel means (+1 bias dim); encode_text('red') = e_red."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        feats = torch.cat([x.mean(dim=(2, 3)), torch.ones_like(x[:, :1, 0, 0])], dim=1)  # (B, 4)
        return feats / feats.norm(dim=1, keepdim=True)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        out = torch.stack(
            [embed_prompt(p)[[1, 2, 3, 0]] + 0.3 * torch.tensor([0, 0, 0, 1.0]) for p in prompts]
        )
        return out / out.norm(dim=1, keepdim=True)


def make_denoiser(net: nn.Module, parametrization: str = "eps", name: str = "fake") -> Denoiser:
    return Denoiser(net, parametrization, vp_sigmas("linear", 1000), discrete=True, name=name)


def condition(model: Denoiser, prompt: str) -> Conditioning:
    return Conditioning.of(embed_prompt(prompt), f"prompt {prompt!r}")


@pytest.fixture
def gaussian() -> Callable[..., Denoiser]:
    def build(parametrization: str = "eps", std: float = 0.5, offset: float = 0.0) -> Denoiser:
        return make_denoiser(GaussianNet(parametrization, std, offset), parametrization)

    return build


@pytest.fixture
def mixture() -> tuple[Denoiser, Classifier]:
    return make_denoiser(MixtureNet(), name="mixture"), Classifier(
        MixtureClassifier(), ("low", "high"), "mix"
    )


@pytest.fixture
def clip() -> Clip:
    return Clip(ChannelClip(), "channel-clip")


@pytest.fixture
def cond() -> Callable[[Denoiser, str], Conditioning]:
    return condition


TINY_UNET = {"channels": [8, 16], "blocks_per_level": 1, "attention_levels": [], "emb_dim": 32, "heads": 1}
TINY_ENCODER = {"channels": [8, 8, 8, 8], "blocks_per_level": 1}


def write_tiny_models(tmp_path: Path) -> str:
    """Tiny real networks (random weights) as safetensors in model folders; returns GUIDEGRAPH_MODEL_DIRS."""
    from families.shapes.networks import NoisyClassifier, ShapesUNet, save_network
    from families.shapes.networks.clip import ShapesCLIP

    torch.manual_seed(0)
    root = tmp_path / "models"
    unet = ShapesUNet(**TINY_UNET)
    schedule = {"type": "discrete_vp", "beta_schedule": "linear", "timesteps": 1000}
    meta = {"kind": "denoiser", "config": TINY_UNET, "parametrization": "eps", "schedule": schedule}
    save_network(unet, root / "checkpoints" / "tiny.safetensors", meta, half=False)
    labels = list(unet.labels)
    classifier = NoisyClassifier(**TINY_ENCODER, emb_dim=16)
    cmeta = {"kind": "noisy_classifier", "config": dict(TINY_ENCODER, emb_dim=16), "labels": labels}
    save_network(classifier, root / "classifiers" / "tiny_cls.safetensors", cmeta, half=False)
    clip = ShapesCLIP(**TINY_ENCODER, embed_dim=16)
    clip_meta = {"kind": "clip", "config": dict(TINY_ENCODER, embed_dim=16)}
    save_network(clip, root / "clip" / "tiny_clip.safetensors", clip_meta)
    (root / "checkpoints" / "old.ckpt").write_bytes(b"\x80\x04K\x01.")  # a pickle
    (tmp_path / "input").mkdir(exist_ok=True)
    kinds = ("checkpoints", "classifiers", "clip")
    dirs = [f"{k}={root / k}" for k in kinds] + [f"input={tmp_path / 'input'}"]
    return os.pathsep.join(dirs)


@pytest.fixture
def model_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary root with tiny models in ``models/<kind>`` and an ``input`` folder, registered."""
    monkeypatch.setenv("GUIDEGRAPH_MODEL_DIRS", write_tiny_models(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def unet() -> Denoiser:
    """A tiny random shapes UNet with self-attention at its second level and non-zero residual
    branches, for the tests of attention perturbations (PAG, SEG, SAG)."""
    from families.shapes.networks import ShapesUNet

    torch.manual_seed(0)
    net = ShapesUNet(channels=[8, 16], blocks_per_level=1, attention_levels=[1], emb_dim=32, heads=2)
    for param in net.parameters():  # residual branches start at zero; give them weight so they matter
        if param.ndim > 1 and not param.any():
            torch.nn.init.normal_(param, std=0.2)
    return Denoiser(net.eval(), "eps", vp_sigmas("linear", 1000), name="tiny", encoder="tiny")
