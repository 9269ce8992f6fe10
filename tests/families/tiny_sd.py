"""Tiny random SD networks wrapped as our loader would, and the scheduler settings diffusers' pipelines
take from the same config: shared by the parity tests against diffusers."""

from __future__ import annotations

from typing import Any

from families.sd.components import SDComponents

SCHEDULER_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "prediction_type",
    "steps_offset",
)


def wrap(
    variant: str,
    built: tuple[dict[str, Any], Any, Any, dict[str, Any]],
    pad_tokens: list[str],
    scheduler: dict[str, Any] | None = None,
) -> SDComponents:
    """``build_networks``' output as the components of a checkpoint named ``tiny-{variant}``."""
    configs, unet, vae, encoders = built
    return SDComponents(
        variant=variant,
        unet=unet,
        vae=vae,
        text_encoders=list(encoders.values()),
        pad_tokens=pad_tokens,
        scheduler_config=scheduler if scheduler is not None else dict(configs["scheduler"]),
        name=f"tiny-{variant}",
    )


def scheduler_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """The scheduler config's entries a diffusers scheduler's constructor takes."""
    return {k: v for k, v in config.items() if k in SCHEDULER_KEYS}
