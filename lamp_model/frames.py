"""Fitting images to the video size: the one resize used for first frames and for training clips."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.geometry.transform import resize as kornia_resize

#: ``stretch`` ignores the aspect ratio (the official code); ``center-crop`` fills the frame and cuts the
#: overflow; ``pad`` fits the whole image and fills the rest with black.
RESIZE_MODES = ("stretch", "center-crop", "pad")


def fit_frames(frames: torch.Tensor, width: int, height: int, mode: str = "stretch") -> torch.Tensor:
    """Resize ``frames`` ``[N, 3, H, W]`` (0..1) to ``[N, 3, height, width]`` (bilinear, antialiased)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, not {mode!r}")
    x = frames.float()
    h0, w0 = x.shape[-2:]
    if (h0, w0) == (height, width):
        return x

    def resize(h: int, w: int) -> torch.Tensor:
        return kornia_resize(x, (h, w), interpolation="bilinear", antialias=True).clamp(0, 1)

    if mode == "stretch":
        return resize(height, width)
    if mode == "center-crop":
        s = max(height / h0, width / w0)
        h, w = max(height, math.ceil(h0 * s)), max(width, math.ceil(w0 * s))
        top, left = (h - height) // 2, (w - width) // 2
        return resize(h, w)[:, :, top:top + height, left:left + width]
    s = min(height / h0, width / w0)
    h, w = min(height, max(1, round(h0 * s))), min(width, max(1, round(w0 * s)))
    top, left = (height - h) // 2, (width - w) // 2
    return F.pad(resize(h, w), (left, width - w - left, top, height - h - top), value=0.0)
