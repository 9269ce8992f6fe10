"""Which SD variant a checkpoint holds, from its header: metadata first, then keys and tensor shapes.

Order of evidence for a single file:

1. ``guidegraph.variant`` in ``__metadata__`` (``_guidegraph_variant`` in a folder's
   ``model_index.json``), written by ``guidegraph make-checkpoint``: a tiny random network's keys and
   configs cannot tell its variant;
2. layouts we know but do not load (SD3, Flux, Playground v2.5, inpainting and other extra-channel
   UNets, unCLIP): a :class:`CheckpointError` that names them;
3. the UNet's shapes: SDXL's ``label_emb`` input width (2816 base, 2560 refiner, as 6 or 5 size/crop/score
   embeddings of 256 plus the 1280 pooled text), else the cross-attention width (768 SD 1.x, 1024 SD 2.x);
   an SD 1.x UNet whose ``conv_in`` takes 8 channels (4 noisy + 4 image latent) is InstructPix2Pix;
4. SD 2.x ε or v, which no key tells: Stability's ``modelspec`` metadata when present, else the same weight
   statistic ComfyUI uses, the spread of one LayerNorm bias near the output (v-prediction models
   were trained further and it exceeds 0.09; the 512 px ε-model's stays below). Wrong guesses are
   corrected with the loader's prediction override.

A diffusers folder is told by its ``model_index.json`` and its UNet and scheduler configs.
"""

from __future__ import annotations

import json

from families.base import CheckpointError, Source
from families.sd.components import VARIANTS

META_VARIANT = "guidegraph.variant"  # in a single file's __metadata__ (families.sd.make writes it)
META_FOLDER_VARIANT = "_guidegraph_variant"  # in a diffusers folder's model_index.json
UNET = "model.diffusion_model."
V_STATISTIC_KEY = UNET + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
V_STATISTIC_THRESHOLD = 0.09
SDXL_LABEL_WIDTH = {2816: "sdxl", 2560: "sdxl_refiner"}
CONTEXT_WIDTH = {768: "sd1", 1024: "sd2"}
MODELSPEC = {
    "stable-diffusion-v1": "sd1",
    "stable-diffusion-v2-512": "sd2",
    "stable-diffusion-v2-768-v": "sd2_v",
    "stable-diffusion-xl-v1-base": "sdxl",
    "stable-diffusion-xl-v1-refiner": "sdxl_refiner",
}
# key fragments of layouts we recognise but do not load, and what to call them
UNSUPPORTED_KEYS = (
    ("joint_blocks.0.context_block", "Stable Diffusion 3 (an MMDiT, not a UNet)"),
    ("double_blocks.0.img_attn", "Flux (a flow-matching transformer, not a UNet)"),
    ("edm_mean", "Playground v2.5 (an EDM-parametrised SDXL)"),
    ("control_model.", "a ControlNet"),
)
PIPELINES_UNSUPPORTED = {
    "StableDiffusion3Pipeline": "Stable Diffusion 3",
    "FluxPipeline": "Flux",
    "StableDiffusionUpscalePipeline": "the SD x4 upscaler",
    "StableDiffusionInpaintPipeline": "an inpainting model",
    "StableDiffusionXLInpaintPipeline": "an SDXL inpainting model",
    "StableUnCLIPPipeline": "Stable unCLIP",
    "StableCascadeDecoderPipeline": "Stable Cascade",
}
SUPPORTED = "SD 1.x, SD 2.x (512 px ε, 768 px v), SDXL base 1.0, SDXL refiner 1.0, InstructPix2Pix (SD 1.x)"
IP2P_CHANNELS = 8


def detect_variant(source: Source) -> str | None:
    """The SD variant of ``source`` (sd1, sd2, sd2_v, sdxl, sdxl_refiner, sd1_ip2p), None when it is no SD
    checkpoint, or a CheckpointError for a known layout we do not load."""
    recorded = (source.model_index or {}).get(META_FOLDER_VARIANT) or source.metadata.get(META_VARIANT)
    if isinstance(recorded, str):
        if recorded not in VARIANTS:
            raise CheckpointError(
                f"{source.name}: its metadata names SD variant {recorded!r}, not one of {', '.join(VARIANTS)}"
            )
        return recorded
    if source.model_index is not None:
        return _detect_folder(source)
    keys = source.tensors
    for fragment, what in UNSUPPORTED_KEYS:
        if any(fragment in k for k in keys):
            raise _unsupported(source, what)
    conv_in = source.shape(UNET + "input_blocks.0.0.weight")
    if conv_in is None:
        if any(k.startswith(("first_stage_model.", "encoder.down.", "encoder.down_blocks.")) for k in keys):
            raise CheckpointError(
                f"{source.name}: this is a VAE on its own, not a checkpoint; put it in models/vae "
                "and load it with the VAE loader"
            )
        return None
    label = source.shape(UNET + "label_emb.0.0.weight")
    if len(conv_in) == 4 and conv_in[1] == IP2P_CHANNELS:
        if label is None and _context_width_variant(source) == "sd1":
            return "sd1_ip2p"
        raise _unsupported(source, "an InstructPix2Pix UNet (8 input channels) not built on SD 1.x")
    if len(conv_in) == 4 and conv_in[1] != 4:
        known = {9: "an inpainting model (9 input channels)"}
        other = f"a UNet with {conv_in[1]} input channels (an upscaler?)"
        raise _unsupported(source, known.get(conv_in[1], other))
    if label is not None:
        if label[-1] in SDXL_LABEL_WIDTH:
            return SDXL_LABEL_WIDTH[label[-1]]
        raise _unsupported(source, f"a UNet with a {label[-1]}-wide class/ADM embedding (unCLIP?)")
    family = _context_width_variant(source)
    if family != "sd2":
        return family
    return "sd2_v" if _is_v_prediction(source) else "sd2"


def _context_width_variant(source: Source) -> str | None:
    for key, info in source.tensors.items():
        if key.startswith(UNET) and key.endswith("attn2.to_k.weight") and len(info.shape) == 2:
            width = info.shape[1]
            if width in CONTEXT_WIDTH:
                return CONTEXT_WIDTH[width]
            raise _unsupported(source, f"a UNet with {width}-wide text conditioning")
    return None


def _is_v_prediction(source: Source) -> bool:
    spec = str(source.metadata.get("modelspec.architecture", ""))
    if spec in MODELSPEC:
        return MODELSPEC[spec] == "sd2_v"
    declared = str(source.metadata.get("modelspec.prediction_type", ""))
    if declared:
        return declared.startswith("v")
    if V_STATISTIC_KEY not in source.tensors or not source.path.is_file():
        return False  # as ComfyUI: ε unless the statistic says otherwise
    from safetensors import safe_open

    with safe_open(str(source.path), framework="pt") as f:
        bias = f.get_tensor(V_STATISTIC_KEY).float()
    return float(bias.std(unbiased=False)) > V_STATISTIC_THRESHOLD


def detect_prediction(source: Source) -> str | None:
    """What a single file declares about its parametrization (``eps`` or ``v``), beyond its variant:
    Stability's ``modelspec.prediction_type`` or the ``v_pred`` marker key of v-prediction SDXL
    finetunes; None when it declares nothing."""
    declared = str(source.metadata.get("modelspec.prediction_type", ""))
    if declared:
        return "v" if declared.startswith("v") else "eps"
    return "v" if "v_pred" in source.tensors else None


def _detect_folder(source: Source) -> str | None:
    index = source.model_index or {}
    cls = str(index.get("_class_name", ""))
    if cls in PIPELINES_UNSUPPORTED:
        raise _unsupported(source, PIPELINES_UNSUPPORTED[cls])
    if not isinstance(index.get("unet"), list) or index["unet"][1:2] != ["UNet2DConditionModel"]:
        return None
    unet = _folder_json(source, "unet/config.json")
    channels = unet.get("in_channels", 4)
    if (
        channels == IP2P_CHANNELS
        and unet.get("addition_embed_type") is None
        and unet.get("cross_attention_dim") == 768
    ):
        return "sd1_ip2p"
    if channels != 4:
        raise _unsupported(source, f"a UNet with {channels} input channels (inpainting or upscaler)")
    if unet.get("addition_embed_type") == "text_time":
        width = unet.get("projection_class_embeddings_input_dim")
        text_encoder = index.get("text_encoder") or [None]
        if text_encoder[0] is None or width == 2560:
            return "sdxl_refiner"
        return "sdxl"
    width = unet.get("cross_attention_dim")
    if width == 768:
        return "sd1"
    if width == 1024:
        scheduler = _folder_json(source, "scheduler/scheduler_config.json")
        return "sd2_v" if scheduler.get("prediction_type") == "v_prediction" else "sd2"
    raise _unsupported(source, f"a UNet with {width}-wide text conditioning")


def _folder_json(source: Source, rel: str) -> dict[str, object]:
    path = source.path / rel
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{source.name}/{rel}: missing or not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{source.name}/{rel}: expected a JSON object")
    return data


def _unsupported(source: Source, what: str) -> CheckpointError:
    return CheckpointError(
        f"{source.name}: this looks like {what}, which guidegraph does not load. Found {source.summary()}. "
        f"Supported Stable Diffusion checkpoints: {SUPPORTED}"
    )
