"""The names node declarations offer, importable without torch (so listing and validating nodes is fast).

Each name list has one home here; the modules that implement them (``samplers.SAMPLERS``,
``schedules``, ``conventions``) are checked against these lists by the tests.
"""

from __future__ import annotations

SAMPLER_NAMES: tuple[str, ...] = (
    "euler",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "lms",
    "dpmpp_sde",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "ddpm",
    "ddim",
)
SCHEDULER_NAMES: tuple[str, ...] = (
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "kl_optimal",
)
SPACES: tuple[str, ...] = ("x0", "eps", "v")
