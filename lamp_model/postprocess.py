"""Colour consistency: latent AdaIN (used inside the sampler) and pixel-space histogram matching.

Both reproduce the official LAMP code:

* :func:`adain_latent` is the official ``adaptive_instance_normalization``: per sample and per channel over
  H×W, ``(x − μ_x)/σ_x · σ_ref + μ_ref`` with ``σ = sqrt(unbiased var + 1e-8)``. It always computes in fp32
  (the official fp16 run loses the 1e-8 to underflow) and returns ``x``'s dtype.
* :func:`match_histogram` is the official script's per-channel 256-bin CDF lookup (``his_match``): both images
  are scaled by 255 and truncated to uint8, each level of the frame maps to the smallest reference level whose
  CDF reaches the frame's CDF. Batched over frames and channels in torch; the LUT is exact, not approximate.

:func:`color_match` wraps both for the ComfyUI colour-match node.
"""
from __future__ import annotations

import torch

from .checks import finite

#: The variance epsilon of the official AdaIN (inside the square root).
ADAIN_EPS = 1e-8


def _mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and ``sqrt(unbiased var + eps)`` over the last two (spatial) dims, keepdim."""
    flat = x.flatten(-2)
    if flat.shape[-1] < 2:
        raise ValueError(f"AdaIN needs at least 2 pixels per channel, got spatial size {tuple(x.shape[-2:])}")
    var = flat.var(dim=-1, unbiased=True) + ADAIN_EPS
    return flat.mean(dim=-1)[..., None, None], var.sqrt()[..., None, None]


def adain_latent(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Give ``x`` the per-channel mean and std of ``ref`` (official latent AdaIN).

    ``x`` is ``[B, C, H, W]`` with ``ref`` ``[B, C, H, W]``, or a video ``[B, C, F, H, W]`` with ``ref`` one frame
    (``[B, C, H, W]`` or ``[B, C, 1, H, W]``, applied to every frame) or ``[B, C, F, H, W]`` (frame by frame).
    Statistics are per sample, per channel (and per frame) over H×W only; time is never pooled. Computed in
    fp32, returned in ``x``'s dtype.
    """
    if x.ndim not in (4, 5):
        raise ValueError(f"adain_latent expects x [B, C, H, W] or [B, C, F, H, W], got {tuple(x.shape)}")
    if x.ndim == 5 and ref.ndim == 4:
        ref = ref.unsqueeze(2)
    if ref.ndim != x.ndim or ref.shape[:2] != x.shape[:2] or (x.ndim == 5 and ref.shape[2] not in (1, x.shape[2])):
        raise ValueError(f"adain_latent: reference shape {tuple(ref.shape)} does not fit x {tuple(x.shape)}; "
                         "it needs the same batch and channels, and one frame or as many frames as x.")
    finite("adain_latent x", x)
    finite("adain_latent ref", ref)
    xf, rf = x.float(), ref.to(device=x.device, dtype=torch.float32)
    x_mean, x_std = _mean_std(xf)
    r_mean, r_std = _mean_std(rf)
    return ((xf - x_mean) / x_std * r_std + r_mean).to(x.dtype)


# ---------------------------------------------------------------------------------------------- histogram
def _channels_first(frames: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Frames as ``[F, 3, H, W]`` and ref as ``[3, H', W']``; also whether the input was channels-last."""
    if frames.ndim != 4 or 3 not in (frames.shape[-1], frames.shape[1]):
        raise ValueError(f"expected frames [F, H, W, 3] (ComfyUI IMAGE) or [F, 3, H, W], got {tuple(frames.shape)}")
    last = frames.shape[-1] == 3
    if ref.ndim == 4 and ref.shape[0] == 1:
        ref = ref[0]
    if ref.ndim != 3 or (ref.shape[-1] if last else ref.shape[0]) != 3:
        layout = "[H, W, 3]" if last else "[3, H, W]"
        raise ValueError(f"reference must be one frame in the frames' layout {layout}, got {tuple(ref.shape)}")
    if last:
        return frames.permute(0, 3, 1, 2), ref.permute(2, 0, 1), True
    return frames, ref, False


def _levels(x: torch.Tensor) -> torch.Tensor:
    """0..1 floats → integer levels 0..255 the official way: ×255 in fp32, truncated (not rounded)."""
    return (x.float().clamp(0, 1) * 255.0).to(torch.uint8).long()


def _cdf(levels: torch.Tensor) -> torch.Tensor:
    """Per-row 256-bin CDF (float64, on the CPU) of ``levels [N, P]``, as ``cumsum(count / P)``.

    The counts come from one batched ``bincount`` on the tensor's device; the cumulative sum runs on the CPU
    in float64 in the official order, so CDF ties break exactly as in the official NumPy code on any device.
    """
    rows, pixels = levels.shape
    offsets = torch.arange(rows, device=levels.device)[:, None] * 256
    counts = torch.bincount((levels + offsets).flatten(), minlength=rows * 256).view(rows, 256)
    return torch.cumsum(counts.cpu().double() / pixels, dim=1)


def match_histogram(frames: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Match every frame's per-channel histogram to ``ref`` (official 256-bin CDF lookup).

    ``frames`` is ``[F, H, W, 3]`` or ``[F, 3, H, W]`` in 0..1, ``ref`` one frame in the same layout
    (``[H, W, 3]`` or ``[3, H, W]``; its size may differ). For each frame and channel, level v (``⌊255·x⌋``)
    becomes the smallest reference level u with ``CDF_ref[u] ≥ CDF_frame[v]``, divided by 255. Values outside
    0..1 are clamped first. Returns the same layout and dtype; every output value is a multiple of 1/255.

    The official script calls this for frames 1.. with frame 0 as the reference and leaves frame 0 as it is:
    ``torch.cat([video[:1], match_histogram(video[1:], video[0])])`` (or :func:`color_match`).
    """
    if not (torch.is_tensor(frames) and torch.is_tensor(ref)):
        raise TypeError("match_histogram expects torch tensors")
    x, r, last = _channels_first(frames, ref)
    finite("match_histogram frames", frames)
    finite("match_histogram ref", ref)
    n, c = x.shape[:2]
    if n == 0:
        return frames.clone()
    lv = _levels(x).reshape(n * c, -1)                       # [F·3, H·W]
    cdf_frames = _cdf(lv).view(n, c, 256)
    cdf_ref = _cdf(_levels(r.to(x.device)).reshape(c, -1))  # [3, 256]
    lut = torch.searchsorted(cdf_ref.expand(n, c, 256).contiguous(), cdf_frames, side="left").clamp_(0, 255)
    values = (lut.double() / 255.0).to(device=x.device, dtype=frames.dtype).view(n * c, 256)
    out = torch.gather(values, 1, lv).view_as(x)
    return out.permute(0, 2, 3, 1) if last else out


# ---------------------------------------------------------------------------------------------- node helper
COLOR_MATCH_MODES = ("histogram", "adain", "both")


def color_match(frames: torch.Tensor, ref: torch.Tensor | None = None, mode: str = "histogram",
                strength: float = 1.0) -> torch.Tensor:
    """Match the colours of a decoded video to a reference frame (the Color Match node).

    ``frames`` ``[F, H, W, 3]`` or ``[F, 3, H, W]`` in 0..1. ``ref`` is one frame in the same layout; by default
    frame 0, which is then returned unchanged (as in the official script). Modes:

    * ``"histogram"``: :func:`match_histogram` (official post-processing);
    * ``"adain"``: per-channel mean/std transfer over H×W in pixel space (the latent AdaIN formula), clamped
      to 0..1; keeps the frame's detail, shifts only brightness/contrast per channel;
    * ``"both"``: AdaIN, then histogram matching. Because histogram matching only depends on the order of
      values, the result is the histogram result except where AdaIN's clamping merged levels.

    ``strength`` in 0..1 blends the matched frames with the input (1 = fully matched).
    """
    if mode not in COLOR_MATCH_MODES:
        raise ValueError(f"color_match mode must be one of {COLOR_MATCH_MODES}, got {mode!r}")
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"color_match strength must be in [0, 1], got {strength}")
    keep_first = ref is None
    if keep_first:
        ref = frames[0]
    targets = frames[1:] if keep_first else frames
    if targets.shape[0] == 0 or strength == 0:
        return frames.clone()
    x, r, last = _channels_first(targets, ref)
    matched = x
    if mode in ("adain", "both"):
        matched = adain_latent(x.float(), r[None].expand(x.shape[0], -1, -1, -1)).clamp(0, 1)
    if mode in ("histogram", "both"):
        matched = match_histogram(matched, r)
    out = torch.lerp(x.float(), matched.float(), float(strength)).to(frames.dtype)
    out = out.permute(0, 2, 3, 1) if last else out
    return torch.cat([frames[:1], out]) if keep_first else out
