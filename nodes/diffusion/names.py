"""The names node declarations offer, importable without torch (so listing and validating nodes is fast).

Each name list has one home here; the modules that implement them (``samplers.SAMPLERS``,
``schedules``, ``conventions``) are checked against these lists by the tests.

``COMFY_SAMPLER_NAMES`` and ``COMFY_SCHEDULER_NAMES`` are ComfyUI's KSampler options in ComfyUI's
order (``comfy/samplers.py``: ``KSAMPLER_NAMES + ["ddim", "uni_pc", "uni_pc_bh2"]`` and
``SCHEDULER_HANDLERS``, as of late 2025, after ``exp_heun_2_x0`` was added), so that a workflow saved
by ComfyUI validates here. Those we do not implement are listed with the reason in
``COMFY_UNSUPPORTED_SAMPLERS``; :func:`unsupported_sampler_message` words the error.
"""

from __future__ import annotations

SAMPLER_NAMES: tuple[str, ...] = (
    "euler",
    "euler_ancestral",
    "heun",
    "heunpp2",
    "exp_heun_2_x0",
    "exp_heun_2_x0_sde",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_heun",
    "dpmpp_3m_sde",
    "ddpm",
    "lcm",
    "ipndm",
    "ipndm_v",
    "deis",
    "res_multistep",
    "res_multistep_ancestral",
    "gradient_estimation",
    "er_sde",
    "seeds_2",
    "seeds_3",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
)
SCHEDULER_NAMES: tuple[str, ...] = (
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
)
SPACES: tuple[str, ...] = ("x0", "eps", "v")

COMFY_SAMPLER_NAMES: tuple[str, ...] = (
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "heun",
    "heunpp2",
    "exp_heun_2_x0",
    "exp_heun_2_x0_sde",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "ipndm",
    "ipndm_v",
    "deis",
    "res_multistep",
    "res_multistep_cfg_pp",
    "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp",
    "gradient_estimation",
    "gradient_estimation_cfg_pp",
    "er_sde",
    "seeds_2",
    "seeds_3",
    "sa_solver",
    "sa_solver_pece",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
)
COMFY_SCHEDULER_NAMES: tuple[str, ...] = SCHEDULER_NAMES

COMFY_SAMPLER_ALIASES: dict[str, str] = {
    "dpmpp_sde_gpu": "dpmpp_sde",
    "dpmpp_2m_sde_gpu": "dpmpp_2m_sde",
    "dpmpp_2m_sde_heun_gpu": "dpmpp_2m_sde_heun",
    "dpmpp_3m_sde_gpu": "dpmpp_3m_sde",
}
"""ComfyUI names whose math is another name's: the ``_gpu`` ones only keep their Brownian tree on the GPU."""

_CFG_PP = "CFG++ needs the unconditional prediction inside the sampler; not implemented yet"
_NOT_YET = "not implemented in guidegraph"
COMFY_UNSUPPORTED_SAMPLERS: dict[str, str] = {
    "euler_cfg_pp": _CFG_PP,
    "euler_ancestral_cfg_pp": _CFG_PP,
    "dpmpp_2s_ancestral_cfg_pp": _CFG_PP,
    "dpmpp_2m_cfg_pp": _CFG_PP,
    "res_multistep_cfg_pp": _CFG_PP,
    "res_multistep_ancestral_cfg_pp": _CFG_PP,
    "gradient_estimation_cfg_pp": _CFG_PP,
    "sa_solver": _NOT_YET,
    "sa_solver_pece": _NOT_YET,
}


def unsupported_sampler_message(name: str) -> str | None:
    """Why ComfyUI sampler ``name`` cannot run here, with the supported choices; None when it can."""
    if name in SAMPLER_NAMES or name in COMFY_SAMPLER_ALIASES:
        return None
    supported = ", ".join(n for n in COMFY_SAMPLER_NAMES if n not in COMFY_UNSUPPORTED_SAMPLERS)
    if name in COMFY_UNSUPPORTED_SAMPLERS:
        reason = COMFY_UNSUPPORTED_SAMPLERS[name]
        return f"ComfyUI sampler {name!r} is not supported ({reason}); supported: {supported}"
    return f"unknown sampler {name!r}; supported: {supported}"


# Guidance-scale schedules over the sampling run (nodes.diffusion.rules.Scheduled).
SCHEDULES: tuple[str, ...] = (
    "constant",
    "linear_increasing",
    "linear_decreasing",
    "cosine_increasing",
    "cosine_decreasing",
)
INFINITE_BLUR = 9999.0  # a blur σ at or above this replaces every query by its mean (SEG's σ → ∞)
