"""The values that flow between nodes (besides GUIDANCE, which lives in ``guidance.py``).

| socket        | Python value                                                        |
|---------------|---------------------------------------------------------------------|
| MODEL         | :class:`nodes.diffusion.conventions.Denoiser` (compares by identity) |
| CONDITIONING  | :class:`Conditioning` (compares by meaning and embedding content)   |
| CLASSIFIER    | :class:`Classifier` (identity)                                      |
| CLIP          | :class:`Clip` (identity)                                            |
| LATENT        | :class:`Latent`: samples (B, C, H, W) in the model's data space     |
| IMAGE         | a float tensor (B, H, W, C) in [0, 1], ComfyUI's convention        |
| SIGMAS        | a float tensor (n + 1,) ending in 0                                 |
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


def tensor_digest(t: torch.Tensor) -> str:
    """A content hash of a tensor (shape, dtype and bytes), so equal values compare equal."""
    data = t.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha1(str(tuple(data.shape)).encode())
    h.update(data.numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Conditioning:
    """One condition for a model: an embedding (D,) plus what it means, hashed by content.

    ``meaning`` says in words what it is ('prompt "a red circle"', 'class 3 "red circle"',
    'null: empty prompt', 'null: zeroed embedding'); two conditions with the same embedding bytes and
    meaning are the same leaf in a GUIDANCE program.
    """

    meaning: str
    digest: str
    embedding: torch.Tensor = field(compare=False, repr=False)  # (D,)

    @staticmethod
    def of(embedding: torch.Tensor, meaning: str) -> Conditioning:
        emb = embedding.detach().reshape(-1)  # (D,)
        return Conditioning(meaning=meaning, digest=tensor_digest(emb), embedding=emb)


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
    """An image-text model: ``encode_image(x0 in [-1, 1])`` and ``encode_text(list)`` → (B, E), normalised."""

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
class Latent:
    """Samples (B, C, H, W) in data space; ``noise_mask`` (B or 1, 1, H, W): 1 = regenerate, 0 = keep.

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
