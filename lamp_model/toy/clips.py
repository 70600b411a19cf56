"""``python -m lamp_model.toy.clips``: render a motion's training clips to a folder the generic trainer reads.

    python -m lamp_model.toy.clips --motion 'translate:dx=-12,dy=0' --out my_clips [--n 16] [--format gif]
    python -m lamp_model train --preset toy --videos my_clips --output-dir runs/left

Writes the ``n`` clips toy stage 2 learns from (:func:`lamp_model.toy.world.training_clips`, the same
(shape, colour) pairs and first frames for the same ``--seed``), one file per clip named after its caption
(``00_a_red_circle.gif``), so that ``--prompt-from-filenames`` (on in ``--preset toy``) trains each clip with
its caption, as stage 2 does. Each file holds 17 frames: the 16 of the clip and one more that continues its
last frame-to-frame step; the generic loader follows the official rule that a clip needs
``n_frames * stride + 1`` frames and never uses the last ``stride`` of them, so 16-frame training sees
exactly the 16 frames stage 2 trains on.

Formats (``--format``), and how far the frames read back by :func:`lamp_model.data.read_frames` are from the
rendered float frames (measured on 8 clips of ``translate:dx=-12,dy=0``, 0..1 scale):

- ``gif`` (default, through :func:`lamp_model.video_io.write_video`): lossless for the toy's frames (they
  have far fewer than GIF's 256 colours per frame), so only the 8-bit rounding, at most 1/510 ≈ 0.002;
- ``png``: a folder of numbered PNG frames per clip, also only the 8-bit rounding;
- ``webp`` (quality 90) and ``mp4`` (H.264, yuv420p: a colour sample per 2x2 pixels blurs 32 px shapes):
  lossy, errors up to about 0.43 and 0.48; for looking at, not for training.

Every clip is read back after writing and the largest difference is printed; a file that reads back with
another frame count is an error.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..checks import as_int, writable_dir
from ..cli import ArgumentParser, run_command
from ..data import read_frames
from ..video_io import to_uint8, write_video
from . import world
from .stage2 import motion_arg

FORMATS = ("gif", "png", "webp", "mp4")
FPS = 8


def continued(scenes: tuple[world.Scene, ...]) -> world.Scene:
    """One scene after the last: position, size and angle continue the clip's last frame-to-frame step."""
    a, b = scenes[-2], scenes[-1]
    return replace(b, cx=2 * b.cx - a.cx, cy=2 * b.cy - a.cy, size=max(0.5, 2 * b.size - a.size),
                   angle=2 * b.angle - a.angle)


def clip_stem(index: int, caption: str) -> str:
    """``00_a_red_circle``: the clip's number and caption (read back by :func:`~lamp_model.data.prompt_from_filename`)."""
    return f"{index:02d}_{caption.replace(' ', '_')}"


def write_clip(frames: torch.Tensor, stem: Path, fmt: str = "gif") -> Path:
    """Frames ``[F, 3, H, W]`` (0..1) -> ``stem.<fmt>``, or for ``png`` the folder ``stem/`` of ``frame_NN.png``."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    pixels = frames.permute(0, 2, 3, 1)
    if fmt != "png":
        return write_video(pixels, stem.parent / f"{stem.name}.{fmt}", fps=FPS)
    stem.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(to_uint8(pixels)):
        Image.fromarray(frame).save(stem / f"frame_{k:02d}.png")
    return stem


def round_trip_error(path: Path, frames: torch.Tensor) -> float:
    """Largest difference (0..1 scale) between the frames the generic loader reads from ``path`` and the
    rendered ``frames`` ``[F, 3, H, W]``; a different frame count is a ``ValueError``."""
    back = read_frames(path, None, None)
    if len(back) != len(frames):
        raise ValueError(f"{path.name}: reads back as {len(back)} frames instead of {len(frames)}; write the clips "
                         "with --format png")
    rendered = frames.permute(0, 2, 3, 1).numpy()
    return float(np.abs(back.astype(np.float32) / 255.0 - rendered).max())


def toy_clips(motion: str | world.MotionSpec, n: int = world.TRAINING_CLIPS, seed: int = 0) -> list[world.Clip]:
    """The ``n`` training clips of ``motion`` (stage 2's for the same ``seed``); too many is a clear error."""
    spec = world.motion_spec(motion)
    clips = world.training_clips(spec, n, seed=seed)
    if len(clips) < n:
        raise ValueError(f"--n {n}: motion '{spec.text}' has only {len(clips)} distinct (shape, colour) training "
                         f"pairs; use --n {len(clips)} or fewer")
    return clips


def clip_names(clips: list[world.Clip], fmt: str = "gif") -> list[str]:
    """The file (``png``: folder) names :func:`render_clips` gives ``clips``."""
    return [clip_stem(i, c.caption) + ("" if fmt == "png" else f".{fmt}") for i, c in enumerate(clips)]


def render_clips(clips: list[world.Clip], out: Path, fmt: str = "gif") -> list[tuple[Path, str, float]]:
    """Write ``clips`` (:func:`toy_clips`) into ``out``; returns ``(path, caption, round-trip error)`` per clip."""
    written = []
    for i, clip in enumerate(clips):
        frames = torch.cat([clip.frames, world.render([continued(clip.scenes)])])
        path = write_clip(frames, out / clip_stem(i, clip.caption), fmt)
        written.append((path, clip.caption, round_trip_error(path, frames)))
    return written


def _check_out(out: Path, names: set[str]) -> None:
    """Every clip in the folder is trained on: refuse a folder holding anything this run does not write."""
    writable_dir(out, "--out")
    other = sorted(p.name for p in out.iterdir() if p.name not in names and not p.name.startswith("."))
    if other:
        raise ValueError(f"--out {out} already holds {len(other)} other file(s) ({', '.join(other[:3])}); every clip "
                         "in the folder is trained on, so give an empty or new folder")


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m lamp_model.toy.clips", description=__doc__.split("\n\n")[0])
    ap.add_argument("--motion", required=True, type=motion_arg,
                    help=f"{', '.join(world.MOTIONS)} or a spec such as translate:dx=-12,dy=0 (README: Your own motion)")
    ap.add_argument("--out", required=True, type=Path, help="folder for the clips (new or empty)")
    ap.add_argument("--n", type=int, default=world.TRAINING_CLIPS,
                    help=f"how many clips (default {world.TRAINING_CLIPS}, as stage 2)")
    ap.add_argument("--seed", type=int, default=0, help="which clips (default 0, stage 2's)")
    ap.add_argument("--format", default="gif", choices=FORMATS,
                    help="gif (default) or png frame folders: lossless; webp, mp4: lossy, to look at")
    args = ap.parse_args(argv)
    return run_command(lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    as_int("--n", args.n, 1, 16, hint=f"stage 2 trains on {world.TRAINING_CLIPS}")
    as_int("--seed", args.seed, 0)
    clips = toy_clips(args.motion, args.n, args.seed)
    _check_out(args.out, set(clip_names(clips, args.format)))
    written = render_clips(clips, args.out, args.format)
    for path, caption, _ in written:
        print(f"{path}  ({caption!r})")
    worst = max(err for _, _, err in written)
    print(f"{len(written)} clips of '{args.motion.text}' ({args.motion.description}), 17 frames each (16 trained on), "
          f"in {args.out}; largest read-back difference {worst:.4f} (0..1 scale)\n"
          f"next: python -m lamp_model train --preset toy --videos {args.out} --output-dir runs/{args.motion.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
