"""``python -m lamp_model evaluate-videos DIR [--clip PATH] [--prompts prompts.json]``: the paper's table for
a folder of videos.

    DIR/<motion>/<video>      videos (.gif .webp .mp4 …) or folders of numbered frames, grouped by motion
    DIR/<video>               (or directly in DIR: one motion, named after DIR)

Each video's prompt comes from ``--prompts`` (a JSON object; keys ``"<motion>/<video name>"`` or
``"<video name>"``, the name without extension) or, by default, from its name with ``_`` → space (how the
official inference script names its results: ``a_horse_runs_on_the_Mars.gif``). Prints the table (per motion
and overall text alignment, frame consistency, diversity and the number of videos) in markdown and writes
``metrics.md`` and ``metrics.json`` (every video's scores too) into ``--out``. The CLIP is a local
transformers folder (``--clip`` or the environment variable ``LAMP_CLIP``); nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from PIL import Image

from .checks import writable_dir
from .cli import ArgumentParser, run_command
from .data import IMAGE_SUFFIXES, VIDEO_SUFFIXES, VideoSetError, _natural_key, read_frames
from .metrics import EvalVideo, MetricsError, evaluate, format_table, load_clip

CLIP_ENV = "LAMP_CLIP"


def _is_frame_folder(path: Path) -> bool:
    """A folder of still pictures (one video), as opposed to a motion's folder of videos: it holds images,
    no sub-folders, no video files, and its WebP files (a still frame or an animated video?) are still."""
    if not path.is_dir():
        return False
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images or any(p.is_dir() or (p.suffix.lower() in VIDEO_SUFFIXES and p.suffix.lower() != ".webp")
                         for p in entries):
        return False
    webp = next((p for p in images if p.suffix.lower() == ".webp"), None)
    if webp is None:
        return True
    try:
        with Image.open(webp) as img:
            return getattr(img, "n_frames", 1) == 1
    except OSError:
        return True


def _videos_in(folder: Path) -> list[Path]:
    entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: _natural_key(p.name))
    return [p for p in entries if (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES) or _is_frame_folder(p)]


def find_videos(root: Path) -> dict[str, list[Path]]:
    """``{motion: [video paths]}`` for the layouts in the module docstring. Raises :class:`MetricsError`."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MetricsError(f"video folder '{root}' does not exist")
    groups: dict[str, list[Path]] = {}
    direct = _videos_in(root)
    if direct:
        groups[root.name] = direct
    for sub in sorted((p for p in root.iterdir() if p.is_dir() and not _is_frame_folder(p)),
                      key=lambda p: _natural_key(p.name)):
        videos = _videos_in(sub)
        if videos:
            groups[sub.name] = videos
    if not groups:
        raise MetricsError(f"'{root}' holds no videos: put {'/'.join(VIDEO_SUFFIXES)} files or folders of frames "
                           "into one sub-folder per motion (or directly into it)")
    return groups


def _prompt(prompts: dict[str, str], motion: str, video: Path, used: Optional[set[str]] = None) -> str:
    name = video.stem if video.is_file() else video.name
    for key in (f"{motion}/{name}", name):
        if prompts.get(key):
            if used is not None:
                used.add(key)
            return prompts[key]
    return name.replace("_", " ").strip()


def read_prompts(path: Optional[Path]) -> dict[str, str]:
    """The ``--prompts`` JSON object (empty without a file)."""
    if path is None:
        return {}
    try:
        prompts = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise MetricsError(f"--prompts {path}: cannot be read ({err})") from err
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise MetricsError(f"--prompts {path}: must be a JSON object mapping video names to prompt strings")
    return prompts


def load_videos(root: Path, prompts: dict[str, str]) -> list[EvalVideo]:
    """Decode every video under ``root`` at its own size (one decoder for the pack: :func:`data.read_frames`)."""
    videos, used = [], set()
    for motion, paths in find_videos(root).items():
        for path in paths:
            try:
                frames = read_frames(path, None, None)
            except VideoSetError as err:
                raise MetricsError(f"{motion}/{err}") from err
            videos.append(EvalVideo(motion, path.stem if path.is_file() else path.name,
                                    _prompt(prompts, motion, path, used), frames))
    unused = sorted(set(prompts) - used)
    if unused:  # a typo in the prompts file would otherwise score silently against the file names
        print(f"note: {len(unused)} --prompts key(s) match no video and are not used: {', '.join(unused[:5])}"
              f"{' …' if len(unused) > 5 else ''} (keys are '<motion>/<name>' or '<name>', without extension)",
              file=sys.stderr)
    return videos


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``metrics.md`` (the table) and ``metrics.json`` (everything) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.md").write_text(format_table(report) + "\n", encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return out / "metrics.md", out / "metrics.json"


def clip_path(given: Optional[str]) -> str:
    """``--clip`` or ``$LAMP_CLIP``; a clear error when neither is set."""
    path = given or os.environ.get(CLIP_ENV)
    if not path:
        raise MetricsError(f"no CLIP given: pass --clip <folder> or set {CLIP_ENV}; the folder must be a local "
                           "transformers CLIP (e.g. a saved copy of openai/clip-vit-large-patch14)")
    return path


def tqdm_progress(total: int, desc: str) -> tuple[Any, Callable[[int, int], None]]:
    """A tqdm bar and a ``progress(done, total)`` callback that moves it."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="video", dynamic_ncols=True)

    def progress(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    return bar, progress


def add_metric_options(ap: argparse.ArgumentParser) -> None:
    """``--clip``, ``--official-quirks`` and ``--device``, shared with ``paper-eval``."""
    ap.add_argument("--clip", help=f"local transformers CLIP folder (default: ${CLIP_ENV})")
    ap.add_argument("--official-quirks", action=argparse.BooleanOptionalAction, default=True,
                    help="reproduce the official helpers exactly (/16 in the diversity, truncating uint8 "
                         "conversion); --no-official-quirks: true means, re-normalised video features")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 …")


def resolve_device(name: str) -> torch.device:
    """``--device``: auto (CUDA when available), or a device that is usable here (else a one-line error)."""
    from .checks import compute_device

    return compute_device(name)


def print_report(report: dict[str, Any], out: Optional[Path]) -> None:
    """Print the table and, with ``out``, write ``metrics.md`` and ``metrics.json`` there and name them."""
    print(format_table(report))
    if out:
        for path in write_report(report, out):
            print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lamp_model evaluate-videos``; a user error is one ``error:`` line, exit 2."""
    ap = ArgumentParser(prog="python -m lamp_model evaluate-videos", description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", type=Path, help="folder of videos, one sub-folder per motion")
    ap.add_argument("--prompts", type=Path, help="JSON object: video name (or motion/name) -> prompt")
    ap.add_argument("--out", type=Path, help="write metrics.md and metrics.json here")
    add_metric_options(ap)
    args = ap.parse_args(argv)

    def body() -> int:
        device = resolve_device(args.device)
        if args.out:
            writable_dir(args.out, "--out")  # before any work, not after the scoring
        clip = load_clip(clip_path(args.clip), device=device)
        videos = load_videos(args.videos, read_prompts(args.prompts))
        bar, progress = tqdm_progress(len(videos), "CLIP metrics")
        with bar:
            report = evaluate(clip, videos, official_quirks=args.official_quirks, progress=progress)
        print_report(report, args.out)
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
