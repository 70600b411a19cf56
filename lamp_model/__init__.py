"""LAMP engine: the video UNet, its weights, sampling, post-processing and training. Never imports ComfyUI.

The public entry points (fixed names, see DESIGN.md) are imported lazily so that ``import lamp_model``
stays cheap and a missing optional dependency of one part does not break the others.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "LampUNet3D": "unet3d",
    "inflate_unet": "unet3d",
    "trainable_parameters": "unet3d",
    "load_unet": "weights",
    "save_motion": "weights",
    "read_motion": "weights",
    "convert_official": "weights",
    "WeightsFormatError": "weights",
    "sample_video": "sampling",
    "sample_on_sigmas": "sigma_sampling",
    "official_sigmas": "sigma_sampling",
    "BorrowedLampUNet": "borrowed_unet",
    "sample_long_video": "long_video",
    "plan_long_video": "long_video",
    "ddim_invert": "inversion",
    "edit_video": "editing",
    "shared_noise": "noise",
    "make_raw_noise": "noise",
    "adain_latent": "postprocess",
    "match_histogram": "postprocess",
    "color_match": "postprocess",
    "write_video": "video_io",
    "write_strip": "video_io",
    "lamp_loss": "train",
    "TrainConfig": "train",
    "MotionTrainer": "train",
    "load_video_set": "data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lamp_model' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
