"""The toy "VAE": a fixed, documented pixel-space codec from 32 px RGB images to 4 x 16 x 16 latents.

Each 2x2 pixel patch (12 numbers: 4 pixels x RGB, pixels scaled to -1..1) is projected on four fixed
orthonormal patterns: the patch mean of R, of G and of B, and one luminance detail pattern (top-left
minus bottom-right pixel, which responds to horizontal and vertical edges alike). ``encode`` is that
projection plus :data:`LATENT_SHIFT`, times :data:`LATENT_SCALE` (the toy's 0.18215, per channel: 1 for
the colour means, 4 for the faint detail pattern, so all four channels spread about 0.7 and the UNet's
errors on the detail channel shrink 4x in pixels); ``decode`` undoes both and applies the transpose,
clamped to 0..1.
The shift (+1 on the three colour channels) centres the latents of the toy's mostly dark pictures on
zero: SD-1.x's noise schedule keeps a trace of the signal's mean at its last timestep while sampling
starts from zero-mean noise, so off-centre latents would come out with washed-out backgrounds (SD's own
VAE latents are close to zero-mean). ``encode(decode(z)) == z`` for every ``z``
that decodes inside 0..1; ``decode(encode(x))`` keeps the 2x2 mean colour and one detail pattern of
``x``, i.e. the image at 16 px with a little edge detail.
Nothing is learned, so the codec needs no weights and cannot be the reason a motion is (not) learned.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LATENT_SCALE = torch.tensor([1.0, 1.0, 1.0, 4.0])
LATENT_SHIFT = torch.tensor([1.0, 1.0, 1.0, 0.0])
LATENT_CHANNELS = 4
FACTOR = 2


def _basis() -> torch.Tensor:
    """[4, 12] orthonormal rows over the pixel-unshuffled channels (colour-major, then the 2x2 patch)."""
    basis = torch.zeros(4, 3, 4)
    for c in range(3):
        basis[c, c] = 0.5  # (1, 1, 1, 1) / 2: the patch mean of one colour
    basis[3, :, 0], basis[3, :, 3] = 1 / math.sqrt(6), -1 / math.sqrt(6)  # luminance, top-left minus bottom-right
    return basis.reshape(4, 12)


_BASIS = _basis()


def encode(images: torch.Tensor) -> torch.Tensor:
    """RGB ``[N, 3, H, W]`` in 0..1 (H, W even) -> latents ``[N, 4, H/2, W/2]``."""
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] % 2 or images.shape[-2] % 2:
        raise ValueError(f"toy codec encodes RGB images [N, 3, H, W] with even H and W, got {tuple(images.shape)}")
    patches = F.pixel_unshuffle(images.float() * 2 - 1, FACTOR)
    return (torch.einsum("kc,nchw->nkhw", _BASIS, patches) + LATENT_SHIFT[:, None, None]) * LATENT_SCALE[:, None, None]


def decode(latents: torch.Tensor) -> torch.Tensor:
    """Latents ``[N, 4, h, w]`` -> RGB ``[N, 3, 2h, 2w]`` in 0..1 (clamped)."""
    if latents.ndim != 4 or latents.shape[1] != LATENT_CHANNELS:
        raise ValueError(f"toy codec decodes latents [N, 4, h, w], got {tuple(latents.shape)}")
    patches = torch.einsum("kc,nkhw->nchw", _BASIS, latents.float() / LATENT_SCALE[:, None, None] - LATENT_SHIFT[:, None, None])
    return ((F.pixel_shuffle(patches, FACTOR) + 1) / 2).clamp(0, 1)


def encode_video(frames: torch.Tensor) -> torch.Tensor:
    """Frames ``[F, 3, H, W]`` -> one video latent ``[1, 4, F, h, w]`` (the engine's layout)."""
    return encode(frames).permute(1, 0, 2, 3).unsqueeze(0)


def decode_video(latents: torch.Tensor) -> torch.Tensor:
    """Video latents ``[B, 4, F, h, w]`` -> frames ``[B, F, 3, H, W]`` in 0..1."""
    b, c, f, h, w = latents.shape
    return decode(latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)).view(b, f, 3, 2 * h, 2 * w)
