"""LAMP Color Match: the paper's post-processing (histogram matching / AdaIN of every frame to frame one)."""
from __future__ import annotations

import logging
from typing import Optional

import torch

from lamp_model.checks import finite
from lamp_model.postprocess import COLOR_MATCH_MODES, color_match

from . import host

log = logging.getLogger("ComfyUI-LAMP")


def _check_image(image: torch.Tensor, name: str) -> None:
    if not torch.is_tensor(image) or image.ndim != 4 or image.shape[-1] not in (3, 4) or image.shape[0] < 1:
        shape = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
        raise ValueError(f"LAMP Color Match: '{name}' must be a ComfyUI IMAGE [N,H,W,3], got {shape}.")
    try:
        finite(f"'{name}'", image)
    except ValueError as e:
        raise ValueError(f"LAMP Color Match: {e}; the frames were probably decoded from a NaN latent (see the LAMP "
                         "Sampler's dtype).") from None


class LampColorMatch:
    """LAMP Color Match node: IMAGE batch (+ optional reference) → colour-matched IMAGE batch."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The decoded video frames (VAE Decode of the LAMP Sampler's latent)."}),
                "mode": (list(COLOR_MATCH_MODES), {"default": "histogram",
                                                    "tooltip": "histogram: per-channel histogram matching (official); "
                                                               "adain: mean/std transfer, gentler; both: AdaIN then "
                                                               "histogram."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                       "tooltip": "1: fully matched; 0: unchanged; in between: a blend."}),
            },
            "optional": {
                "reference": ("IMAGE", {"tooltip": "Match to this image instead of frame one (first image of the "
                                                   "batch; resized to the frames' size)."}),
                "static": ("BOOLEAN", {"default": False,
                                       "tooltip": "Take the colour statistics only over the pixels that did not "
                                                  "change from the reference, so a subject that grows or shrinks "
                                                  "keeps its new size (not in the paper; pair with the LAMP "
                                                  "Sampler's color_consistency static)."}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The frames with colours matched; chain into SaveAnimatedWEBP, CreateVideo or Video Combine.",)
    FUNCTION = "match"
    CATEGORY = "LAMP"
    DESCRIPTION = ("Removes colour drift and flicker: matches every frame's colours to frame one (or to a "
                   "reference image), as LAMP's official post-processing does after decoding.")

    def match(self, images: torch.Tensor, mode: str = "histogram", strength: float = 1.0,
              reference: Optional[torch.Tensor] = None, static: bool = False) -> tuple[torch.Tensor]:
        _check_image(images, "images")
        if mode not in COLOR_MATCH_MODES:
            raise ValueError(f"LAMP Color Match: mode must be one of {list(COLOR_MATCH_MODES)}, got {mode!r}.")
        if not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"LAMP Color Match: strength must be between 0 and 1, got {strength}.")
        frames = images[..., :3].float()
        ref = None
        if reference is not None:
            _check_image(reference, "reference")
            if reference.shape[0] > 1:
                log.warning("[LAMP] Color Match reference is a batch of %d; using the first image.", reference.shape[0])
            ref = reference[:1, :, :, :3].float().to(frames.device)
            if ref.shape[1:3] != frames.shape[1:3]:
                ref = torch.nn.functional.interpolate(ref.movedim(-1, 1), size=tuple(frames.shape[1:3]),
                                                      mode="bilinear", align_corners=False,
                                                      antialias=True).clamp(0, 1).movedim(1, -1)
            ref = ref[0]
        elif frames.shape[0] == 1:
            log.warning("[LAMP] Color Match got a single image and no reference: nothing to match.")
        out = color_match(frames, ref, mode=mode, strength=float(strength), static=bool(static))
        return (out.to(host.intermediate_device(), torch.float32).contiguous(),)


NODE_CLASS_MAPPINGS = {"LAMP_ColorMatch": LampColorMatch}
NODE_DISPLAY_NAME_MAPPINGS = {"LAMP_ColorMatch": "LAMP Color Match"}
