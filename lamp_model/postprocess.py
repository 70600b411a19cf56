"""Colour consistency: latent AdaIN (used inside the sampler) and pixel-space histogram matching.

Both reproduce the official LAMP code:

* :func:`adain_latent` is the official ``adaptive_instance_normalization``: per sample and per channel over
  H×W, ``(x − μ_x)/σ_x · σ_ref + μ_ref`` with ``σ = sqrt(unbiased var + 1e-8)``. It always computes in fp32
  (the official fp16 run loses the 1e-8 to underflow) and returns ``x``'s dtype.
* :func:`match_histogram` is the official script's per-channel 256-bin CDF lookup (``his_match``): both images
  are scaled by 255 and truncated to uint8, each level of the frame maps to the smallest reference level whose
  CDF reaches the frame's CDF. Batched over frames and channels in torch; the LUT is exact, not approximate.

:func:`color_match` wraps both for the ComfyUI colour-match node.

**Static-pixel variant (not in the paper).** A whole-frame transfer treats a change of size as a colour
change: when the object grows its share of the pixels grows, and matching the frame's statistics to frame 0's
shrinks and fades it again. With a ``mask`` (:func:`static_mask`: the pixels that changed least from the
reference, i.e. what did not move) both functions fit their per-channel map on those pixels only and apply it
to the whole frame, so a global colour drift is still corrected but a change of size is not undone.
"""
from __future__ import annotations

import torch

from .checks import finite

#: The variance epsilon of the official AdaIN (inside the square root).
ADAIN_EPS = 1e-8
#: A static mask holding less than this fraction of a frame's pixels is not trusted: that frame's statistics
#: fall back to the whole frame.
MIN_STATIC_FRACTION = 1 / 16
#: Masked AdaIN adds this fraction of the reference's whole-frame variance to both masked variances. Static
#: pixels are often a plain background whose std is ~0 in the reference and a little noise in the frame; their
#: bare ratio would flatten the whole frame. The floor keeps the scale near 1 there and barely damps it
#: where the static pixels are textured.
STATIC_VAR_FLOOR = 0.1


def static_mask(x: torch.Tensor, ref: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    """The pixels of ``x`` that changed least from ``ref``: a bool tensor of ``x``'s shape with ``channel_dim``
    of size 1.

    The per-pixel distance is the sum over channels of ``|x − ref|``; a pixel is static when its distance is at
    most the frame's median distance (torch's lower median over the last two, spatial, dims), so at least
    half the pixels are static and whatever moved (a smaller share) is left out. ``ref`` broadcasts against
    ``x`` (a video ``[B, C, F, H, W]`` may take a ``[B, C, H, W]`` reference). Deterministic.
    """
    if x.ndim == 5 and ref.ndim == 4 and channel_dim == 1:
        ref = ref.unsqueeze(2)
    dist = (x.float() - ref.to(device=x.device, dtype=torch.float32)).abs().sum(dim=channel_dim, keepdim=True)
    if channel_dim in (-1, dist.ndim - 1):  # channels last: the spatial dims are the two before it
        return dist <= dist[..., 0].flatten(-2).median(dim=-1).values[..., None, None, None]
    return dist <= dist.flatten(-2).median(dim=-1).values[..., None, None]


def _static_weights(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``mask`` as float weights broadcast to ``like``'s shape; frames whose mask is too small
    (:data:`MIN_STATIC_FRACTION`, at least 2 pixels) get all ones (the whole frame)."""
    w = mask.to(device=like.device, dtype=torch.float32).expand_as(like)
    pixels = w.shape[-1] * w.shape[-2]
    count = w.flatten(-2).sum(dim=-1)[..., None, None]
    return torch.where(count >= max(2.0, MIN_STATIC_FRACTION * pixels), w, torch.ones_like(w))


def _mean_std(x: torch.Tensor, weights: torch.Tensor | None = None,
              floor: torch.Tensor | float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and ``sqrt(unbiased var + eps)`` over the last two (spatial) dims, keepdim.

    With ``weights`` (of ``x``'s shape, see :func:`_static_weights`) the moments are weighted, the variance
    divided by ``Σw − 1``, and ``floor`` (keepdim-shaped or a number) is added to it.
    """
    flat = x.flatten(-2)
    if flat.shape[-1] < 2:
        raise ValueError(f"AdaIN needs at least 2 pixels per channel, got spatial size {tuple(x.shape[-2:])}")
    if weights is None:
        var = flat.var(dim=-1, unbiased=True) + ADAIN_EPS
        return flat.mean(dim=-1)[..., None, None], var.sqrt()[..., None, None]
    w = weights.flatten(-2)
    count = w.sum(dim=-1, keepdim=True)
    mean = (w * flat).sum(dim=-1, keepdim=True) / count
    var = (w * (flat - mean) ** 2).sum(dim=-1, keepdim=True) / (count - 1)
    return mean[..., None], (var[..., None] + ADAIN_EPS + floor).sqrt()


def adain_latent(x: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Give ``x`` the per-channel mean and std of ``ref`` (official latent AdaIN).

    ``x`` is ``[B, C, H, W]`` with ``ref`` ``[B, C, H, W]``, or a video ``[B, C, F, H, W]`` with ``ref`` one frame
    (``[B, C, H, W]`` or ``[B, C, 1, H, W]``, applied to every frame) or ``[B, C, F, H, W]`` (frame by frame).
    Statistics are per sample, per channel (and per frame) over H×W only; time is never pooled. Computed in
    fp32, returned in ``x``'s dtype.

    ``mask`` (not official; e.g. ``static_mask(x, ref)``, broadcastable to ``x``, channel dim of size 1): the
    means and stds of ``x`` and ``ref`` are both taken over the masked pixels only (the same positions), with
    :data:`STATIC_VAR_FLOOR` of ``ref``'s whole-frame variance added to both variances, and the map is applied
    to every pixel. A frame whose mask holds under :data:`MIN_STATIC_FRACTION` of its pixels uses all of them.
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
    if mask is None:
        x_mean, x_std = _mean_std(xf)
        r_mean, r_std = _mean_std(rf)
    else:
        weights = _static_weights(mask, xf)
        floor = STATIC_VAR_FLOOR * _mean_std(rf)[1] ** 2
        x_mean, x_std = _mean_std(xf, weights, floor)
        r_mean, r_std = _mean_std(rf.expand_as(xf), weights, floor)
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


def _cdf(levels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row 256-bin CDF (float64, on the CPU) of ``levels [N, P]``, as ``cumsum(count / P)``.

    The counts come from one batched ``bincount`` on the tensor's device; the cumulative sum runs on the CPU
    in float64 in the official order, so CDF ties break exactly as in the official NumPy code on any device.
    With ``weights [N, P]`` (0/1) only the weighted pixels count and P is their number per row; the counts
    are summed before the division, so every row ends at exactly 1.
    """
    rows, pixels = levels.shape
    offsets = torch.arange(rows, device=levels.device)[:, None] * 256
    index = (levels + offsets).flatten()
    if weights is None:
        counts = torch.bincount(index, minlength=rows * 256).view(rows, 256)
        return torch.cumsum(counts.cpu().double() / pixels, dim=1)
    counts = torch.bincount(index, weights=weights.flatten().double(), minlength=rows * 256).view(rows, 256)
    return torch.cumsum(counts.cpu(), dim=1) / weights.double().sum(dim=1, keepdim=True).cpu()


def _fill_lut(lut: torch.Tensor, cdf: torch.Tensor) -> torch.Tensor:
    """A LUT ``[N, 256]`` fitted on a subset of the pixels, kept at the levels that subset holds (where its
    ``cdf [N, 256]`` rises) and continued elsewhere: linearly between the nearest held levels below and above,
    and by a shift beyond them (v above the highest held level hi becomes ``lut[hi] + (v − hi)``, below the
    lowest likewise). A bare CDF lookup would send every level the subset lacks (the object's, when the subset
    is the background) to the level of the subset just below it."""
    held = torch.diff(cdf, dim=1, prepend=torch.zeros_like(cdf[:, :1])) > 0
    v = torch.arange(256).expand_as(lut)
    below = torch.where(held, v, -1).cummax(dim=1).values               # nearest held level <= v, or -1
    above = torch.where(held, v, 256).flip(1).cummin(dim=1).values.flip(1)  # nearest held level >= v, or 256
    lo_val, hi_val = lut.gather(1, below.clamp(min=0)), lut.gather(1, above.clamp(max=255))
    span = (above - below).clamp(min=1)
    inside = lo_val + torch.div((hi_val - lo_val) * (v - below), span, rounding_mode="floor")
    out = torch.where(below < 0, hi_val - (above - v), torch.where(above > 255, lo_val + (v - below), inside))
    return out.clamp_(0, 255)


def match_histogram(frames: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Match every frame's per-channel histogram to ``ref`` (official 256-bin CDF lookup).

    ``frames`` is ``[F, H, W, 3]`` or ``[F, 3, H, W]`` in 0..1, ``ref`` one frame in the same layout
    (``[H, W, 3]`` or ``[3, H, W]``; its size may differ). For each frame and channel, level v (``⌊255·x⌋``)
    becomes the smallest reference level u with ``CDF_ref[u] ≥ CDF_frame[v]``, divided by 255. Values outside
    0..1 are clamped first. Returns the same layout and dtype; every output value is a multiple of 1/255.

    The official script calls this for frames 1.. with frame 0 as the reference and leaves frame 0 as it is:
    ``torch.cat([video[:1], match_histogram(video[1:], video[0])])`` (or :func:`color_match`).

    ``mask`` ``[F, H, W]`` (not official; e.g. :func:`static_mask` of the frames against ``ref``, channel dim
    dropped): both CDFs are built from the masked pixels only (the same positions in the frame and in ``ref``,
    which must then have the frames' size) and the LUT, kept at the levels the masked pixels hold and
    continued linearly between them and by a shift beyond them, maps every pixel. A frame whose mask holds
    under :data:`MIN_STATIC_FRACTION` of its pixels uses all of them.
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
    if mask is None:
        cdf_frames = _cdf(lv).view(n, c, 256)
        cdf_ref = _cdf(_levels(r.to(x.device)).reshape(c, -1))  # [3, 256]
        lut = torch.searchsorted(cdf_ref.expand(n, c, 256).contiguous(), cdf_frames, side="left").clamp_(0, 255)
    else:
        if r.shape[-2:] != x.shape[-2:] or mask.shape != (n, *x.shape[-2:]):
            raise ValueError(f"match_histogram with a mask needs a reference of the frames' size {tuple(x.shape[-2:])} "
                             f"and a mask [F, H, W] = {(n, *x.shape[-2:])}; got reference {tuple(r.shape)} and mask "
                             f"{tuple(mask.shape)}")
        weights = _static_weights(mask[:, None], x).reshape(n * c, -1)
        lr = _levels(r.to(x.device)).reshape(1, c, -1).expand(n, c, -1).reshape(n * c, -1)
        cdf_frames = _cdf(lv, weights)
        lut = torch.searchsorted(_cdf(lr, weights), cdf_frames, side="left").clamp_(0, 255)
        lut = _fill_lut(lut, cdf_frames).view(n, c, 256)
    values = (lut.double() / 255.0).to(device=x.device, dtype=frames.dtype).view(n * c, 256)
    out = torch.gather(values, 1, lv).view_as(x)
    return out.permute(0, 2, 3, 1) if last else out


# ---------------------------------------------------------------------------------------------- node helper
COLOR_MATCH_MODES = ("histogram", "adain", "both")


def color_match(frames: torch.Tensor, ref: torch.Tensor | None = None, mode: str = "histogram",
                strength: float = 1.0, static: bool = False) -> torch.Tensor:
    """Match the colours of a decoded video to a reference frame (the Color Match node).

    ``frames`` ``[F, H, W, 3]`` or ``[F, 3, H, W]`` in 0..1. ``ref`` is one frame in the same layout; by default
    frame 0, which is then returned unchanged (as in the official script). Modes:

    * ``"histogram"``: :func:`match_histogram` (official post-processing);
    * ``"adain"``: per-channel mean/std transfer over H×W in pixel space (the latent AdaIN formula), clamped
      to 0..1; keeps the frame's detail, shifts only brightness/contrast per channel;
    * ``"both"``: AdaIN, then histogram matching. Because histogram matching only depends on the order of
      values, the result is the histogram result except where AdaIN's clamping merged levels.

    ``strength`` in 0..1 blends the matched frames with the input (1 = fully matched).

    ``static`` (not official): both transfers take their statistics only over each frame's static pixels
    (:func:`static_mask` against the reference, which must then have the frames' size), so a change of size
    is not undone (see the module docstring).
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
    if static and r.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"color_match static: the reference must have the frames' size {tuple(x.shape[-2:])}, got "
                         f"{tuple(r.shape[-2:])}; resize it first")
    mask = static_mask(x, r[None]) if static else None    # [F, 1, H, W]
    matched = x
    if mode in ("adain", "both"):
        matched = adain_latent(x.float(), r[None].expand(x.shape[0], -1, -1, -1), mask).clamp(0, 1)
    if mode in ("histogram", "both"):
        matched = match_histogram(matched, r, None if mask is None else mask[:, 0])
    out = torch.lerp(x.float(), matched.float(), float(strength)).to(frames.dtype)
    out = out.permute(0, 2, 3, 1) if last else out
    return torch.cat([frames[:1], out]) if keep_first else out
