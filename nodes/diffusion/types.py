"""The values that flow between nodes (besides GUIDANCE, which lives in ``guidance.py``).

| socket        | Python value                                                        |
|---------------|---------------------------------------------------------------------|
| MODEL         | :class:`nodes.diffusion.conventions.Denoiser` (compares by identity) |
| CLIP          | :class:`TextEncoder`: prompts → CONDITIONING (ComfyUI's CLIP)      |
| VAE           | :class:`VAE`: pixels ↔ the model's latent space                    |
| CONDITIONING  | :class:`Conditioning` (compares by meaning and embedding content)   |
| CLASSIFIER    | :class:`Classifier` (identity)                                      |
| CLIP_MODEL    | :class:`Clip`: an image-text model for CLIP-loss guidance (identity) |
| IMAGE_CLASSIFIER | :class:`ImageClassifier`: clean-image logits, for universal guidance |
| LATENT        | :class:`Latent`: samples (B, C, H, W) in the model's latent space   |
| IMAGE         | a float tensor (B, H, W, C) in [0, 1], ComfyUI's convention        |
| SIGMAS        | a float tensor (n + 1,) ending in 0                                 |
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

IMAGE_LATENT = "image_latent"  # a Conditioning extra: the latent of an image to edit (InstructPix2Pix)


def tensor_digest(t: torch.Tensor) -> str:
    """A content hash of a tensor (shape, dtype and bytes), so equal values compare equal."""
    data = t.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha1(str(tuple(data.shape)).encode())
    h.update(data.numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Conditioning:
    """One condition for a model: an embedding plus what it means, hashed by content.

    ``embedding`` is what the network attends to: a vector (D,) for the shapes models, token
    embeddings (T, D) for Stable Diffusion (T = 77·chunks). ``extras`` are further per-condition
    tensors the network takes, flattened (SDXL: ``pooled`` (P,) and ``time_ids`` (6,); InstructPix2Pix:
    :data:`IMAGE_LATENT`, the edited image's latent in the LATENT convention, (C·H·W,)). ``meaning``
    says in words what it is ('prompt "a red circle"', 'null: empty prompt'); ``encoder`` names the
    text encoder that made it, so a condition is never fed to a model of another encoder unnoticed.
    Two conditions with the same bytes, meaning and encoder are the same leaf in a GUIDANCE program.
    """

    meaning: str
    digest: str
    embedding: torch.Tensor = field(compare=False, repr=False)  # (D,) or (T, D)
    extras: tuple[tuple[str, torch.Tensor], ...] = field(default=(), compare=False, repr=False)
    encoder: str = ""

    @staticmethod
    def of(
        embedding: torch.Tensor,
        meaning: str,
        extras: Mapping[str, torch.Tensor] | None = None,
        encoder: str = "",
    ) -> Conditioning:
        emb = embedding.detach()
        emb = emb.reshape(-1) if emb.ndim != 2 else emb  # (D,) or (T, D)
        more = tuple((k, v.detach().reshape(-1)) for k, v in sorted((extras or {}).items()))
        digest = hashlib.sha1(
            "".join([tensor_digest(emb), *(k + tensor_digest(v) for k, v in more)]).encode()
        ).hexdigest()
        return Conditioning(meaning=meaning, digest=digest, embedding=emb, extras=more, encoder=encoder)

    def with_tensors(self, meaning: str, **tensors: torch.Tensor) -> Conditioning:
        """A copy with some tensors replaced (``embedding`` or an extra), e.g. zeroed for a null."""
        extras = dict(self.extras)
        embedding = tensors.pop("embedding", self.embedding)
        extras.update(tensors)
        return Conditioning.of(embedding, meaning, extras, self.encoder)


def batch_conditions(
    conditions: Sequence[Conditioning], batch: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Stack conditions for one batched forward, each repeated ``batch`` times (condition-major).

    Vectors give (k·B, D). Token embeddings of different lengths (long prompts are 77·n tokens) are
    repeated to their least common multiple, as ComfyUI does, giving (k·B, T, D). With extras the
    result is a dict: ``context`` plus each extra, (k·B, ...); a condition without an extra that
    others carry gets NaN rows there, which the network reads as "use your default".
    """
    embs = [c.embedding.to(device, dtype) for c in conditions]
    if embs[0].ndim == 2:
        length = math.lcm(*(e.shape[0] for e in embs))
        embs = [e.repeat(length // e.shape[0], 1) for e in embs]  # (T, D) each
    context = torch.cat([e.expand(batch, *e.shape) for e in embs])  # (k·B, [T,] D)
    names = sorted({name for c in conditions for name, _ in c.extras})
    if not names:
        return context
    out = {"context": context}
    for name in names:
        parts = [dict(c.extras).get(name) for c in conditions]
        width = next(p.shape[-1] for p in parts if p is not None)
        rows = [
            (p if p is not None else torch.full((width,), float("nan"))).to(device, dtype).expand(batch, -1)
            for p in parts
        ]
        out[name] = torch.cat(rows)  # (k·B, width); NaN rows: "the network's default"
    return out


class TextEncoder(Protocol):
    """A model's text encoder (socket CLIP, as ComfyUI calls it): prompts and class labels → CONDITIONING."""

    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names of class-conditional models, else ()."""
        ...

    @property
    def null_label(self) -> int | None:
        """The extra "no class" index of models that have one."""
        ...

    def encode_text(self, text: str, clip_skip: int = 0) -> Conditioning:
        """A prompt → its condition; ``clip_skip`` layers dropped before the model's default layer."""
        ...

    def encode_label(self, index: int) -> Conditioning:
        """A class index → its condition (class-conditional models only)."""
        ...


class VAE(Protocol):
    """Pixels ↔ latents. Pixels (B, 3, H, W) in [-1, 1]; latents (B, C, H/f, W/f), f = ``downscale``."""

    @property
    def name(self) -> str: ...

    @property
    def latent_channels(self) -> int: ...

    @property
    def downscale(self) -> int: ...

    def encode(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True, eq=False)
class Classifier:
    """A noise-aware classifier: ``module(x, σ) → logits (B, K)`` in the sampler's σ-space coordinates."""

    module: torch.nn.Module
    labels: tuple[str, ...]
    name: str = ""

    def label_index(self, label: str) -> int:
        """A class name (case-insensitive) or a decimal index → index; fails listing the choices."""
        return _label_index(label, self.labels, self.name)


@dataclass(frozen=True, eq=False)
class Clip:
    """An image-text model (socket CLIP_MODEL) for CLIP-loss guidance.

    ``encode_image(pixels in [-1, 1])`` and ``encode_text(list)`` → (B, E), normalised.
    """

    module: torch.nn.Module
    name: str = ""

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] → (B, E) unit vectors."""
        encode: Callable[[torch.Tensor], torch.Tensor] = getattr(self.module, "encode_image")  # noqa: B009
        return encode(images)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Prompts → (B, E) unit vectors."""
        encode: Callable[[list[str]], torch.Tensor] = getattr(self.module, "encode_text")  # noqa: B009
        return encode(prompts)


@dataclass(frozen=True, eq=False)
class ImageClassifier:
    """A differentiable classifier of clean images: ``module(x0 in [-1, 1]) → logits (B, K)`` (the
    stand-in for any image network universal guidance steers with: a detector, a segmenter, a face
    model)."""

    module: torch.nn.Module
    labels: tuple[str, ...]
    name: str = ""

    def label_index(self, label: str) -> int:
        """A class name (case-insensitive) or a decimal index → index; fails listing the choices."""
        return _label_index(label, self.labels, self.name)


@dataclass(frozen=True, eq=False)
class Latent:
    """Samples (B, C, H, W) in the model's latent space (pixels for pixel-space models).

    ``noise_mask`` (B or 1, 1, H, W): 1 = regenerate, 0 = keep.

    ``batch_index`` gives each sample's seed offset (``seed + batch_index[i]``), so a sample taken out
    of a batch keeps its noise.
    """

    samples: torch.Tensor
    noise_mask: torch.Tensor | None = None
    batch_index: tuple[int, ...] | None = None

    def seed_offsets(self) -> tuple[int, ...]:
        return self.batch_index or tuple(range(self.samples.shape[0]))


def _label_index(label: str, labels: tuple[str, ...] | list[str], owner: str) -> int:
    text = label.strip()
    lowered = [name.lower() for name in labels]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if text.isdigit() and int(text) < len(labels):
        return int(text)
    raise ValueError(
        f"{owner or 'model'}: unknown class {label!r}; expected one of {list(labels)} or an index"
    )


label_index = _label_index
