"""Gradient (energy) guidance rules: terms ``D' = D + s·σ²·g`` with g a gradient with respect to x.

Both rules switch autograd on locally (``torch.enable_grad``) on a fresh leaf tensor, so they work
inside a sampler that otherwise runs without grad; nothing here needs a global mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from nodes.diffusion.conventions import add_score, append_dims
from nodes.diffusion.guidance import Guidance, Step
from nodes.diffusion.types import VAE, Classifier, Clip, Conditioning, ImageClassifier


@dataclass(frozen=True)
class ClassifierGradient(Guidance):
    """Classifier guidance (Dhariwal & Nichol 2021, Alg. 2 / ``condition_score``).

    ``D' = D + s·σ²·∇ₓ log p_φ(y | x, σ)`` with a noise-aware classifier taking x in σ-space; the
    gradient goes through the classifier only, never through the denoiser.
    """

    space: ClassVar[str] = "gradient"
    inner: Guidance
    classifier: Classifier
    label: int
    scale: float

    def children(self) -> tuple[Guidance, ...]:
        return (self.inner,)

    def passthrough(self) -> Guidance:
        return self.inner

    def apply(self, inputs: list[torch.Tensor], step: Step) -> torch.Tensor:
        with torch.enable_grad():
            x = step.x.detach().requires_grad_()
            logits = self.classifier.module(x, step.sigma)  # (B, K)
            log_p = torch.log_softmax(logits.float(), dim=-1)[:, self.label].sum()
            (grad,) = torch.autograd.grad(log_p, x)
        return add_score(inputs[0], step.sigma, grad.to(inputs[0].dtype), self.scale)


def spherical_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance between unit vectors: 2·arcsin(‖a − b‖/2)² (Crowson's CLIP loss)."""
    return 2 * torch.arcsin((a - b).norm(dim=-1) / 2).pow(2)


def contrastive_clip_loss(image: torch.Tensor, texts: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """Zero-shot classifier loss ``−log softmax_i(τ·⟨img, txtᵢ⟩)[0]`` per image (Radford et al. 2021, §3.1.4).

    ``image`` (B, E) and ``texts`` (N, E) are unit vectors, row 0 of ``texts`` the target and the rest
    the contrast prompts; τ = ``logit_scale``. Its gradient in the image embedding is
    ``−τ·(t₀ − Σᵢ pᵢ·tᵢ)``: it points from the probability-weighted alternatives to the target and fades
    as p₀ → 1, where the spherical distance keeps pulling. Returns (B,).
    """
    logits = logit_scale * image @ texts.T  # (B, N)
    return -torch.log_softmax(logits.float(), dim=-1)[:, 0]


def make_cutouts(
    images: torch.Tensor, count: int, generators: list[torch.Generator], augment: bool, min_size: float = 0.5
) -> torch.Tensor:
    """``count`` random square crops per sample, resized back to (H, W); per-sample seeded.

    Sample b draws its crop sizes, offsets (and flips when ``augment``) from ``generators[b]`` only,
    so its cutouts do not depend on the batch. ``count = 0`` returns the images themselves.
    """
    if count == 0:
        return images
    b = images.shape[0]
    draws = torch.stack([torch.rand(count, 4, generator=g) for g in generators[:b]])  # (B, K, 4)
    draws = draws.to(images.device, images.dtype).reshape(b * count, 4)  # (B·K, 4)
    size = min_size + (1 - min_size) * draws[:, 0]  # side as a fraction of the image
    tx, ty = (2 * draws[:, 1] - 1) * (1 - size), (2 * draws[:, 2] - 1) * (1 - size)
    flip = torch.where((draws[:, 3] < 0.5) & augment, -1.0, 1.0).to(images.dtype)
    theta = torch.zeros(b * count, 2, 3, device=images.device, dtype=images.dtype)  # (B·K, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = size * flip, tx
    theta[:, 1, 1], theta[:, 1, 2] = size, ty
    source = images.repeat_interleave(count, dim=0)  # (B·K, C, H, W)
    grid = F.affine_grid(theta, list(source.shape), align_corners=False)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


@dataclass(frozen=True)
class ClipGradient(Guidance):
    """CLIP-loss guidance on the predicted x0 (k-diffusion ``sample_clip_guided``; Disco-style cond_fn).

    ``L = mean_cutouts ℓ(E_img(cut(x̂0)))`` summed over the batch, ``g = −∇ₓ L`` and ``D' = D + s·σ²·g``.
    Without ``contrast``, ``ℓ = sphdist(·, E_txt)`` (Crowson's spherical distance); with contrast
    prompts, ``ℓ = −log softmax_i(τ·⟨·, tᵢ⟩)[target]`` over the target and the contrast embeddings
    (:func:`contrastive_clip_loss`, the CLIP as a zero-shot classifier; τ = ``logit_scale``), whose
    gradient fades once the target wins, like classifier guidance's.

    ``through_denoiser`` back-propagates through D (the full Jacobian); otherwise the gradient is taken
    at the detached x̂0 and mapped to x with ∂x̂0/∂x ≈ I/(1 + σ²), the Jacobian of the exact denoiser of
    unit-variance Gaussian data (cheaper, cruder). ``grad_clamp > 0`` caps the per-sample RMS of g,
    ``shift_clamp > 0`` the per-sample RMS of the x̂0 shift s·σ²·g. Cutouts and flips are drawn per
    sample from the run's seed.
    """

    space: ClassVar[str] = "gradient"
    inner: Guidance
    clip: Clip
    text: Conditioning
    scale: float
    cutouts: int
    augment: bool
    through_denoiser: bool
    grad_clamp: float
    contrast: tuple[Conditioning, ...]
    logit_scale: float
    shift_clamp: float
    vae: VAE | None
    decode_scale: float

    def grads_through_denoiser(self) -> bool:
        return self.through_denoiser

    def children(self) -> tuple[Guidance, ...]:
        return (self.inner,)

    def passthrough(self) -> Guidance:
        return self.inner

    def apply(self, inputs: list[torch.Tensor], step: Step) -> torch.Tensor:
        denoised = inputs[0]
        with torch.enable_grad():
            if self.through_denoiser and step.x_grad is not None and denoised.requires_grad:
                x0, wrt = denoised, step.x_grad
            else:
                x0 = wrt = denoised.detach().requires_grad_()
            b = x0.shape[0]
            pixels = self.pixels(x0)  # (B, 3, H, W) in [-1, 1]
            cuts = make_cutouts(pixels, self.cutouts, step.generators, self.augment)  # (B·K, C, H, W)
            image = self.clip.encode_image(cuts)  # (B·K, E)
            text = self.text.embedding.to(image.device, image.dtype)  # (E,)
            if self.contrast:
                texts = torch.stack([text, *(c.embedding.to(text) for c in self.contrast)])  # (N, E)
                per_cut = contrastive_clip_loss(image, texts, self.logit_scale)  # (B·K,)
            else:
                per_cut = spherical_distance(image, text[None])  # (B·K,)
            loss = per_cut.reshape(b, -1).mean(dim=1).sum()
            (grad,) = torch.autograd.grad(loss, wrt, retain_graph=wrt is step.x_grad)
        grad = -grad.detach()
        if wrt is not step.x_grad:
            # Detached x̂0: ∇ₓL = (∂x̂0/∂x)ᵀ∇_{x̂0}L with the Jacobian approximated by that of the exact
            # denoiser of unit-variance Gaussian data, 1/(1 + σ²)·I (identity would blow up as σ² grows).
            grad = grad / (1 + append_dims(step.sigma, grad.ndim).to(grad.dtype) ** 2)
        if self.grad_clamp > 0:
            rms = append_dims(grad.flatten(1).pow(2).mean(dim=1).sqrt(), grad.ndim)  # (B, 1, 1, 1)
            grad = grad * rms.clamp(max=self.grad_clamp) / rms.clamp(min=1e-12)
        shift = add_score(torch.zeros_like(grad), step.sigma, grad, self.scale)  # s·σ²·g, (B, C, H, W)
        if self.shift_clamp > 0:
            rms = append_dims(shift.flatten(1).pow(2).mean(dim=1).sqrt(), shift.ndim)  # (B, 1, 1, 1)
            shift = shift * rms.clamp(max=self.shift_clamp) / rms.clamp(min=1e-12)
        return denoised + shift.to(denoised.dtype)

    def pixels(self, x0: torch.Tensor) -> torch.Tensor:
        """x̂0 as the CLIP sees it: decoded by the VAE (checkpointed, optionally downsampled) if any."""
        if self.vae is None:
            return x0
        if self.decode_scale < 1:
            x0 = F.interpolate(x0, scale_factor=self.decode_scale, mode="bilinear", antialias=True)
        return checkpoint(self.vae.decode, x0, use_reentrant=False)


def clip_logit_scale(clip: Clip) -> float:
    """τ of a CLIP: ``exp(module.logit_scale)`` when the module has one, else 100 (OpenAI CLIP's cap)."""
    raw = getattr(clip.module, "logit_scale", None)
    return float(torch.as_tensor(raw).detach().float().exp()) if raw is not None else 100.0


@dataclass(frozen=True)
class UniversalGradient(Guidance):
    """Universal guidance (Bansal et al. 2023, "Universal Guidance for Diffusion Models", Alg. 1) with
    the loss ``ℓ = −log softmax(f(x̂0))[label]`` of a clean-image network f.

    Forward guidance ``ε' = ε + s·√(1−ᾱ)·∇_z ℓ`` is, in σ-space, ``D' = D − s·σ²·∇ₓ ℓ(f(D(x)))``,
    back-propagated through the denoiser (skipped at s = 0). Backward guidance then takes
    ``backward_steps`` gradient steps of size ``backward_lr`` on ``Δ`` minimising ``ℓ(f(D' + Δ))`` from
    Δ = 0, without the denoiser, and returns ``D' + Δ`` (the paper's ``ε' = ε − (α/√(1−ᾱ))·Δ``).
    Per sample (the loss is summed over the batch). The paper's self-recurrence (re-noise and repeat
    a step k times) is a sampler loop, the Sampler's ``recurrence`` input
    (:mod:`nodes.diffusion.recurrence`), not part of this rule. Neutral: s = 0, no backward steps.
    """

    space: ClassVar[str] = "gradient"
    inner: Guidance
    network: ImageClassifier
    label: int
    scale: float
    backward_steps: int
    backward_lr: float

    def grads_through_denoiser(self) -> bool:
        return self.scale != 0

    def children(self) -> tuple[Guidance, ...]:
        return (self.inner,)

    def passthrough(self) -> Guidance:
        return self.inner

    def loss(self, x0: torch.Tensor) -> torch.Tensor:
        """Summed over the batch, so each sample's gradient is its own."""
        return -torch.log_softmax(self.network.module(x0).float(), dim=-1)[:, self.label].sum()

    def apply(self, inputs: list[torch.Tensor], step: Step) -> torch.Tensor:
        denoised = out = inputs[0]  # kept in the graph for rules above that back-propagate
        if self.scale != 0 and step.x_grad is not None and denoised.requires_grad:
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(self.loss(denoised), step.x_grad, retain_graph=True)
            out = add_score(out, step.sigma, -grad.detach().to(out.dtype), self.scale)
        if self.backward_steps > 0:
            start, delta = out.detach(), torch.zeros_like(out)
            with torch.enable_grad():
                for _ in range(self.backward_steps):
                    delta = delta.detach().requires_grad_()
                    (g,) = torch.autograd.grad(self.loss(start + delta), delta)
                    delta = delta - self.backward_lr * g
            out = out + delta.detach()
        return out
