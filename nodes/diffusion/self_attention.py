"""Self-attention guidance (SAG; Hong, Lee, Jang & Kim 2023, "Improving Sample Quality of Diffusion
Models Using Self-Attention Guidance", ICCV): blur what the network attends to, and guide away from it.

With D = D(x, σ, c) the prediction of the chosen condition (the unconditional one next to CFG, as the
paper's CFG combination and diffusers do) and A its self-attention map in one layer (the UNet's mid
block), all per sample:

    M  = [mean over heads, sum over queries of A > ψ]   which keys are attended more than average
    x̃0 = M·blur(D) + (1 − M)·D                          Gaussian blur, kernel 9, std σ_b
    x̃  = x̃0 + (x − D)                                   re-noised with D's own noise estimate
    ε form (paper):  ε̃ = ε_G + s·(ε(x) − ε(x̃))
    x0 form (here):  D̃ = D_G + s·(x̃0 − D(x̃, σ, c))

The two forms are the same rule: with ε(y) = (y − D(y))/σ, ε(x) − ε(x̃) = (D(x̃) − x̃0)/σ, and an ε
term e enters x0 as −σ·e. In the program it is ``Difference(G, D, D̂, s)``, D̂ being the second-phase
leaf :class:`SelfAttentionBlurred` whose value is D(x̃) + (x − x̃), the x0 prediction at x with the
noise estimate ε(x̃). D̂'s input needs D and A from the first forward, so SAG costs a second batched
forward per step (SAG + CFG: [c, u] then [x̃]); every SAG leaf of a model shares it.

Where the peers differ. diffusers' ``StableDiffusionSAGPipeline`` computes x̂0 and the re-noising with
the DDIM formulas, so it refuses schedulers with non-integer timesteps; here both are in σ-space and
hold for every sampler. It degrades the conditional prediction when ``guidance_scale ≤ 1`` (its CFG
gate) and the unconditional one otherwise; here the node's condition says which. ComfyUI's
``SelfAttentionGuidance`` defaults to s = 0.5 and σ_b = 2.0 (diffusers: 0.75 and 1.0, as here) and
skips SAG when the latent's smaller side is 4 or less; its x0-form arithmetic equals the above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nodes.diffusion.guidance import Difference, Guidance, Prediction, SecondPhaseLeaf
from nodes.diffusion.perturbation import check_layers, gaussian_blur, matching_layers, perturbable_layers

KERNEL = 9  # the blur's side (paper's code, diffusers and ComfyUI)


class AttentionRecorder:
    """Records, for the rows it is installed on, how much attention each key position of one
    self-attention layer receives: softmax(q·kᵀ/√d) averaged over heads and summed over queries,
    (rows, H·W); the mean over positions is 1. It returns the plain attention, so the forward is
    unchanged. A batch split in chunks calls it once per chunk, in row order."""

    def __init__(self, layer: str) -> None:
        self.layers = (layer,)
        self.pieces: list[torch.Tensor] = []
        self.grid: tuple[int, int] = (0, 0)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor:
        """q, k, v (B, heads, H·W, d) → the plain attention output, recording the map on the way."""
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)  # (B, heads, N, N)
        self.pieces.append(probs.detach().mean(dim=1).sum(dim=1))  # (B, N): attention received
        self.grid = size
        return probs @ v

    def received(self) -> torch.Tensor:
        """The recorded map (B, 1, H, W) on the layer's grid."""
        if not self.pieces:
            raise RuntimeError(f"no self-attention map was recorded at layer {self.layers[0]!r}")
        received = torch.cat(self.pieces)  # (B, N)
        return received.reshape(received.shape[0], 1, *self.grid)


def blur_mask(received: torch.Tensor, size: tuple[int, int], threshold: float) -> torch.Tensor:
    """M: 1 where a position receives more than ``threshold`` attention, nearest-upsampled to ``size``."""
    return F.interpolate((received > threshold).to(received.dtype), size=size, mode="nearest")


@dataclass(frozen=True)
class SelfAttentionBlurred(SecondPhaseLeaf):
    """SAG's degraded prediction D̂ = D(x̃, σ, c) + (x − x̃) (module docstring), read at ``layer`` (a
    full module name) of ``source``'s model with threshold ψ and blur std σ_b; a second-phase leaf."""

    source: Prediction
    blur_sigma: float
    threshold: float
    layer: str

    def __post_init__(self) -> None:
        if self.source.perturbation is not None or self.source.area is not None:
            raise ValueError("SAG reads the attention of a plain, full-image prediction")

    def recorder(self) -> AttentionRecorder:
        return AttentionRecorder(self.layer)

    def model_input(self, x: torch.Tensor, source: torch.Tensor, recorder: object) -> torch.Tensor:
        """x̃ = M·blur(D) + (1 − M)·D + (x − D), from D (B, C, H, W) and the recorded map."""
        assert isinstance(recorder, AttentionRecorder)
        size = (source.shape[-2], source.shape[-1])
        mask = blur_mask(recorder.received().to(source.dtype), size, self.threshold)
        blurred = gaussian_blur(source, self.blur_sigma, KERNEL)
        return mask * blurred + (1 - mask) * source + (x - source)

    def value(self, x: torch.Tensor, model_input: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        return prediction + (x - model_input)


def sag_layer(network: torch.nn.Module, pattern: str, model_name: str = "") -> str:
    """The first perturbable self-attention layer ``pattern`` names, in module order: "mid" is the mid
    block's first transformer block in a diffusers UNet, the layer diffusers' and ComfyUI's SAG read."""
    check_layers(network, (pattern,), model_name)
    return matching_layers(list(perturbable_layers(network)), (pattern,))[0]


def self_attention_guidance(
    guidance: Guidance, source: Prediction, scale: float, blur_sigma: float, threshold: float, layer: str
) -> Guidance:
    """``guidance + s·(D − D̂)`` = guidance + s·(x̃0 − D(x̃)); s = 0 is ``guidance`` unchanged."""
    if scale == 0:
        return guidance
    degraded = SelfAttentionBlurred(source, float(blur_sigma), float(threshold), layer)
    return Difference(guidance, source, degraded, float(scale))
