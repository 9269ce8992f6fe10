"""SD checkpoints from disk: a single ``.safetensors`` file (LDM layout) or a diffusers folder, offline.

Single files are read by diffusers' own single-file loaders, given as ``config=`` a local diffusers
folder written from the configs shipped in ``families.sd.configs`` (or, for the tiny random files that
``guidegraph make-checkpoint`` writes, from the configs recorded in the file's ``__metadata__``). The
libraries' offline switches are set here and every call passes ``local_files_only=True``: nothing ever
reaches a model hub. Every failure becomes a :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import huggingface_hub.constants as hub_constants
import torch
from torch import nn

from families.base import CheckpointError, LoadOptions, Source
from families.sd.components import SDComponents
from families.sd.configs import FILES, variant_configs, write_config_folder
from families.sd.detect import detect_prediction

# Offline, whatever the environment says: the switches are read when diffusers and transformers are
# first imported (here they are imported later, inside the loaders), and huggingface_hub's directly.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
hub_constants.HF_HUB_OFFLINE = True

# Metadata our writer records (``families.sd.make``); it takes precedence over key detection.
META_CONFIGS = "guidegraph.configs"
CLIP_L_PAD, OPEN_CLIP_PAD = "<|endoftext|>", "!"
# variant -> its text encoders in the order the UNet concatenates them: (component, class, pad token)
ENCODERS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "sd1": (("text_encoder", "CLIPTextModel", CLIP_L_PAD),),
    "sd1_ip2p": (("text_encoder", "CLIPTextModel", CLIP_L_PAD),),
    "sd2": (("text_encoder", "CLIPTextModel", OPEN_CLIP_PAD),),
    "sd2_v": (("text_encoder", "CLIPTextModel", OPEN_CLIP_PAD),),
    "sdxl": (
        ("text_encoder", "CLIPTextModel", CLIP_L_PAD),
        ("text_encoder_2", "CLIPTextModelWithProjection", OPEN_CLIP_PAD),
    ),
    "sdxl_refiner": (("text_encoder_2", "CLIPTextModelWithProjection", OPEN_CLIP_PAD),),
}
PREDICTIONS = {"eps": "epsilon", "v": "v_prediction"}


def checkpoint_configs(source: Source, variant: str) -> dict[str, dict[str, Any]]:
    """The configs of ``source``'s networks: a diffusers folder's own, those our writer recorded in the
    file's metadata, or the published ones shipped for ``variant``."""
    if source.model_index is not None:
        configs: dict[str, dict[str, Any]] = {}
        for component, rel in FILES.items():
            path = source.path / rel
            if path.is_file():
                try:
                    configs[component] = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError) as exc:
                    raise CheckpointError(f"{source.name}/{rel} is not valid JSON: {exc}") from exc
        return configs
    recorded = source.metadata.get(META_CONFIGS)
    if isinstance(recorded, dict) and recorded.get("unet"):
        return {k: dict(v) for k, v in recorded.items()}
    return variant_configs(variant)


def resolve_dtype(options: LoadOptions) -> torch.dtype:
    """float16 on CUDA, float32 elsewhere, unless the options name one."""
    if options.dtype is not None:
        return options.dtype
    device = torch.device(options.device) if options.device is not None else torch.device("cpu")
    return torch.float16 if device.type == "cuda" else torch.float32


def load_components(
    source: Source,
    variant: str,
    options: LoadOptions,
    prediction: str = "auto",
    configs: Mapping[str, Mapping[str, Any]] | None = None,
) -> SDComponents:
    """The networks of ``source`` (a single safetensors file or a diffusers folder) as ``variant``.

    ``prediction`` (``auto`` | ``eps`` | ``v``, else ``options.prediction``) overrides the scheduler's
    parametrization, which keys cannot tell; ``configs`` overrides the networks' configs (by default
    :func:`checkpoint_configs`).
    """
    if variant not in ENCODERS:
        raise CheckpointError(f"{source.name}: unknown SD variant {variant!r}; known: {', '.join(ENCODERS)}")
    configs = {k: dict(v) for k, v in (configs or checkpoint_configs(source, variant)).items()}
    dtype = resolve_dtype(options)
    if source.model_index is not None:
        unet, vae, encoders = _from_folder(source, variant, dtype)
    else:
        unet, vae, encoders = _from_single_file(source, variant, configs, dtype)
    device = torch.device(options.device) if options.device is not None else torch.device("cpu")
    networks: list[nn.Module] = [unet, vae, *encoders]
    for net in networks:
        if next(net.parameters()).device != device:  # diffusers' .to() warns even when nothing moves
            net.to(device=device)
        net.eval().requires_grad_(False)
    scheduler = dict(configs.get("scheduler") or variant_configs(variant)["scheduler"])
    chosen = prediction if prediction != "auto" else options.prediction
    if chosen == "auto" and source.model_index is None:
        chosen = detect_prediction(source) or "auto"
    if chosen != "auto":
        if chosen not in PREDICTIONS:
            raise CheckpointError(f"{source.name}: prediction {chosen!r} is not one of auto, eps, v")
        scheduler["prediction_type"] = PREDICTIONS[chosen]
    scheduler.setdefault("prediction_type", "epsilon")
    return SDComponents(
        variant=variant,
        unet=unet,
        vae=vae,
        text_encoders=encoders,
        pad_tokens=[pad for _, _, pad in ENCODERS[variant]],
        scheduler_config=scheduler,
        name=source.name,
    )


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a clear error for anything that is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    Source.open(path)  # refuses pickles, truncation, a missing header, by name
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path.name}: corrupt safetensors file ({exc})") from exc


def _text_encoder_class(name: str) -> type[nn.Module]:
    import transformers

    cls: type[nn.Module] = getattr(transformers, name)
    return cls


def _from_single_file(
    source: Source, variant: str, configs: Mapping[str, Mapping[str, Any]], dtype: torch.dtype
) -> tuple[nn.Module, nn.Module, list[nn.Module]]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm

    state = read_state(source.path)
    with tempfile.TemporaryDirectory(prefix="guidegraph-sd-config-") as tmp:
        folder = str(write_config_folder({k: dict(v) for k, v in configs.items()}, Path(tmp)))
        common: dict[str, Any] = {"config": folder, "local_files_only": True, "torch_dtype": dtype}
        unet = _guarded(
            source, "UNet", lambda: UNet2DConditionModel.from_single_file(state, subfolder="unet", **common)
        )
        _drop(state, "model.diffusion_model.")  # the file's copy of what is loaded: peak memory
        vae = _guarded(
            source, "VAE", lambda: AutoencoderKL.from_single_file(state, subfolder="vae", **common)
        )
        _drop(state, "first_stage_model.")
        encoders = [
            _guarded(
                source,
                f"text encoder {component}",
                lambda c=component, n=name: create_diffusers_clip_model_from_ldm(
                    _text_encoder_class(n), state, subfolder=c, **common
                ),
            )
            for component, name, _ in ENCODERS[variant]
        ]
    return unet, vae, encoders


def _drop(state: dict[str, torch.Tensor], prefix: str) -> None:
    for key in [k for k in state if k.startswith(prefix)]:
        del state[key]


def _from_folder(
    source: Source, variant: str, dtype: torch.dtype
) -> tuple[nn.Module, nn.Module, list[nn.Module]]:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    root = str(source.path)
    common: dict[str, Any] = {"local_files_only": True}
    unet = _guarded(
        source,
        "UNet",
        lambda: UNet2DConditionModel.from_pretrained(root, subfolder="unet", torch_dtype=dtype, **common),
    )
    vae = _guarded(
        source,
        "VAE",
        lambda: AutoencoderKL.from_pretrained(root, subfolder="vae", torch_dtype=dtype, **common),
    )
    encoders = [
        _guarded(
            source,
            f"text encoder {component}",
            lambda c=component, n=name: _text_encoder_class(n).from_pretrained(  # type: ignore[attr-defined]
                root, subfolder=c, dtype=dtype, **common
            ),
        )
        for component, name, _ in ENCODERS[variant]
    ]
    return unet, vae, encoders


@contextmanager
def quiet_diffusers() -> Iterator[None]:
    """diffusers' loaders cast with its own ``.to(dtype)``, which warns about an empty list of modules."""
    noisy = logging.getLogger("diffusers.models.modeling_utils")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        yield
    finally:
        noisy.setLevel(level)


def _guarded(source: Source, what: str, build: Any) -> nn.Module:
    """Run one library loader; any failure, or weights left unloaded, is a CheckpointError naming the file."""
    try:
        with quiet_diffusers():
            net: nn.Module = build()
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(
            f"{source.name}: could not load its {what}: {type(exc).__name__}: {exc}"
        ) from exc
    missing = [n for n, p in [*net.named_parameters(), *net.named_buffers()] if p.device.type == "meta"]
    if missing:
        shown = ", ".join(missing[:5]) + (", …" if len(missing) > 5 else "")
        raise CheckpointError(
            f"{source.name}: its {what} is incomplete: the file has no weights for {len(missing)} "
            f"tensors ({shown})"
        )
    return net


_LDM_VAE_PROBE = "encoder.down.0.block.0.conv1.weight"
_DIFFUSERS_VAE_PROBE = "encoder.down_blocks.0.resnets.0.conv1.weight"


def load_vae(path: str | Path, options: LoadOptions, config: Mapping[str, Any] | None = None) -> nn.Module:
    """A separate VAE file (``models/vae``): LDM keys, bare or under ``first_stage_model.``/``vae.``, or
    diffusers keys, as an ``AutoencoderKL`` of ``config`` (default: the SD 1.x/2.x/SDXL architecture,
    which they share; the latent scaling factor belongs to the checkpoint and is the caller's)."""
    from diffusers import AutoencoderKL

    source = Source.open(Path(path))
    config = dict(config or variant_configs("sd1")["vae"])
    layout, prefix = _vae_layout(source)
    _check_vae_shapes(source, prefix, config)
    dtype = resolve_dtype(options)
    state = read_state(source.path)
    if layout == "ldm":
        with tempfile.TemporaryDirectory(prefix="guidegraph-vae-config-") as tmp:
            folder = str(write_config_folder({"vae": config}, Path(tmp)))
            vae = _guarded(
                source,
                "VAE",
                lambda: AutoencoderKL.from_single_file(
                    state, config=folder, subfolder="vae", local_files_only=True, torch_dtype=dtype
                ),
            )
    else:

        def build() -> nn.Module:
            net = AutoencoderKL.from_config(config)
            net.load_state_dict({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})
            return net.to(dtype)

        vae = _guarded(source, "VAE", build)
    device = torch.device(options.device) if options.device is not None else torch.device("cpu")
    if next(vae.parameters()).device != device:
        vae.to(device=device)
    return vae.eval().requires_grad_(False)


def _vae_layout(source: Source) -> tuple[str, str]:
    """("ldm" | "diffusers", key prefix) of a VAE file, or a CheckpointError saying what it holds."""
    for key in source.tensors:
        for layout, probe in (("ldm", _LDM_VAE_PROBE), ("diffusers", _DIFFUSERS_VAE_PROBE)):
            if key.endswith(probe):
                return layout, key[: -len(probe)]
    raise CheckpointError(
        f"{source.name}: not a VAE: no autoencoder encoder weights (encoder.down.0… or "
        f"encoder.down_blocks.0…) among {source.summary()}"
    )


def _check_vae_shapes(source: Source, prefix: str, config: Mapping[str, Any]) -> None:
    """The file's latent channels and widths against the VAE the checkpoint expects."""
    latent = source.shape(prefix + "decoder.conv_in.weight")
    first = source.shape(prefix + "encoder.conv_in.weight")
    want_latent, want_first = int(config["latent_channels"]), int(config["block_out_channels"][0])
    if latent is None or first is None:
        raise CheckpointError(f"{source.name}: not a complete VAE (no encoder.conv_in / decoder.conv_in)")
    if latent[1] != want_latent:
        raise CheckpointError(
            f"{source.name}: this VAE has {latent[1]} latent channels; this model's latents have "
            f"{want_latent} (an SD3/Flux VAE with an SD 1.x/2.x/SDXL model?)"
        )
    if first[0] != want_first:
        raise CheckpointError(
            f"{source.name}: this VAE's first layer has {first[0]} channels; this model's VAE has "
            f"{want_first}: a VAE of another architecture"
        )
