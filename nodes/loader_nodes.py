"""Nodes that produce a ``LAMP_MODEL``: a motion file on an SD-1.x MODEL, or an official checkpoint; and the
converter from official checkpoints to compact motion files."""
from __future__ import annotations

import logging
import os
from typing import Any

from . import host
from .motion_model import DTYPE_CHOICES, LampModel, require_sd1, require_unet_weights, resolve_dtype

log = logging.getLogger("ComfyUI-LAMP")

_DTYPE_TOOLTIP = ("Precision the weights are kept in between runs. auto: fp16 where the GPU supports it, else "
                  "fp32. The sampler can still compute in another dtype.")


def _weights():
    from lamp_model import weights  # imported lazily: keeps ComfyUI start-up fast
    return weights


def resolve_checkpoint_path(path: str) -> str:
    """An official checkpoint given as typed by the user: absolute, or relative to a lamp folder or the
    input folder. Raises FileNotFoundError saying where it looked."""
    path = (path or "").strip().strip('"').strip("'")
    if not path:
        raise FileNotFoundError("LAMP: no checkpoint path given. Enter the official checkpoint's folder (the one "
                                "holding unet/, or unet/ itself) or a full-UNet .safetensors file.")
    candidates = [os.path.expanduser(path)] if os.path.isabs(os.path.expanduser(path)) else \
        [os.path.join(root, path) for root in (*host.lamp_folders(), host.input_dir())]
    for candidate in candidates:
        if os.path.exists(candidate):
            return os.path.abspath(candidate)
    raise FileNotFoundError(f"LAMP: checkpoint '{path}' not found (looked in: {', '.join(candidates)}). Put the "
                            "official checkpoint folder under models/lamp/ or give its absolute path.")


def _format_error(node: str, what: str, error: Exception, hint: str = "") -> ValueError:
    return ValueError(f"{node}: {what}: {error}{hint}")


class LampLoadMotion:
    """LAMP Load Motion: motion file + SD-1.x MODEL → LAMP_MODEL."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "model": ("MODEL", {"tooltip": "An SD-1.x model (SD-1.4/1.5 from CheckpointLoaderSimple or UNETLoader). "
                                           "LoRAs already applied to it are kept."}),
            "motion_file": (host.list_motion_files(), {"tooltip": "A LAMP motion file from models/lamp "
                                                                  "(make one from an official checkpoint with "
                                                                  "LAMP Convert Official, or train one)."}),
            "weight_dtype": (DTYPE_CHOICES, {"default": "auto", "tooltip": _DTYPE_TOOLTIP}),
        }}

    RETURN_TYPES = ("LAMP_MODEL",)
    RETURN_NAMES = ("lamp_model",)
    OUTPUT_TOOLTIPS = ("The SD-1.x UNet inflated into LAMP's video UNet, with the motion layers of the file.",)
    FUNCTION = "load"
    CATEGORY = "LAMP"
    DESCRIPTION = ("Puts a learned LAMP motion (a compact motion file) on top of an SD-1.x model: the UNet is "
                   "inflated into LAMP's video UNet and the motion layers are loaded from the file.")

    def load(self, model: Any, motion_file: str, weight_dtype: str = "auto") -> tuple[LampModel]:
        require_sd1(model)
        weights = _weights()
        path = host.motion_path(motion_file)
        try:
            motion, metadata = weights.read_motion(path)
        except (weights.WeightsFormatError, OSError, ValueError) as e:
            hint = (" It is a whole official LAMP UNet: use LAMP Load Official Checkpoint, or turn it into a motion "
                    "file once with LAMP Convert Official." if "lamp_full" in str(e) else "")
            raise _format_error("LAMP Load Motion", f"cannot read motion file '{motion_file}'", e, hint) from None
        dtype = resolve_dtype(weight_dtype, host.torch_device())
        state = host.patched_unet_state_dict(model)
        require_unet_weights(state, "LAMP Load Motion")
        try:
            config, base = weights.load_base_unet2d(state, dtype=dtype, hints=weights.motion_architecture(metadata))
            del state
            unet = weights.unet_from_parts(config, base, motion, dtype=dtype, device=host.offload_device(),
                                           metadata=metadata)
        except (weights.WeightsFormatError, ValueError, RuntimeError) as e:
            raise _format_error("LAMP Load Motion", f"motion file '{motion_file}' does not fit this model", e) from None
        lamp = LampModel(unet.eval().requires_grad_(False), source=f"motion file {motion_file}", metadata=dict(metadata))
        log.info("[LAMP] loaded %s", lamp.describe())
        return (lamp,)


class LampLoadOfficialCheckpoint:
    """LAMP Load Official Checkpoint: an official unet/ folder (or a full-UNet safetensors) → LAMP_MODEL."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "checkpoint_path": ("STRING", {"default": "", "tooltip": "Official LAMP checkpoint: its folder (holding "
                                                                    "unet/), the unet/ folder itself, or a full-UNet "
                                                                    ".safetensors. Absolute, or relative to models/lamp."}),
            "weight_dtype": (DTYPE_CHOICES, {"default": "auto", "tooltip": _DTYPE_TOOLTIP}),
        }}

    RETURN_TYPES = ("LAMP_MODEL",)
    RETURN_NAMES = ("lamp_model",)
    OUTPUT_TOOLTIPS = ("The full LAMP video UNet of the official checkpoint.",)
    FUNCTION = "load"
    CATEGORY = "LAMP"
    DESCRIPTION = ("Loads an official LAMP checkpoint (a whole video UNet, ~4 GB, SD-1.4 base included) without "
                   "any other model. To save disk and use your own SD-1.x model, convert it once with LAMP Convert "
                   "Official and use LAMP Load Motion.")

    def load(self, checkpoint_path: str, weight_dtype: str = "auto") -> tuple[LampModel]:
        weights = _weights()
        path = resolve_checkpoint_path(checkpoint_path)
        dtype = resolve_dtype(weight_dtype, host.torch_device())
        if os.path.isfile(path) and _is_motion_file(weights, path):
            raise ValueError(f"LAMP Load Official Checkpoint: '{checkpoint_path}' is a compact LAMP motion file, which "
                             "needs an SD-1.x model under it: use LAMP Load Motion (MODEL from CheckpointLoaderSimple "
                             "+ this motion file) instead.")
        try:
            unet = weights.load_unet(path, dtype=dtype, device=host.offload_device())
        except (weights.WeightsFormatError, OSError, ValueError) as e:
            raise _format_error("LAMP Load Official Checkpoint", f"cannot load '{checkpoint_path}'", e) from None
        lamp = LampModel(unet.eval().requires_grad_(False), source=f"official checkpoint {os.path.basename(path)}")
        log.info("[LAMP] loaded %s", lamp.describe())
        return (lamp,)


class LampConvertOfficial:
    """LAMP Convert Official: official checkpoint → compact motion file in models/lamp."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "checkpoint_path": ("STRING", {"default": "", "tooltip": "Official LAMP checkpoint folder (holding unet/), "
                                                                    "the unet/ folder, or a full-UNet .safetensors. "
                                                                    "Absolute, or relative to models/lamp."}),
            "motion_name": ("STRING", {"default": "", "tooltip": "File name of the motion file to write into "
                                                                "models/lamp (empty: named after the checkpoint "
                                                                "folder, e.g. horse_run.safetensors)."}),
            "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace an existing motion file of that name."}),
        }}

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("motion_file",)
    OUTPUT_TOOLTIPS = ("The name of the written motion file (as listed by LAMP Load Motion).",)
    FUNCTION = "convert"
    OUTPUT_NODE = True
    CATEGORY = "LAMP"
    DESCRIPTION = ("Extracts the motion layers of an official LAMP checkpoint into a compact motion file "
                   "(~0.5 GB fp16) in models/lamp; it then works on any SD-1.x model through LAMP Load Motion. "
                   "Refresh the page (R) to see the new file in the list.")

    def convert(self, checkpoint_path: str, motion_name: str = "", overwrite: bool = False) -> dict:
        weights = _weights()
        src = resolve_checkpoint_path(checkpoint_path)
        name = (motion_name or "").strip() or _default_motion_name(src)
        if os.path.basename(name) != name or name in (".", ".."):
            raise ValueError(f"LAMP Convert Official: motion_name '{name}' must be a plain file name (no folders).")
        if not name.endswith(".safetensors"):
            name += ".safetensors"
        out = os.path.join(host.lamp_folder(), name)
        if os.path.exists(out) and not overwrite:
            raise FileExistsError(f"LAMP Convert Official: {out} already exists. Choose another motion_name or "
                                  "turn on 'overwrite'.")
        try:
            weights.convert_official(src, out)
        except (weights.WeightsFormatError, OSError, ValueError) as e:
            raise _format_error("LAMP Convert Official", f"cannot convert '{checkpoint_path}'", e) from None
        size = os.path.getsize(out) / 2**20
        message = f"wrote {out} ({size:.0f} MiB)"
        log.info("[LAMP] %s", message)
        return {"ui": {"text": [message]}, "result": (name,)}


def _is_motion_file(weights: Any, path: str) -> bool:
    try:
        return weights.detect_file_format(path) == "lamp_motion"
    except (weights.WeightsFormatError, OSError, ValueError):
        return False  # load_unet names the problem


def _default_motion_name(src: str) -> str:
    """horse_run/unet → horse_run; horse_run.safetensors → horse_run_motion."""
    src = os.path.normpath(src)
    if os.path.isfile(src):
        stem = os.path.splitext(os.path.basename(src))[0]
        if stem.startswith("diffusion_pytorch_model"):
            src, stem = os.path.dirname(src), ""
        else:
            return f"{stem}_motion.safetensors"
    base = os.path.basename(src)
    if base == "unet":
        base = os.path.basename(os.path.dirname(src))
    return f"{base or 'lamp_motion'}.safetensors"


NODE_CLASS_MAPPINGS = {
    "LAMP_LoadMotion": LampLoadMotion,
    "LAMP_LoadOfficialCheckpoint": LampLoadOfficialCheckpoint,
    "LAMP_ConvertOfficial": LampConvertOfficial,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LAMP_LoadMotion": "LAMP Load Motion",
    "LAMP_LoadOfficialCheckpoint": "LAMP Load Official Checkpoint",
    "LAMP_ConvertOfficial": "LAMP Convert Official",
}
