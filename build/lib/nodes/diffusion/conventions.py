"""Model conventions: every network becomes a σ-space denoiser D(x, σ, cond) → x̂0 with x = x0 + σ·n.

Coordinates are k-diffusion's / EDM's "VE-scaled" ones (Karras et al. 2022, "Elucidating the Design
Space of Diffusion-Based Generative Models", Table 1): a VP sample ``x_VP = α·x0 + s·n`` (α² + s² = 1)
is ``x = x_VP/α`` with ``σ = s/α``. A network ``F`` becomes a denoiser through four scalings::

    D(x; σ, c) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ), c)

| parametrization | c_skip          | c_out               | c_in             | c_noise            |
|-----------------|-----------------|---------------------|------------------|--------------------|
| eps             | 1               | −σ                  | 1/√(σ²+1)        | t(σ) (discrete VP) |
| v               | σd²/(σ²+σd²)    | −σ·σd/√(σ²+σd²)     | 1/√(σ²+σd²)      | t(σ)               |
| x0              | 0               | 1                   | 1/√(σ²+1)        | t(σ)               |
| edm             | σd²/(σ²+σd²)    | +σ·σd/√(σ²+σd²)     | 1/√(σ²+σd²)      | ¼·ln σ             |

Discrete VP models (Ho et al. 2020) have a table σ_i = √((1 − ᾱ_i)/ᾱ_i); σ ↔ t interpolates in log σ.
At fixed (x, σ) the prediction spaces are affine in each other: ε = (x − D)/σ and, with
α = 1/√(1+σ²), s = σ·α, ``v = α·ε − s·x0`` (Salimans & Ho 2022). A gradient of a log-density enters
as ``D' = D + s·σ²·∇ₓ log p`` (Dhariwal & Nichol 2021, the DDIM ``condition_score`` form).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from nodes.diffusion.names import SPACES

Parametrization = Literal["eps", "v", "x0", "edm"]
Space = Literal["x0", "eps", "v"]
PARAMETRIZATIONS: tuple[str, ...] = ("eps", "v", "x0", "edm")


def betas_for_schedule(name: str, timesteps: int) -> torch.Tensor:
    """DDPM β table: 'linear' (Ho et al. 2020), 'scaled_linear' (Stable Diffusion), 'cosine' (Nichol &
    Dhariwal 2021)."""
    if name == "linear":
        return torch.linspace(1e-4, 0.02, timesteps, dtype=torch.float64)
    if name == "scaled_linear":
        return torch.linspace(0.00085**0.5, 0.012**0.5, timesteps, dtype=torch.float64) ** 2
    if name == "cosine":
        s = 0.008
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        alphas_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = 1 - alphas_bar[1:] / alphas_bar[:-1]
        return betas.clamp(max=0.999)
    raise ValueError(f"unknown beta schedule {name!r}; expected linear, scaled_linear or cosine")


def vp_sigmas(beta_schedule: str, timesteps: int) -> torch.Tensor:
    """σ_i = sqrt((1 − ᾱ_i)/ᾱ_i) for i = 0…T−1 (float32, increasing)."""
    alphas_bar = torch.cumprod(1 - betas_for_schedule(beta_schedule, timesteps), dim=0)
    return ((1 - alphas_bar) / alphas_bar).sqrt().float()


def _wide(device: torch.device) -> torch.dtype:
    """float64 for table look-ups, except where the device has none (Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def sigma_to_t(
    sigma: torch.Tensor, table: torch.Tensor, log_table: torch.Tensor | None = None
) -> torch.Tensor:
    """Continuous timestep of σ on a discrete σ table, by linear interpolation in log σ (clamped)."""
    wide = _wide(sigma.device)
    if log_table is None:
        log_table = table.to(sigma.device, wide).log()
    log_sigma = sigma.to(wide).clamp(min=float(table[0]), max=float(table[-1])).log()
    idx = torch.searchsorted(log_table, log_sigma).clamp(1, len(table) - 1)  # upper neighbour
    lo, hi = log_table[idx - 1], log_table[idx]
    frac = ((log_sigma - lo) / (hi - lo)).clamp(0, 1)
    return ((idx - 1).to(wide) + frac).to(sigma.dtype)


def t_to_sigma(t: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """σ of a continuous timestep: log-linear interpolation between neighbouring table entries."""
    log_table = table.to(t.device, torch.float64).log()
    t64 = t.to(torch.float64).clamp(0, len(table) - 1)
    lo = t64.floor().long()
    hi = t64.ceil().long()
    frac = t64 - lo
    return (log_table[lo] * (1 - frac) + log_table[hi] * frac).exp().to(t.dtype)


def scalings(
    parametrization: str, sigma: torch.Tensor, sigma_data: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in) of the table above, shaped like σ."""
    sd2 = sigma_data**2
    if parametrization == "eps":
        return torch.ones_like(sigma), -sigma, (sigma**2 + 1).rsqrt()
    if parametrization == "x0":
        return torch.zeros_like(sigma), torch.ones_like(sigma), (sigma**2 + 1).rsqrt()
    if parametrization in ("v", "edm"):
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * sigma_data * (sigma**2 + sd2).rsqrt()
        return c_skip, (c_out if parametrization == "edm" else -c_out), (sigma**2 + sd2).rsqrt()
    raise ValueError(f"unknown parametrization {parametrization!r}; expected one of {PARAMETRIZATIONS}")


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """(B,) → (B, 1, …, 1) with ``ndim`` dims in all, for broadcasting per-sample scalars."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def to_space(denoised: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor, space: str) -> torch.Tensor:
    """Express the x0 prediction ``denoised`` at (x, σ) in ``space``: x0, eps (ε = (x − D)/σ) or v."""
    s = append_dims(sigma, x.ndim)
    if space == "x0":
        return denoised
    eps = (x - denoised) / s
    if space == "eps":
        return eps
    if space == "v":
        alpha = (s**2 + 1).rsqrt()
        return alpha * eps - s * alpha * denoised
    raise ValueError(f"unknown prediction space {space!r}; expected one of {SPACES}")


def from_space(pred: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor, space: str) -> torch.Tensor:
    """Inverse of :func:`to_space`: the x0 prediction from a prediction in ``space`` at (x, σ)."""
    s = append_dims(sigma, x.ndim)
    if space == "x0":
        return pred
    if space == "eps":
        return x - s * pred
    if space == "v":
        alpha = (s**2 + 1).rsqrt()  # x_VP = α·x;  x0 = α·x_VP − s_VP·v with s_VP = σ·α
        return alpha * (alpha * x) - s * alpha * pred
    raise ValueError(f"unknown prediction space {space!r}; expected one of {SPACES}")


def add_score(denoised: torch.Tensor, sigma: torch.Tensor, grad: torch.Tensor, scale: float) -> torch.Tensor:
    """D' = D + s·σ²·g with g = ∇ₓ log p (Dhariwal & Nichol 2021; k-diffusion's gradient wrapper)."""
    return denoised + scale * append_dims(sigma, denoised.ndim) ** 2 * grad


@dataclass(frozen=True, eq=False)
class Denoiser:
    """A network wrapped as D(x, σ, cond) → x̂0. Compares by identity (one loaded model, one value).

    ``network(c_in·x, c_noise, cond)`` returns the raw output, where ``cond`` is the batched condition
    (a tensor (B, D) or (B, T, D), or a dict of ``context`` and extras such as SDXL's ``pooled`` and
    ``time_ids``: :func:`nodes.diffusion.types.batch_conditions`). ``sigmas`` is the training σ table
    (discrete VP) or a log-uniform table between σ_min and σ_max (EDM), used by the schedules.
    ``latent_channels`` and ``downscale`` say what its latents look like next to pixels; ``encoder``
    names the text encoder whose conditions it takes.
    """

    network: torch.nn.Module
    parametrization: str
    sigmas: torch.Tensor
    discrete: bool = True
    sigma_data: float = 1.0
    name: str = ""
    latent_channels: int = 3
    downscale: int = 1
    encoder: str = ""
    _log_tables: dict[torch.device, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        """The network's noise input: discrete timestep t(σ) for VP models, ¼·ln σ for EDM."""
        if not self.discrete:
            return sigma.log() / 4
        log_table = self._log_tables.get(sigma.device)
        if log_table is None:  # cached per device: no host-to-device copy per step
            wide = _wide(sigma.device)
            log_table = self._log_tables[sigma.device] = self.sigmas.to(sigma.device, wide).log()
        return sigma_to_t(sigma, self.sigmas, log_table)

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Timestep coordinate used by the 'normal'/'sgm_uniform' schedules."""
        return self.c_noise(sigma)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        return t_to_sigma(t, self.sigmas) if self.discrete else (4 * t).exp()

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        """x (B, C, H, W), σ (B,), cond (batched, see above) → x̂0 (B, C, H, W)."""
        c_skip, c_out, c_in = (
            append_dims(c, x.ndim) for c in scalings(self.parametrization, sigma, self.sigma_data)
        )
        raw = self.network(x * c_in, self.c_noise(sigma), cond)
        return c_skip * x + c_out * raw


def denoiser_from_metadata(
    network: torch.nn.Module, metadata: Mapping[str, Any], name: str = "", encoder: str = ""
) -> Denoiser:
    """Build the adapter a file's header metadata asks for (parametrization + schedule)."""
    parametrization = str(metadata.get("parametrization", "eps"))
    schedule = metadata.get("schedule") or {
        "type": "discrete_vp",
        "beta_schedule": "linear",
        "timesteps": 1000,
    }
    if schedule.get("type") == "discrete_vp":
        if parametrization not in ("eps", "v", "x0"):
            raise ValueError(
                f"{name}: discrete VP models are eps, v or x0 predictions, not {parametrization!r}"
            )
        table = vp_sigmas(str(schedule.get("beta_schedule", "linear")), int(schedule.get("timesteps", 1000)))
        return Denoiser(
            network, parametrization, table, discrete=True, sigma_data=1.0, name=name, encoder=encoder
        )
    if schedule.get("type") == "edm":
        smin, smax = float(schedule.get("sigma_min", 0.002)), float(schedule.get("sigma_max", 80.0))
        table = torch.logspace(math.log10(smin), math.log10(smax), 1000)
        sd = float(schedule.get("sigma_data", 0.5))
        return Denoiser(network, "edm", table, discrete=False, sigma_data=sd, name=name, encoder=encoder)
    raise ValueError(f"{name}: unknown schedule type {schedule.get('type')!r}; expected discrete_vp or edm")
