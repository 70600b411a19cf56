"""LAMP Shared Noise: a seed and the shared-noise weight, as an object the LAMP Sampler uses and that is
also a ComfyUI ``NOISE`` (``.seed`` + ``generate_noise(latent)``) for SamplerCustomAdvanced."""
from __future__ import annotations

from typing import Sequence

import torch

from lamp_model.noise import DEFAULT_ALPHA, make_raw_noise, shared_noise


class LampNoise:
    """LAMP's shared noise: independent Gaussian noise per frame from ``seed`` (drawn on the CPU, so a seed
    gives the same video on every device), with frame 0's noise mixed into the others by ``alpha``."""

    def __init__(self, seed: int, alpha: float = DEFAULT_ALPHA) -> None:
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"LAMP Shared Noise: alpha must be in [0, 1] (official 0.2), got {alpha}")
        self.seed = int(seed)
        self.alpha = float(alpha)

    def raw(self, shape: Sequence[int]) -> torch.Tensor:
        """The raw (unmixed) noise ``[B,C,F,h,w]`` that the engine's sampler mixes itself."""
        return make_raw_noise(self.seed, shape)

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        """ComfyUI NOISE protocol: noise shaped like ``input_latent["samples"]``, already mixed. A 4-D latent
        ``[F,C,h,w]`` is read as a video with frames on the batch axis; a 5-D one as ``[B,C,F,h,w]``."""
        samples = input_latent["samples"]
        if samples.ndim == 5:
            return shared_noise(self.raw(samples.shape), self.alpha)
        frames, channels, h, w = samples.shape
        mixed = shared_noise(self.raw((1, channels, frames, h, w)), self.alpha)
        return mixed[0].transpose(0, 1).contiguous()


class LampSharedNoise:
    """LAMP Shared Noise node: seed + alpha → NOISE."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                             "tooltip": "Random seed of the starting noise (same seed, same video on any device)."}),
            "alpha": ("FLOAT", {"default": DEFAULT_ALPHA, "min": 0.0, "max": 1.0, "step": 0.01,
                                "tooltip": "Share of frame one's noise in every other frame (official 0.2). Higher: "
                                           "steadier but less motion; 0: independent noise per frame."}),
        }}

    RETURN_TYPES = ("NOISE",)
    RETURN_NAMES = ("noise",)
    OUTPUT_TOOLTIPS = ("LAMP shared noise for the LAMP Sampler; also works as NOISE for SamplerCustomAdvanced.",)
    FUNCTION = "make"
    CATEGORY = "LAMP"
    DESCRIPTION = ("LAMP's shared-noise initialisation: every frame starts from its own Gaussian noise mixed with "
                   "frame one's (noise_f = alpha·noise_0 + (1-alpha)·noise_f). This keeps the video coherent.")

    def make(self, seed: int, alpha: float = DEFAULT_ALPHA) -> tuple[LampNoise]:
        return (LampNoise(seed, alpha),)


NODE_CLASS_MAPPINGS = {"LAMP_SharedNoise": LampSharedNoise}
NODE_DISPLAY_NAME_MAPPINGS = {"LAMP_SharedNoise": "LAMP Shared Noise"}
