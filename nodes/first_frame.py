"""LAMP First Frame: the image that sets the content of the video, encoded with the SD-1.x VAE."""
from __future__ import annotations

import logging
from typing import Any

import torch

from lamp_model.checks import finite
from lamp_model.frames import RESIZE_MODES, fit_frames

from . import host

log = logging.getLogger("ComfyUI-LAMP")

#: SD-1.x UNets halve the latent three times; other sizes work but are padded inside the UNet.
UNET_MULTIPLE = 64
#: Longest video: the LAMP Sampler holds one segment's activations at a time, the LATENT is small.
MAX_FRAMES = 1024


def fit_image(image: torch.Tensor, width: int, height: int, mode: str) -> torch.Tensor:
    """Resize one IMAGE ``[1,H,W,3]`` (0..1) to ``[1,height,width,3]`` with the engine's ``fit_frames``."""
    try:
        return fit_frames(image.movedim(-1, 1), width, height, mode).movedim(1, -1).contiguous()
    except ValueError as exc:
        raise ValueError(f"LAMP First Frame: {exc}") from None


class LampFirstFrame:
    """LAMP First Frame: IMAGE + SD-1.x VAE → a video LATENT whose frame 0 is the image."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "Frame one: from SD-XL (VAE Decode), LoadImage, a ControlNet edit… "
                                           "With a batch, the first image is used."}),
            "vae": ("VAE", {"tooltip": "The VAE of the SD-1.x checkpoint the LAMP model is built on."}),
            "width": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 8,
                              "tooltip": "Video width in pixels, a multiple of 8 (LAMP is trained at 512×320)."}),
            "height": ("INT", {"default": 320, "min": 64, "max": 2048, "step": 8,
                               "tooltip": "Video height in pixels, a multiple of 8 (LAMP is trained at 512×320)."}),
            "frames": ("INT", {"default": 16, "min": 2, "max": MAX_FRAMES,
                               "tooltip": "Number of video frames including frame one (LAMP is trained on 16). "
                                          "More than 16 (48, 64, 128 …) makes a long video: the LAMP Sampler's "
                                          "long_strategy cuts it into 16-frame segments or windows."}),
            "resize": (list(RESIZE_MODES), {"default": "stretch",
                                      "tooltip": "How the image is fitted to width×height: stretch (official), "
                                                 "center-crop, or pad with black."}),
        }}

    RETURN_TYPES = ("LATENT", "IMAGE")
    RETURN_NAMES = ("latent", "first_frame")
    OUTPUT_TOOLTIPS = ("Video latent [frames,4,h,w]: frame 0 is the encoded image, the rest is filled by the "
                       "LAMP Sampler (or KSampler with a LAMP MODEL: its noise mask keeps frame 0).", "The resized frame one as the VAE saw it.")
    FUNCTION = "encode"
    CATEGORY = "LAMP"
    DESCRIPTION = ("Sets the content of the video: resizes frame one to the video size and encodes it with the "
                   "SD-1.x VAE. The LAMP Sampler keeps this frame clean and only generates the motion after it.")

    def encode(self, image: torch.Tensor, vae: Any, width: int = 512, height: int = 320, frames: int = 16,
               resize: str = "stretch") -> tuple | dict:
        if not torch.is_tensor(image) or image.ndim != 4 or image.shape[0] < 1 or image.shape[-1] not in (3, 4):
            shape = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
            raise ValueError(f"LAMP First Frame: 'image' must be a ComfyUI IMAGE [N,H,W,3], got {shape}.")
        bad = [f"{name} {value} (use {value // 8 * 8} or {value // 8 * 8 + 8})"
               for name, value in (("width", width), ("height", height)) if value % 8]
        if bad:
            raise ValueError(f"LAMP First Frame: {' and '.join(bad)} {'is' if len(bad) == 1 else 'are'} not a "
                             "multiple of 8.")
        try:
            finite("'image'", image[:1])
        except ValueError as e:
            raise ValueError(f"LAMP First Frame: {e}.") from None
        for name, value in (("width", width), ("height", height)):
            if value % UNET_MULTIPLE:
                log.warning("[LAMP] %s %d is not a multiple of %d: the UNet pads internally; 512×320 is what LAMP "
                            "was trained at.", name, value, UNET_MULTIPLE)
        if frames < 2:
            raise ValueError(f"LAMP First Frame: frames must be at least 2 (frame one + motion), got {frames}. "
                             "LAMP is trained on 16.")
        warnings = []
        if image.shape[0] > 1:
            warnings.append(f"First Frame got a batch of {image.shape[0]} images and uses only the first one as frame "
                            "one (the others are ignored); pick one image, e.g. with ImageFromBatch.")
        pixels = fit_image(image[:1, :, :, :3], width, height, resize)
        encoded = vae.encode(pixels)
        if encoded.ndim == 5:  # video-capable VAEs may return [B,C,1,h,w]
            encoded = encoded[:, :, 0]
        if encoded.shape[1] != 4:
            raise ValueError(f"LAMP First Frame: the VAE gives {encoded.shape[1]}-channel latents; LAMP needs the "
                             "4-channel SD-1.x VAE. Connect the VAE of the SD-1.x checkpoint.")
        if not bool(torch.isfinite(encoded).all()):
            raise ValueError("LAMP First Frame: the VAE returned NaN/inf latents for this image; run the VAE in fp32 "
                             "(--fp32-vae) or use another SD-1.x VAE.")
        device = host.intermediate_device()
        encoded = encoded.to(device=device, dtype=torch.float32)
        samples = torch.zeros((frames, *encoded.shape[1:]), device=device, dtype=torch.float32)
        samples[:1] = encoded
        # 0 on frame 0, 1 elsewhere: ComfyUI's own samplers (native path) keep frame 0 as it is.
        noise_mask = torch.ones((frames, 1, *encoded.shape[2:]), device=device, dtype=torch.float32)
        noise_mask[0] = 0
        return host.node_result(({"samples": samples, "noise_mask": noise_mask}, pixels.to(device)), warnings)


NODE_CLASS_MAPPINGS = {"LAMP_FirstFrame": LampFirstFrame}
NODE_DISPLAY_NAME_MAPPINGS = {"LAMP_FirstFrame": "LAMP First Frame"}
