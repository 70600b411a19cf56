"""The video set LAMP learns a motion from, and its latent cache.

Two stages, so that any latent codec can drive the trainer:

1. :func:`load_video_set` reads a folder of 8–16 clips (``.mp4 .webm .mov .gif .webp .mkv .avi .m4v`` files,
   or sub-folders of numbered frames) with PyAV / Pillow, resizes every frame to the training size
   (``"stretch"`` as the official code, ``"center-crop"`` or ``"pad"``: keep the aspect ratio; see
   :func:`lamp_model.frames.fit_frames`) and checks
   that each clip is long enough. Bad inputs raise :class:`VideoSetError` naming every bad file and what
   was loaded fine. The prompt defaults to the folder name with ``_`` → space, as in the official code.
2. :func:`encode_video_set` runs a frozen encoder ONCE over every usable frame (and over the mirrored
   frames when horizontal flip is on) and returns a :class:`LatentClipSet`. A step then only indexes the
   cache: :meth:`LatentClipSet.sample` picks the random start, the random flip and draws the VAE
   posterior sample ``mean + std * eps``, which is the same distribution the official code gets by
   re-encoding the frames every step. Codecs without a posterior (a toy codec, ComfyUI's VAE, which
   returns the mean) pass ``std=None``.

Official sampling rule (``lamp/data/dataset.py``): ``start = randint(0, T - n*stride - 1)`` and frames
``start, start+stride, …``; so a clip needs ``n*stride + 1`` frames and its last ``stride`` frames are
never used. :func:`load_video_set` keeps that rule by dropping those frames; :class:`LatentClipSet`
itself then uses any window that fits in the frames it holds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
import torch
from PIL import Image

from .frames import RESIZE_MODES, fit_frames

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".gif", ".webp", ".mkv", ".avi", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

#: ``encode(pixels[N,3,H,W] in [-1,1]) -> mean`` or ``(mean, std)``, latents ``[N,C,h,w]`` already
#: multiplied by the model's scaling factor (0.18215 for SD-1.x).
LatentEncoder = Callable[[torch.Tensor], Union[torch.Tensor, tuple]]
#: ``progress(done, total)``; may raise to cancel.
Progress = Callable[[int, int], None]


class VideoSetError(ValueError):
    """The video set cannot be used; the message names each bad file and the fix."""


# ---------------------------------------------------------------------------------------------- decoding
def resize_frame(img: Image.Image, width: int, height: int, mode: str = "stretch") -> np.ndarray:
    """One picture as ``uint8 [height, width, 3]``, fitted with :func:`~lamp_model.frames.fit_frames`."""
    frame = torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)[None] / 255.0
    fitted = fit_frames(frame, width, height, mode)[0].permute(1, 2, 0)
    return (fitted * 255.0).round().to(torch.uint8).numpy()


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _native_frame(img: Image.Image) -> np.ndarray:
    return np.array(img.convert("RGB"), dtype=np.uint8)


def read_frames(path: str | Path, width: int | None, height: int | None, resize: str = "stretch",
                max_frames: int | None = None) -> np.ndarray:
    """Decode a clip (video file or folder of frames) into ``uint8 [T, height, width, 3]``.

    Videos and GIFs go through PyAV, animated WebP (which PyAV's decoder does not read) and frame folders
    through Pillow (files sorted in natural order, so ``frame2`` comes before ``frame10``). Only the first
    ``max_frames`` frames are read when given. ``width = height = None`` keeps the clip's own size (the
    evaluation reads videos so); a frame folder whose pictures differ in size is then refused.
    Raises :class:`VideoSetError` naming the file when it cannot be decoded.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, not {resize!r}")
    if (width is None) != (height is None):
        raise ValueError("give both width and height, or neither (keep the clip's own size)")
    path = Path(path)
    frames: list[np.ndarray] = []

    def fit(img: Image.Image) -> np.ndarray:
        return _native_frame(img) if width is None else resize_frame(img, width, height, resize)

    try:
        if path.is_dir():
            files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                           key=lambda p: _natural_key(p.name))
            for file in files[:max_frames]:
                with Image.open(file) as img:
                    frames.append(fit(img))
            sizes = sorted({f.shape[:2] for f in frames})
            if len(sizes) > 1:
                raise VideoSetError(f"{path.name}: its frames differ in size ({', '.join(f'{w}x{h}' for h, w in sizes)}); "
                                    "give every frame of a clip the same size")
        elif path.suffix.lower() == ".webp":
            from PIL import ImageSequence

            with Image.open(path) as img:
                for frame in ImageSequence.Iterator(img):
                    frames.append(fit(frame))
                    if max_frames is not None and len(frames) >= max_frames:
                        break
        else:
            import av

            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise VideoSetError(f"{path.name}: the file has no video stream")
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    frames.append(fit(frame.to_image()))
                    if max_frames is not None and len(frames) >= max_frames:
                        break
    except VideoSetError:
        raise
    except Exception as err:  # decoders raise many types (FFmpegError, OSError, PIL errors)
        raise VideoSetError(f"{path.name}: cannot be decoded ({type(err).__name__}: {err}). Re-encode it, "
                            "e.g. to H.264 .mp4, or remove it from the folder.") from err
    if not frames:
        raise VideoSetError(f"{path.name}: no frames could be read" +
                            (" (the folder holds no .png/.jpg/.webp/.bmp images)" if path.is_dir() else ""))
    return np.stack(frames)


# ---------------------------------------------------------------------------------------------- video set
@dataclass
class Clip:
    """One decoded clip: ``frames`` uint8 ``[T, H, W, 3]`` holds only the frames training can use."""

    name: str
    frames: np.ndarray
    total_frames: int


@dataclass
class VideoSet:
    """A decoded, resized video set of one motion, plus what was skipped and why."""

    root: Path
    prompt: str
    clips: list[Clip]
    width: int
    height: int
    n_frames: int
    stride: int
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        """A human-readable report of what was loaded (and skipped)."""
        lines = [f"Video set '{self.root.name}': {len(self.clips)} clip(s), prompt {self.prompt!r}, "
                 f"{self.n_frames} frames at stride {self.stride}, {self.width}x{self.height}"]
        lines += [f"  {c.name}: {c.total_frames} frames" for c in self.clips]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)


def default_prompt(path: str | Path) -> str:
    """The official default prompt: folder name with ``_`` → space (a single file: its stem)."""
    path = Path(path)
    return (path.stem if path.is_file() else path.name).replace("_", " ").strip()


def prompt_from_filename(name: str) -> str:
    """A clip's own prompt (``--prompt-from-filenames``): its file or folder name without the extension and
    a leading number, ``_`` → space: ``03_a_horse_running.mp4`` → ``"a horse running"``."""
    stem = Path(name).stem if Path(name).suffix.lower() in VIDEO_SUFFIXES else Path(name).name
    return re.sub(r"^\d+[_\-\s]*", "", stem).replace("_", " ").strip()


def _is_clip(path: Path) -> bool:
    if path.is_dir():
        return any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())
    return path.suffix.lower() in VIDEO_SUFFIXES


def load_video_set(root: str | Path, n_frames: int = 16, stride: int = 1, width: int = 512, height: int = 320,
                   resize: str = "stretch", prompt: str | None = None, max_frames: int | None = None,
                   skip_bad: bool = False) -> VideoSet:
    """Read a video set: a folder of clips (or one video file, as the official editing config does).

    ``width``/``height`` are the pixel training size (multiples of 8); every clip needs at least
    ``n_frames * stride + 1`` frames (the official rule). ``max_frames`` caps how many frames of each
    clip are decoded (memory: about ``3*width*height`` bytes per frame). With ``skip_bad=False``
    (default) any unreadable or too-short clip raises :class:`VideoSetError` listing every problem;
    with ``skip_bad=True`` they are skipped and listed in :attr:`VideoSet.skipped`.
    """
    root = Path(root).expanduser()
    if n_frames < 2:
        raise VideoSetError(f"n_frames={n_frames}: LAMP trains on at least 2 frames (frame 0 is the condition).")
    if stride < 1:
        raise VideoSetError(f"stride={stride}: must be 1 or more.")
    if width % 8 or height % 8 or width < 8 or height < 8:
        raise VideoSetError(f"training size {width}x{height}: width and height must be positive multiples of 8.")
    if not root.exists():
        raise VideoSetError(f"video set '{root}' does not exist. Give a folder of 8-16 clips of one motion.")
    need = n_frames * stride + 1
    if root.is_file():
        entries = [root]
    else:
        entries = sorted((p for p in root.iterdir() if not p.name.startswith(".")), key=lambda p: _natural_key(p.name))
    clips: list[Clip] = []
    skipped: list[tuple[str, str]] = []
    problems: list[str] = []
    for entry in entries:
        if not _is_clip(entry):
            skipped.append((entry.name, "not a video (" + "/".join(VIDEO_SUFFIXES) + ") or a folder of frames"))
            continue
        try:
            frames = read_frames(entry, width, height, resize, max_frames)
        except VideoSetError as err:
            problems.append(str(err))
            continue
        if len(frames) < need:
            capped = f" (only the first {max_frames} were read: raise max_frames)" if max_frames == len(frames) else ""
            problems.append(f"{entry.name}: {len(frames)} frames{capped}, but {n_frames} frames at stride {stride} "
                            f"need at least {need}. Use a longer clip, fewer frames or a smaller stride.")
            continue
        # The official sampler never reaches the last `stride` frames: drop them from the usable set.
        clips.append(Clip(entry.name, frames[: len(frames) - stride], len(frames)))
    if problems and not skip_bad:
        loaded = ", ".join(c.name for c in clips) or "none"
        raise VideoSetError(f"video set '{root}' has {len(problems)} bad clip(s):\n  " + "\n  ".join(problems) +
                            f"\nLoaded fine: {loaded}. Fix or remove the bad clips (or skip them).")
    skipped += [(p.split(":", 1)[0], p.split(":", 1)[1].strip()) for p in problems]
    if not clips:
        found = ", ".join(name for name, _ in skipped) or "nothing"
        raise VideoSetError(f"video set '{root}' holds no usable clip (found: {found}). Put 8-16 clips of one "
                            f"motion ({', '.join(VIDEO_SUFFIXES)} or folders of frames) in it.")
    text = default_prompt(root) if prompt is None or not prompt.strip() else prompt.strip()
    return VideoSet(root, text, clips, width, height, n_frames, stride, skipped)


# ---------------------------------------------------------------------------------------------- latent cache
@dataclass
class LatentClip:
    """Cached latents of one clip, ``[T, C, h, w]`` each, already scaled.

    ``std`` is the posterior standard deviation (``None``: a deterministic codec); ``flipped_*`` hold
    the latents of the horizontally mirrored frames (needed only when training with flip).
    """

    name: str
    mean: torch.Tensor
    std: torch.Tensor | None = None
    flipped_mean: torch.Tensor | None = None
    flipped_std: torch.Tensor | None = None

    @property
    def num_frames(self) -> int:
        return self.mean.shape[0]


class LatentClipSet:
    """The trainer's data source: cached clip latents, sampled per step.

    Build it with :func:`encode_video_set` (pixels through any encoder) or :meth:`from_latents`
    (latents you already have). All clips must share ``C, h, w``.
    """

    def __init__(self, clips: Sequence[LatentClip], name: str = "") -> None:
        if not clips:
            raise VideoSetError("the latent clip set is empty")
        shapes = {tuple(c.mean.shape[1:]) for c in clips}
        if len(shapes) != 1:
            raise VideoSetError(f"clips have different latent sizes {sorted(shapes)}; encode them at one size")
        self.clips = list(clips)
        self.name = name

    @classmethod
    def from_latents(cls, latents: Sequence[torch.Tensor], stds: Sequence[torch.Tensor] | None = None,
                     flipped: Sequence[torch.Tensor] | None = None, names: Sequence[str] | None = None
                     ) -> "LatentClipSet":
        """Wrap already-encoded clips ``[T, C, h, w]`` (scaled). ``flipped`` are the latents of the
        mirrored frames; for a codec that commutes with mirroring, ``[x.flip(-1) for x in latents]``."""
        names = list(names) if names is not None else [f"clip{i}" for i in range(len(latents))]
        return cls([LatentClip(names[i], latents[i].float(), None if stds is None else stds[i].float(),
                               None if flipped is None else flipped[i].float()) for i in range(len(latents))])

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of every clip."""
        return tuple(self.clips[0].mean.shape[1:])  # type: ignore[return-value]

    def check(self, n_frames: int, stride: int, hflip: bool) -> None:
        """Raise :class:`VideoSetError` if some clip cannot give ``n_frames`` at ``stride`` (or lacks
        mirrored latents while ``hflip`` is on)."""
        span = (n_frames - 1) * stride + 1
        short = [f"{c.name} ({c.num_frames})" for c in self.clips if c.num_frames < span]
        if short:
            raise VideoSetError(f"clips too short for {n_frames} frames at stride {stride} (need {span} cached "
                                f"frames): {', '.join(short)}")
        if hflip and any(c.flipped_mean is None for c in self.clips):
            raise VideoSetError("horizontal flip is on but the clip set has no mirrored latents: encode with "
                                "hflip=True, pass flipped= to from_latents, or turn hflip off")

    def sample(self, index: int, n_frames: int, stride: int, hflip: bool,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents ``[C, n_frames, h, w]`` (fp32, CPU) of clip ``index % len(self)``.

        Draws, in the official order: the start frame, the flip (p=0.5, whole clip), then the posterior
        sample. All randomness comes from ``generator``.
        """
        clip = self.clips[index % len(self.clips)]
        last_start = clip.num_frames - (n_frames - 1) * stride - 1
        start = int(torch.randint(0, last_start + 1, (1,), generator=generator))
        flip = hflip and bool(torch.rand(1, generator=generator) < 0.5)
        frames = torch.arange(n_frames) * stride + start
        mean, std = (clip.flipped_mean, clip.flipped_std) if flip else (clip.mean, clip.std)
        latents = mean[frames]
        if std is not None:
            latents = latents + std[frames] * torch.randn(latents.shape, generator=generator, dtype=latents.dtype)
        return latents.permute(1, 0, 2, 3).contiguous()


def frames_to_pixels(frames: np.ndarray) -> torch.Tensor:
    """``uint8 [N, H, W, 3]`` → ``float32 [N, 3, H, W]`` in ``[-1, 1]`` (the official normalisation)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def _encode_frames(frames: np.ndarray, encode: LatentEncoder, batch_size: int,
                   tick: Callable[[int], None]) -> tuple[torch.Tensor, torch.Tensor | None]:
    means, stds = [], []
    for i in range(0, len(frames), batch_size):
        out = encode(frames_to_pixels(frames[i:i + batch_size]))
        mean, std = out if isinstance(out, tuple) else (out, None)
        means.append(mean.detach().float().cpu())
        if std is not None:
            stds.append(std.detach().float().cpu())
        tick(len(mean))
    return torch.cat(means), (torch.cat(stds) if stds else None)


def encode_video_set(video_set: VideoSet, encode: LatentEncoder, hflip: bool = True, batch_size: int = 8,
                     progress: Progress | None = None) -> LatentClipSet:
    """Encode every usable frame of every clip once (twice with ``hflip``: mirrored frames too).

    ``encode`` is a :data:`LatentEncoder` (see :func:`diffusers_vae_encoder`); it runs without grad.
    ``progress(done, total)`` is called after each batch and may raise to cancel.
    """
    total = sum(len(c.frames) for c in video_set.clips) * (2 if hflip else 1)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    clips = []
    for clip in video_set.clips:
        mean, std = _encode_frames(clip.frames, encode, batch_size, tick)
        flipped_mean = flipped_std = None
        if hflip:
            flipped_mean, flipped_std = _encode_frames(clip.frames[:, :, ::-1], encode, batch_size, tick)
        clips.append(LatentClip(clip.name, mean, std, flipped_mean, flipped_std))
    return LatentClipSet(clips, name=video_set.root.name)


def diffusers_vae_encoder(vae: torch.nn.Module, scaling_factor: float | None = None) -> LatentEncoder:
    """A :data:`LatentEncoder` for a diffusers ``AutoencoderKL``: posterior mean and std × scaling factor
    (``vae.config.scaling_factor``, 0.18215 for SD-1.x, unless given). Pixels go to the VAE's device/dtype."""
    factor = float(scaling_factor if scaling_factor is not None else vae.config.scaling_factor)

    def encode(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
        return dist.mean * factor, dist.std * factor

    return encode


def diffusers_vae_decoder(vae: torch.nn.Module, scaling_factor: float | None = None,
                          batch_size: int = 4) -> Callable[[torch.Tensor], torch.Tensor]:
    """The inverse of :func:`diffusers_vae_encoder` for one video: scaled latents ``[1, C, F, h, w]`` →
    frames ``[F, H, W, 3]`` float32 in 0..1 on the CPU, decoded ``batch_size`` frames at a time (no grad)."""
    factor = float(scaling_factor if scaling_factor is not None else vae.config.scaling_factor)

    @torch.no_grad()
    def decode(latents: torch.Tensor) -> torch.Tensor:
        frames = latents[0].transpose(0, 1) / factor  # [F, C, h, w]
        pixels = torch.cat([vae.decode(frames[i:i + batch_size].to(vae.device, vae.dtype)).sample
                            for i in range(0, len(frames), batch_size)])
        return ((pixels.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu()

    return decode
