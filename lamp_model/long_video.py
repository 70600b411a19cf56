"""Long videos: N frames (48, 64, 128 …) from a LAMP trained on 16-frame clips.

LAMP's premise is "given a clean frame, predict what follows", so a long video can be made of pieces that
each look like what the model was trained on: a clean frame 0 followed by up to 15 noisy frames. Two
strategies, both built on :class:`lamp_model.sampling.DenoiseLoop` (the same steps, guidance, AdaIN schedule
and schedulers as :func:`~lamp_model.sampling.sample_video`):

* ``"segments"``: the video is made segment after segment. Segment 1 is an ordinary LAMP run; each next
  segment of ``segment_frames`` frames starts from the previous segment's last generated frame, which is
  pinned clean (frame 0 of the segment, bit-identical to that frame). With ``overlap = k > 1`` the segment's
  first ``k`` frames are the previous segment's last ``k``: frame 0 is pinned, frames 1..k-1 are imposed at
  every step, noised to the step's level (``scheduler.add_noise``), so the segment sees how the motion was
  going; their output is the previous segment's. ``content_lock`` makes the frame-0 attention of segments
  2.. read the *original* frame one instead of the segment's own first frame (one extra UNet pass per step
  records it, see :class:`~lamp_model.attention.FirstFrameBank`). ``color_reference`` is the frame whose
  statistics the final latent AdaIN of each segment gives its frames: ``"segment"`` (its first frame, the
  official rule inside one clip) or ``"original"`` (frame one of the video).
* ``"windows"``: one denoising loop over all frames; at every step the UNet sees overlapping windows, each
  the clean original frame 0 followed by ``segment_frames - 1`` consecutive frames, and the noise
  predictions are blended over the overlaps (pyramid weights) before one scheduler step of the whole video.

Only one segment's (or window's) activations exist at a time: memory is that of a ``segment_frames`` run.
With ``N <= segment_frames`` both strategies are exactly :func:`~lamp_model.sampling.sample_video`.
Progress: ``callback(step, total, latents)`` counts the steps of all segments (``total`` =
:meth:`LongVideoPlan.total_steps`); raising in it cancels between steps. Not in the paper or the official
code (both make 16 frames only). The README's long-video table measures the strategies in the toy world.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from .attention import FirstFrameBank
from .noise import DEFAULT_ALPHA, shared_noise
from .postprocess import color_match, match_histogram
from .sampling import (Callback, DenoiseLoop, _check_inputs, color_mode, final_adain, make_scheduler, prepare_latents,
                       sample_video)

STRATEGIES = ("segments", "windows")
COLOR_REFERENCES = ("original", "segment")
#: The clip length LAMP is trained on (official: 16); the default segment / window length.
TRAINED_FRAMES = 16
#: Defaults chosen by the toy measurement (README, "Long videos"): segments sharing 4 frames, frame-0 attention
#: locked on frame one, colours to frame one kept the motion in every 16-frame chunk with the least colour and
#: shape drift and no seam; windows lost the motion after the first chunk.
DEFAULT_STRATEGY = "segments"
DEFAULT_OVERLAP = {"segments": 4, "windows": 4}
DEFAULT_CONTENT_LOCK = True
DEFAULT_COLOR_REFERENCE = "original"


@dataclass(frozen=True)
class LongVideoPlan:
    """How a video of ``frames`` frames is cut.

    ``spans``: for ``"segments"`` the ``[start, stop)`` frame ranges of the segments (consecutive ones share
    ``overlap`` frames; frame ``start`` is the segment's pinned frame 0); for ``"windows"`` the ``[start,
    stop)`` ranges of the moving frames of each window (frame 0 is added to every window).
    """

    frames: int
    strategy: str
    segment_frames: int
    overlap: int
    spans: tuple[tuple[int, int], ...]

    @property
    def single(self) -> bool:
        """The video fits one run: plain :func:`~lamp_model.sampling.sample_video`."""
        return len(self.spans) == 1

    def total_steps(self, steps: int) -> int:
        """Progress total for ``steps`` denoising steps: every segment's steps (windows: one loop)."""
        return steps * (len(self.spans) if self.strategy == "segments" else 1)

    @property
    def seams(self) -> tuple[int, ...]:
        """Frames where a new segment starts (segments: their pinned frame 0) or a window starts."""
        return tuple(start for start, _ in self.spans[1:])


def plan_long_video(frames: int, strategy: str = DEFAULT_STRATEGY, segment_frames: int = TRAINED_FRAMES,
                    overlap: Optional[int] = None) -> LongVideoPlan:
    """Cut ``frames`` frames into segments or windows of ``segment_frames`` (see :class:`LongVideoPlan`).

    ``overlap``: segments share ``overlap`` frames (>= 1: at least the pinned one; default 4); windows share
    ``overlap`` moving frames (>= 0; default 4). Defaults are capped at ``segment_frames - 2``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"long-video strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    frames, length = int(frames), int(segment_frames)
    if frames < 2:
        raise ValueError(f"a video needs at least 2 frames (frame one + motion), got {frames}")
    if length < 3:
        raise ValueError(f"segment_frames must be at least 3 (LAMP is trained on {TRAINED_FRAMES}), got {length}")
    k = min(DEFAULT_OVERLAP[strategy], length - 2) if overlap is None else int(overlap)
    if strategy == "segments":
        if not 1 <= k <= length - 1:
            raise ValueError(f"segments overlap must be 1..{length - 1} frames (1 = only the pinned last frame "
                             f"of the previous segment; each segment needs one new frame), got {k}")
        spans, start = [], 0
        while True:
            stop = min(start + length, frames)
            spans.append((start, stop))
            if stop == frames:
                break
            start = stop - k
    else:
        width = length - 1  # moving frames per window; frame 0 is the window's first frame
        if not 0 <= k <= width - 1:
            raise ValueError(f"windows overlap must be 0..{width - 1} frames (the stride must stay >= 1), got {k}")
        if frames - 1 <= width:
            spans = [(1, frames)]
        else:
            starts = list(range(1, frames - width + 1, width - k))
            if starts[-1] + width < frames:
                starts.append(frames - width)
            spans = [(a, a + width) for a in starts]
    return LongVideoPlan(frames, strategy, length, k, tuple(spans))


def cover_frames(unet: Any, frames: Optional[list[int]]) -> None:
    """Tell a UNet wrapper that conditions frame by frame (the LAMP Sampler's per-frame ControlNet hints) which
    frames of the whole video its next calls hold, in order (``None``: the whole video again). A plain UNet
    has no ``set_frame_indices`` and is left alone."""
    setter = getattr(unet, "set_frame_indices", None)
    if setter is not None:
        setter(frames)


# ---------------------------------------------------------------------------------------------- segments
class _SegmentLoop(DenoiseLoop):
    """The denoising loop of one segment: frames 1..k-1 (the overlap after the pinned frame 0) are imposed
    after every step as the known clean latents noised to the next step's level."""

    known: Optional[torch.Tensor] = None  # [B, C, k-1, h, w] clean latents
    known_noise: Optional[torch.Tensor] = None

    def impose(self, latents: torch.Tensor, i: int) -> torch.Tensor:
        """Put the known frames in at the noise level of timestep index ``i`` (clean after the last step)."""
        if self.known is None:
            return latents
        ts = self.timesteps
        value = self.known if i >= len(ts) else \
            self.scheduler.add_noise(self.known, self.known_noise, ts[i].reshape(1)).float()
        latents = latents.clone()
        latents[:, :, 1:1 + self.known.shape[2]] = value
        return latents

    def step(self, latents: torch.Tensor, i: int) -> torch.Tensor:
        return self.impose(super().step(latents, i), i + 1)


class _ContentLocked(nn.Module):
    """A LAMP UNet whose frame-0 attention reads ``anchor`` (the original frame one) instead of the input's
    frame 0: each call first runs the input with frame 0 replaced by the anchor and records the frame-0 tokens
    (:class:`~lamp_model.attention.FirstFrameBank`), then runs the input reading them."""

    def __init__(self, unet: nn.Module, anchor: torch.Tensor) -> None:
        super().__init__()
        if not hasattr(unet, "set_frame0_bank"):
            raise ValueError("content_lock needs the LAMP UNet (lamp_model.LampUNet3D), which can redirect its "
                             f"frame-0 attention; got {type(unet).__name__}. Switch content_lock off.")
        self.unet, self.anchor = unet, anchor

    def set_frame_indices(self, frames: Optional[list[int]]) -> None:
        """Pass the frames a call holds on to the wrapped UNet (see :func:`cover_frames`)."""
        cover_frames(self.unet, frames)

    def forward(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor) -> Any:
        anchor = self.anchor.to(sample).repeat(sample.shape[0] // self.anchor.shape[0], 1, 1, 1, 1)
        bank = FirstFrameBank()
        self.unet.set_frame0_bank(bank)
        try:
            self.unet(torch.cat([anchor, sample[:, :, 1:]], dim=2), timestep, encoder_hidden_states=encoder_hidden_states)
            bank.mode = "read"
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states)
        finally:
            self.unet.set_frame0_bank(None)


def _segments(unet: Any, first: torch.Tensor, cond: torch.Tensor, uncond: Optional[torch.Tensor],
              noise: torch.Tensor, plan: LongVideoPlan, steps: int, guidance_scale: float, alpha: float,
              color: str, scheduler: Any, callback: Optional[Callback], content_lock: bool,
              color_reference: str) -> torch.Tensor:
    total, k = plan.total_steps(steps), plan.overlap
    video: Optional[torch.Tensor] = None
    mixed = None
    for j, (start, stop) in enumerate(plan.spans):
        model = _ContentLocked(unet, first) if content_lock and j > 0 else unet
        loop = _SegmentLoop(model, make_scheduler(scheduler), cond, uncond, guidance_scale, color_consistency=color)
        loop.scheduler.set_timesteps(steps, device=loop.device)
        if video is None:  # every frame's start noise, from the one raw noise of the whole video
            video = prepare_latents(noise.to(loop.device), first, loop.scheduler, alpha)
            mixed = shared_noise(noise.to(loop.device).float(), alpha)
        latents = video[:, :, start:stop].clone()
        if j > 0 and k > 1:
            loop.known = video[:, :, start + 1:start + k].clone()
            loop.known_noise = mixed[:, :, start + 1:start + k]
        latents = loop.impose(latents, 0)
        offset = j * steps
        seg_callback = None if callback is None else \
            (lambda i, _n, lat, offset=offset: callback(offset + i, total, lat))
        cover_frames(model, list(range(start, stop)))
        try:
            latents = loop.run(latents, callback=seg_callback)
        finally:
            cover_frames(model, None)
        if color != "none":
            if color_reference == "original":
                latents = latents.clone()
                latents[:, :, 1:] = final_adain(latents[:, :, 1:], first.to(latents), static=color == "static")
            else:
                latents = final_adain(latents, static=color == "static")
        keep = 1 if j == 0 else k
        video[:, :, start + keep:stop] = latents[:, :, keep:]
    return video


# ---------------------------------------------------------------------------------------------- windows
def _pyramid(width: int) -> torch.Tensor:
    """Blend weights of one window's frames: 1, 2, … in the middle …, 2, 1 (overlaps fade in and out)."""
    i = torch.arange(width, dtype=torch.float32)
    return torch.minimum(i + 1, width - i)


class _WindowLoop(DenoiseLoop):
    """One denoising loop over the whole video whose noise prediction is made window by window."""

    spans: tuple[tuple[int, int], ...] = ()

    def _predict_noise(self, model_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = torch.zeros(model_in.shape, dtype=torch.float32, device=model_in.device)
        weight = torch.zeros(model_in.shape[2], dtype=torch.float32, device=model_in.device)
        for start, stop in self.spans:
            window = torch.cat([model_in[:, :, :1], model_in[:, :, start:stop]], dim=2)  # clean frame 0 first
            cover_frames(self.unet, [0, *range(start, stop)])
            try:
                part = super()._predict_noise(window, t)
            finally:
                cover_frames(self.unet, None)
            w = _pyramid(stop - start).to(model_in.device)
            eps[:, :, start:stop] += part[:, :, 1:] * w[:, None, None]
            weight[start:stop] += w
        weight[0] = 1.0  # frame 0's prediction is never used (it is pinned)
        return eps / weight[:, None, None]


def _windows(unet: Any, first: torch.Tensor, cond: torch.Tensor, uncond: Optional[torch.Tensor],
             noise: torch.Tensor, plan: LongVideoPlan, steps: int, guidance_scale: float, alpha: float,
             color: str, scheduler: Any, callback: Optional[Callback]) -> torch.Tensor:
    loop = _WindowLoop(unet, make_scheduler(scheduler), cond, uncond, guidance_scale, color_consistency=color)
    loop.spans = plan.spans
    loop.scheduler.set_timesteps(steps, device=loop.device)
    latents = loop.run(prepare_latents(noise.to(loop.device), first, loop.scheduler, alpha), callback=callback)
    return latents if color == "none" else final_adain(latents, static=color == "static")


# ---------------------------------------------------------------------------------------------- entry point
def sample_long_video(unet: Callable[..., Any], first_frame_latent: torch.Tensor, cond: torch.Tensor,
                      uncond: Optional[torch.Tensor], noise: torch.Tensor, steps: int = 50,
                      guidance_scale: float = 12.5, shared_noise_alpha: float = DEFAULT_ALPHA, adain: bool = True,
                      scheduler: Any = None, callback: Optional[Callback] = None, *,
                      strategy: str = DEFAULT_STRATEGY, segment_frames: int = TRAINED_FRAMES,
                      overlap: Optional[int] = None, content_lock: bool = DEFAULT_CONTENT_LOCK,
                      color_reference: str = DEFAULT_COLOR_REFERENCE,
                      color_consistency: str = "official") -> torch.Tensor:
    """A LAMP video of any length ``F = noise.shape[2] >= 2`` (see the module docstring).

    Arguments as :func:`~lamp_model.sampling.sample_video` (``noise`` is the RAW noise of all F frames), plus:

    Args:
        strategy: ``"segments"`` or ``"windows"``.
        segment_frames: frames per segment / window, frame 0 included (16 = what LAMP is trained on).
        overlap: frames shared by consecutive segments (>= 1, default 4) or moving frames shared by
            consecutive windows (default 4); see :func:`plan_long_video`.
        content_lock: segments only: frame-0 attention of segments 2.. reads the original frame one (default on).
        color_reference: segments only: ``"original"`` (default) or ``"segment"``, the final AdaIN's reference.
        color_consistency: the AdaIN statistics, as for :func:`~lamp_model.sampling.sample_video`.

    Returns ``[B, 4, F, h, w]`` (fp32, after the final AdaIN); frame 0 is ``first_frame_latent`` bit for bit.
    """
    if not torch.is_tensor(noise) or noise.ndim != 5:
        got = tuple(noise.shape) if torch.is_tensor(noise) else type(noise).__name__
        raise ValueError(f"noise must be raw video noise [B, 4, F, h, w], got {got}")
    if color_reference not in COLOR_REFERENCES:
        raise ValueError(f"color_reference must be one of {', '.join(COLOR_REFERENCES)}, got {color_reference!r}")
    color = color_mode(adain, color_consistency)
    plan = plan_long_video(noise.shape[2], strategy, segment_frames, overlap)
    if plan.single:
        return sample_video(unet, first_frame_latent, cond, uncond, noise, steps, guidance_scale,
                            shared_noise_alpha, adain, scheduler, callback, color_consistency=color_consistency)
    first = _check_inputs(first_frame_latent, cond, uncond, noise, steps, True, unet=unet,
                          guidance_scale=guidance_scale, alpha=shared_noise_alpha)
    b = noise.shape[0]
    cond = cond.expand(b, -1, -1)
    uncond = uncond.expand(b, -1, -1) if uncond is not None else None
    first = first.float()
    if plan.strategy == "windows":
        return _windows(unet, first, cond, uncond, noise, plan, steps, guidance_scale, shared_noise_alpha, color,
                        scheduler, callback)
    return _segments(unet, first, cond, uncond, noise, plan, steps, guidance_scale, shared_noise_alpha, color,
                     scheduler, callback, content_lock, color_reference)


def match_histogram_long(frames: torch.Tensor, plan: LongVideoPlan, reference: str = "original",
                         static: bool = False) -> torch.Tensor:
    """Pixel-space histogram matching of a decoded long video (``[F, H, W, 3]`` or ``[F, 3, H, W]``, 0..1).

    ``"original"``: frames 1.. matched to frame 0 (the official post-processing, for the whole video).
    ``"segment"`` (segments plans): each segment's new frames matched to its first frame, which was itself
    matched as part of the previous segment, so the chain starts at frame one.
    ``static``: the histograms over static pixels only (:func:`~lamp_model.postprocess.color_match`).
    """
    if reference not in COLOR_REFERENCES:
        raise ValueError(f"reference must be one of {', '.join(COLOR_REFERENCES)}, got {reference!r}")
    if frames.shape[0] != plan.frames:
        raise ValueError(f"the video has {frames.shape[0]} frames but the plan {plan.frames}")
    match = (lambda x, ref: color_match(x, ref, static=True)) if static else match_histogram
    if reference == "original" or plan.strategy == "windows" or plan.single:
        return torch.cat([frames[:1], match(frames[1:], frames[0])])
    out = frames.clone()
    for j, (start, stop) in enumerate(plan.spans):
        new = slice(start + (1 if j == 0 else plan.overlap), stop)
        out[new] = match(frames[new], out[start])
    return out


# ---------------------------------------------------------------------------------------------- command line
def add_long_video_arguments(parser: argparse.ArgumentParser) -> None:
    """The long-video flags shared by the CLIs that sample (``demo``, ``smoke``)."""
    group = parser.add_argument_group("long videos (more frames than --segment-frames)")
    group.add_argument("--long-strategy", default=DEFAULT_STRATEGY, choices=STRATEGIES,
                       help=f"how frames beyond one segment are made (default {DEFAULT_STRATEGY}; README: Long videos)")
    group.add_argument("--segment-frames", type=int, default=TRAINED_FRAMES,
                       help=f"frames per segment / window, frame one included (default {TRAINED_FRAMES})")
    group.add_argument("--overlap", type=int, default=None,
                       help="segments: frames shared with the previous segment (>= 1 = the pinned one; default 4); "
                            "windows: frames shared by neighbouring windows (default 4)")
    group.add_argument("--content-lock", action=argparse.BooleanOptionalAction, default=DEFAULT_CONTENT_LOCK,
                       help="segments: frame-0 attention reads the original frame one in every segment")
    group.add_argument("--color-reference", default=DEFAULT_COLOR_REFERENCE, choices=COLOR_REFERENCES,
                       help="segments: colours of each segment taken from its first frame or from frame one")


def long_video_options(args: argparse.Namespace, frames: int) -> tuple[LongVideoPlan, dict[str, Any]]:
    """The plan of a ``frames``-frame video and the keyword arguments of :func:`sample_long_video` from
    :func:`add_long_video_arguments`'s flags; a bad value is one clear ``ValueError`` before any work."""
    try:
        plan = plan_long_video(frames, args.long_strategy, args.segment_frames, args.overlap)
    except ValueError as e:
        raise ValueError(f"--frames/--long-strategy/--segment-frames/--overlap: {e}") from None
    return plan, {"strategy": plan.strategy, "segment_frames": plan.segment_frames, "overlap": plan.overlap,
                  "content_lock": args.content_lock, "color_reference": args.color_reference}
