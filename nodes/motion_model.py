"""The ``LAMP_MODEL`` socket type: a loaded LAMP video UNet plus what is known about it.

The UNet's weights stay on the offload device (CPU) while idle. For a run, :meth:`LampModel.on_device`
builds a working copy on the compute device in the compute dtype and drops it afterwards (also on Cancel
or an error), so the stored weights are never modified and nothing stays on the GPU between runs.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import torch

from . import host

log = logging.getLogger("ComfyUI-LAMP")

#: ComfyUI's VAE works on raw latents; SD-1.x models see them times this factor (``latent_format.SD15``).
SD1_LATENT_SCALE = 0.18215

#: Names of ComfyUI model-config classes, for messages.
_FAMILY_NAMES = {
    "SD15": "SD-1.5", "SD15_instructpix2pix": "SD-1.5 InstructPix2Pix", "SD20": "SD-2.x", "SD21UnclipL": "SD-2.1 unCLIP",
    "SD21UnclipH": "SD-2.1 unCLIP", "SDXL": "SD-XL", "SDXLRefiner": "SD-XL refiner", "SSD1B": "SSD-1B (SD-XL family)",
    "Segmind_Vega": "Segmind Vega (SD-XL family)", "KOALA_700M": "KOALA (SD-XL family)",
    "KOALA_1B": "KOALA (SD-XL family)", "SDXL_instructpix2pix": "SD-XL InstructPix2Pix", "SD3": "SD3",
    "Flux": "Flux", "FluxSchnell": "Flux", "SVD_img2vid": "Stable Video Diffusion", "Stable_Zero123": "Zero123",
    "SD_X4Upscaler": "SD x4 upscaler", "StableCascade_C": "Stable Cascade", "AuraFlow": "AuraFlow",
    "HunyuanVideo": "HunyuanVideo", "WAN21_T2V": "Wan 2.1", "LTXV": "LTX-Video", "PixArtAlpha": "PixArt",
}

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
DTYPE_CHOICES = ["auto", "fp16", "bf16", "fp32"]


def resolve_dtype(choice: str, device: torch.device | None = None) -> torch.dtype:
    """``auto`` → what ComfyUI would use on ``device``; else the named dtype."""
    if choice == "auto":
        return host.auto_dtype(device)
    if choice not in DTYPES:
        raise ValueError(f"LAMP: dtype must be one of {DTYPE_CHOICES}, got {choice!r}")
    return DTYPES[choice]


def model_family(model: Any) -> tuple[str, bool]:
    """Name the family of a ComfyUI MODEL and say whether LAMP can use it (SD-1.x: 320 channels, context 768,
    no class/ADM input, conv proj_in, 4 latent input channels)."""
    base = getattr(model, "model", None)
    config = getattr(base, "model_config", None)
    cls = type(config).__name__ if config is not None else type(base).__name__
    unet = dict(getattr(config, "unet_config", None) or {})
    ok = (unet.get("context_dim") == 768 and unet.get("model_channels") == 320
          and unet.get("adm_in_channels") is None and not unet.get("use_linear_in_transformer", False)
          and unet.get("in_channels", 4) == 4 and not unet.get("use_temporal_resblock", False))
    name = _FAMILY_NAMES.get(cls, cls)
    if ok and cls not in ("SD15",):
        name = f"{name} (SD-1.x-shaped)"
    return name, ok


def require_sd1(model: Any) -> None:
    """Raise a ValueError that names the MODEL's family when it is not SD-1.x."""
    if model is None or not hasattr(model, "model"):
        raise ValueError("LAMP Load Motion: the 'model' input is not a ComfyUI MODEL. Connect the MODEL output "
                         "of CheckpointLoaderSimple (or UNETLoader) loading an SD-1.4/1.5 checkpoint.")
    name, ok = model_family(model)
    if ok:
        return
    unet = dict(getattr(getattr(model.model, "model_config", None), "unet_config", None) or {})
    details = ", ".join(f"{k}={unet[k]}" for k in ("context_dim", "model_channels", "adm_in_channels", "in_channels")
                        if k in unet)
    raise ValueError(
        f"LAMP Load Motion: the MODEL is {name}" + (f" ({details})" if details else "") + ", but LAMP motion "
        "files work only on an SD-1.x UNet (SD-1.4/1.5: context_dim=768, model_channels=320). Load an SD-1.5 "
        "checkpoint (e.g. v1-5-pruned-emaonly.safetensors) for the LAMP part; SD-XL belongs in the first-frame "
        "part of the workflow.")


def require_unet_weights(state: Mapping[str, Any], node: str) -> None:
    """Refuse a MODEL whose UNet has no weights (a failed or empty load), before they are blamed on the motion."""
    if not state:
        raise ValueError(f"{node}: the MODEL holds no UNet weights (an empty or failed checkpoint load). Reload the "
                         "SD-1.x checkpoint with CheckpointLoaderSimple and check ComfyUI's console for its errors.")


def estimate_bytes(unet: torch.nn.Module, dtype: torch.dtype, frames: int, h: int, w: int) -> int:
    """Rough device memory of one CFG sampling run: weights plus ~64 top-level activations."""
    size = torch.finfo(dtype).bits // 8
    params = sum(p.numel() for p in unet.parameters()) * size
    channels = (getattr(unet, "config", None) or {}).get("block_out_channels", [320])[0]
    activation = 2 * frames * channels * h * w * size
    return int(params + 64 * activation)


@dataclass
class LampModel:
    """A LAMP video UNet ready for sampling (what flows through ``LAMP_MODEL`` sockets).

    ``unet`` lives on the offload device in ``storage_dtype``; ``metadata`` is the motion file's metadata
    (prompt, frames, resolution …); ``source`` names where it came from (shown in logs and errors).
    """

    unet: torch.nn.Module
    source: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def storage_dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def context_dim(self) -> int:
        return int(self.unet.config["cross_attention_dim"])

    def describe(self) -> str:
        bits = [self.source]
        for key in ("motion", "prompt", "frames", "resolution"):
            if self.metadata.get(key):
                bits.append(f"{key}={self.metadata[key]}")
        return ", ".join(bits)

    @contextlib.contextmanager
    def on_device(self, device: torch.device, dtype: torch.dtype, frames: int, h: int, w: int
                  ) -> Iterator[torch.nn.Module]:
        """Yield the UNet on ``device`` in ``dtype`` for one run, after asking ComfyUI to make room for it.

        The stored weights are used as they are when they already fit; otherwise a working copy is built
        and dropped at exit (also after a Cancel or an error), and the allocator cache is emptied.
        """
        host.make_room(estimate_bytes(self.unet, dtype, frames, h, w), device)
        stored = next(self.unet.parameters())
        working = None
        try:
            if stored.device == device and stored.dtype == dtype:
                yield self.unet
                return
            with torch.device("meta"):
                working = type(self.unet)(self.unet.config)
            working = working.to(dtype=dtype).to_empty(device=device)
            working.load_state_dict(self.unet.state_dict())
            working.eval()
            yield working
        finally:
            del working
            host.empty_cache()
