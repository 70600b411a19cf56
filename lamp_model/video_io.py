"""Writing videos and preview strips (GIF / WebP via Pillow, MP4 via PyAV).

Frames are ``[F, H, W, 3]`` RGB (the ComfyUI IMAGE layout), float in 0..1 or uint8, as a torch tensor or a
NumPy array. Used by the smoke test, training validation, the toy demo and the nodes.

Frame timing: GIF stores delays in 1/100 s and WebP in ms, so a rate like 8 fps (125 ms) is not representable
per frame. Delays are therefore rounded *cumulatively* (frame k ends at ``round((k+1)/fps)``), which keeps the
average rate exact, e.g. 8 fps → 130, 120, 130, 120 ms. (The official code passes ``duration=1/8`` to imageio,
which newer imageio reads as 0.125 ms: a GIF that plays as fast as the viewer allows.) Pillow merges
consecutive identical frames of a GIF into one longer frame, so a reader may count fewer frames than were
written when the video has still parts; the playing time is unchanged.
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image

Frames = Union[torch.Tensor, np.ndarray]

VIDEO_EXTENSIONS = (".gif", ".webp", ".mp4")
#: H.264 encoders tried in order (libx264 ships with the PyAV wheels; the others are fallbacks).
_MP4_CODECS = ("libx264", "libopenh264", "mpeg4")


def to_uint8(frames: Frames) -> np.ndarray:
    """``[F, H, W, 3]`` float 0..1 (rounded, clamped) or uint8 → a contiguous uint8 NumPy array."""
    arr = frames.detach().cpu().numpy() if torch.is_tensor(frames) else np.asarray(frames)
    if arr.ndim == 3 and arr.shape[-1] == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
        raise ValueError(f"expected RGB frames [F, H, W, 3] (ComfyUI IMAGE layout), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.nan_to_num(arr.astype(np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def frame_durations_ms(n: int, fps: float, unit_ms: int = 1) -> list[int]:
    """Per-frame durations in ms, multiples of ``unit_ms``, rounded cumulatively so the average is ``1/fps``."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    per_unit = 1000.0 / (fps * unit_ms)
    ends = [int((k + 1) * per_unit + 0.5) for k in range(n)]
    starts = [0] + ends[:-1]
    return [max(1, e - s) * unit_ms for s, e in zip(starts, ends)]


def _write_pillow(arr: np.ndarray, path: Path, fps: float, fmt: str) -> None:
    images = [Image.fromarray(frame) for frame in arr]
    if fmt == "GIF":
        # GIF delays are in 1/100 s and viewers slow down anything under 2/100 s.
        durations = [max(20, d) for d in frame_durations_ms(len(images), fps, unit_ms=10)]
        extra = {"optimize": False, "disposal": 1}
    else:
        durations, extra = frame_durations_ms(len(images), fps), {"quality": 90, "method": 4}
    images[0].save(path, format=fmt, save_all=True, append_images=images[1:], duration=durations, loop=0, **extra)


def _write_mp4(arr: np.ndarray, path: Path, fps: float, crf: int) -> None:
    import av  # optional at import time: only MP4 needs PyAV

    pad_h, pad_w = arr.shape[1] % 2, arr.shape[2] % 2  # yuv420p needs even sizes: repeat the last row/column
    if pad_h or pad_w:
        arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    codec = next((c for c in _MP4_CODECS if c in av.codecs_available), None)
    if codec is None:
        raise RuntimeError("no H.264/MPEG-4 encoder in this PyAV build; write a .gif or .webp instead")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = arr.shape[2], arr.shape[1], "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(int(crf))}
        for frame in arr:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_video(frames: Frames, path: Union[str, Path], fps: float = 8, crf: int = 18) -> Path:
    """Write ``frames`` to ``path``; the format follows the extension.

    ``.gif`` / ``.webp``: animated, looping forever (Pillow). ``.mp4``: H.264 (libx264, yuv420p, ``crf``) via
    PyAV; odd widths/heights are padded by one repeated row/column. Parent folders are created. Returns the path.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in VIDEO_EXTENSIONS:
        raise ValueError(f"cannot write video {path.name!r}: use one of {', '.join(VIDEO_EXTENSIONS)}")
    rate = float(fps) if isinstance(fps, (int, float, np.floating, np.integer)) else math.nan
    if not (math.isfinite(rate) and rate > 0):  # an MP4 at fps 0 would quietly play at 24 fps
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    arr = to_uint8(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext == ".mp4":
        _write_mp4(arr, path, float(fps), crf)
    else:
        _write_pillow(arr, path, float(fps), "GIF" if ext == ".gif" else "WEBP")
    return path


def write_strip(frames: Frames, path: Union[str, Path], max_frames: int = 8) -> Path:
    """Save up to ``max_frames`` frames side by side as one image (PNG by default), evenly spaced over the video
    and always including the first and the last frame. Returns the path."""
    arr = to_uint8(frames)
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    picks = sorted({int(round(i)) for i in np.linspace(0, len(arr) - 1, min(len(arr), max_frames))})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(list(arr[picks]), axis=1)).save(path)
    return path
