"""Shared-noise sampling: every frame's starting noise shares a component with frame 0's noise.

LAMP starts the denoising of frames 1.. from noise that is correlated across frames, which keeps the
video stable. The official code draws one independent Gaussian per frame and mixes frame 0's draw into
the others with a fixed weight ``alpha = 0.2``, as a plain convex mix that is *not* renormalised (each
mixed frame has std ``sqrt(alpha² + (1-alpha)²)`` ≈ 0.825). Frame 0's own noise is only the shared
component: the sampler replaces frame 0 by the clean first-frame latent right after the mix.
"""
from __future__ import annotations

from typing import Sequence

import torch

#: The official mixing weight (``base_ratio`` in the official pipeline).
DEFAULT_ALPHA = 0.2


def shared_noise(raw_noise: torch.Tensor, alpha: float = DEFAULT_ALPHA) -> torch.Tensor:
    """Mix frame 0's noise into every later frame: ``x_f = alpha·raw_0 + (1-alpha)·raw_f`` for f ≥ 1.

    ``raw_noise`` is ``[B, C, F, H, W]`` independent Gaussian noise; frame 0 is returned unchanged. The mix
    is not renormalised (official behaviour). ``alpha = 0`` returns independent noise, ``alpha = 1`` the same
    noise for every frame. Returns a new tensor; the input is left untouched.
    """
    if not torch.is_tensor(raw_noise) or raw_noise.ndim != 5:
        shape = tuple(raw_noise.shape) if torch.is_tensor(raw_noise) else type(raw_noise).__name__
        raise ValueError(f"shared_noise expects video noise [B, C, F, H, W], got {shape}; "
                         "put the frames on dim 2 (engine layout).")
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"shared-noise alpha must be in [0, 1] (official 0.2), got {alpha}")
    mixed = raw_noise.clone()
    mixed[:, :, 1:] = alpha * raw_noise[:, :, :1] + (1 - alpha) * raw_noise[:, :, 1:]
    return mixed


def make_raw_noise(seed: int, shape: Sequence[int], dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Independent Gaussian noise of ``shape`` drawn from ``seed`` on the CPU, then moved to ``device``.

    Drawing on the CPU makes a seed give the same video on every device (CUDA, MPS, CPU). This is the RAW
    noise that :func:`shared_noise` (or ``sample_video``) mixes; ``make_raw_noise(1240, (1, 4, 6, 16, 16))``
    equals the official fixture's draw bit for bit.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = torch.randn(tuple(int(s) for s in shape), generator=generator, dtype=torch.float32)
    return noise.to(device=device, dtype=dtype)
