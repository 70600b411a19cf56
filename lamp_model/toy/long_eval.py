"""Measure long-video strategies in the toy world: 64 frames from the shipped 16-frame motions.

``python -m lamp_model.toy.long_eval --motions right down --rows ROW ... [--n 6] [--json F]``
(``--from-json F1 F2 ...`` prints one table merged from runs made in parallel.)

The translations (``right``, ``down``: 12 px per 15 frames, 0.8 px/frame) keep moving for 63 frames on a
canvas widened along the motion (32 x 72 px, :func:`long_canvas`; the shipped weights are unchanged: the toy UNet is
convolutional and its attention has no positions, and the ``wide16`` row checks that 16-frame accuracy
survives the wider canvas). Every video is cut into the chunks of a 16-frame ``segments`` plan (frames 0-15,
15-30, 30-45, 45-60, then 60-63) whatever strategy made it, and tracked (:mod:`lamp_model.toy.tracking`)
in a 32 px window that follows the object (:func:`track_following`: on the wide canvas the model sometimes
draws a second object in the empty part, which a whole-frame centroid would average in):

* **accuracy per chunk**: the 16-frame criterion (:func:`~lamp_model.toy.tracking.criterion`) on each of the
  four full chunks;
* **speed kept**: px/frame along the motion in chunk 4 divided by chunk 1's (median over videos; 1 = kept);
* **colour drift**: RGB distance (0..255) of the tracked object colour in the last 19 frames to frame 0's;
  **shape IoU**: mean registered IoU with frame 0 over the same frames (chunk 1's value in brackets);
* **seam jump**: RMS centroid second difference at the chunk seams (frames 15, 30, 45, 60) next to the RMS
  inside the chunks (px/frame²): a seam that shows is a larger number at the seams;
* **second object**: fraction of frames 1.. where the whole frame holds more than 30 % of the followed
  object's area outside the 32 px window (another object appeared).

``--cache DIR`` keeps the sampled videos (uint8), so the figures can be recomputed without sampling again.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..long_video import plan_long_video
from . import codec, tracking, world
from .models import WEIGHTS_DIR, Stopwatch, load_text_encoder
from .stage3 import TOY_GUIDANCE, TOY_SAMPLING_STEPS, SamplingOptions, animate, load_motion_unet, save_video

FRAMES = 64
MOTIONS = ("right", "down")


def long_canvas(motion: str, frames: int) -> tuple[int, int]:
    """(height, width) of a ``frames``-frame toy video: 32x32 up to 16 frames (and for grow / rotate); for
    ``right`` (``down``) widened to the right (downwards) by the extra travel at 0.8 px/frame, rounded up to a
    multiple of 4 (the codec halves it, the UNet halves again): 32 x 72 px for 64 frames."""
    extra = max(0, frames - world.FRAMES) * world.SHIFT_PX / (world.FRAMES - 1)
    side = world.SIZE + 4 * math.ceil(extra / 4)
    return {"right": (world.SIZE, side), "down": (side, world.SIZE)}.get(motion, (world.SIZE, world.SIZE))


@dataclass(frozen=True)
class Row:
    label: str
    frames: int = FRAMES
    strategy: str | None = "segments"
    options: dict = field(default_factory=dict)
    source: str = "motion"  # or "ground_truth"


_FREE = {"content_lock": False, "color_reference": "segment"}
_LOCK = {"content_lock": True, "color_reference": "original"}
ROWS = {
    "wide16": Row("16 frames on the wide canvas (canvas check; no long video)", frames=16, strategy=None),
    "segments": Row("segments, overlap 1, own frame-0 attention, colour to segment start",
                    options={"overlap": 1, **_FREE}),
    "segments_lock": Row("segments, overlap 1, content lock, colour to frame one", options={"overlap": 1, **_LOCK}),
    "segments_k4": Row("segments, overlap 4, own frame-0 attention, colour to segment start",
                       options={"overlap": 4, **_FREE}),
    "segments_k4_lock": Row("segments, overlap 4, content lock, colour to frame one (the default)",
                            options={"overlap": 4, **_LOCK}),
    "windows": Row("windows, overlap 4", strategy="windows", options={"overlap": 4}),
    "windows8": Row("windows, overlap 8", strategy="windows", options={"overlap": 8}),
    "ground_truth": Row("ground-truth 64-frame clips (tracker check)", strategy=None, source="ground_truth"),
}


def continued(scene: world.Scene, motion: str, frames: int = FRAMES) -> list[world.Scene]:
    """Ground truth of a long video: the 16-frame translation continued at the same speed (0.8 px/frame)."""
    step = world.SHIFT_PX / (world.FRAMES - 1)
    key = "cx" if motion == "right" else "cy"
    return [replace(scene, **{key: getattr(scene, key) + step * t}) for t in range(frames)]


def track_following(video: torch.Tensor, shape: str, motion: str
                    ) -> tuple[tracking.Track, tracking.Track, np.ndarray]:
    """Track the object in a ``world.SIZE`` window that follows it along the motion axis, frame by frame from
    its frame-0 position. Returns the track in canvas coordinates, the same track in window coordinates (for
    the registered IoU, whose coverage maps are the windows) and, per frame, the object area found in the
    whole frame outside the window, relative to the window's object area."""
    arr = video.detach().cpu().float().permute(0, 2, 3, 1).numpy().astype(np.float64)  # [F, H, W, 3]
    axis = 1 if motion == "right" else 0
    length, size = arr.shape[1 + axis], world.SIZE
    pos, offsets, extra = None, [], []
    for img in arr:
        whole = tracking.measure_frame(img, world.SYMMETRY[shape], all_regions=True)
        if pos is None or not math.isfinite(pos):
            pos = whole.cx if axis else whole.cy
        lo = int(np.clip(round(pos - size / 2), 0, length - size)) if math.isfinite(pos) else 0
        crop = img[:, lo:lo + size] if axis else img[lo:lo + size]
        inside = tracking.measure_frame(crop, world.SYMMETRY[shape])
        pos = (inside.cx if axis else inside.cy) + lo
        offsets.append(lo)
        extra.append(max(0.0, whole.area - inside.area) / max(inside.area, 1e-9))
    crops = torch.from_numpy(np.stack([img[:, lo:lo + size] if axis else img[lo:lo + size]
                                       for img, lo in zip(arr, offsets)])).float()
    local = tracking.track(crops, shape)
    tr = replace(local, **({"cx": local.cx + np.array(offsets)} if axis else {"cy": local.cy + np.array(offsets)}))
    return tr, local, np.array(extra)


def _slice(tr: tracking.Track, start: int, stop: int) -> tracking.Track:
    return tracking.Track(*(getattr(tr, f)[start:stop] for f in ("cx", "cy", "area", "turn", "colour", "features",
                                                                   "alpha")))


def score_video(video: torch.Tensor, shape: str, motion: str) -> dict:
    """Per-video figures (see the module docstring) of frames ``[F, 3, H, W]`` showing a ``shape``."""
    tr, local, extra = track_following(video, shape, motion)
    chunks = plan_long_video(len(video), "segments", overlap=1).spans
    full = [c for c in chunks if c[1] - c[0] == world.FRAMES]
    along = tr.cx if motion == "right" else tr.cy
    ok = [bool(tracking.motion_ok(_slice(tr, a, b), motion)) for a, b in full]
    speed = [(along[b - 1] - along[a]) / (b - 1 - a) for a, b in full]
    tail = range(max(1, len(video) - 19), len(video))
    c = np.stack([tr.cx, tr.cy], 1)
    second = np.full(len(video), np.nan)
    second[1:-1] = np.sqrt((np.diff(c, n=2, axis=0) ** 2).sum(1))
    seams = [a for a, _ in chunks[1:]]
    inside = [t for t in range(1, len(video) - 1) if t not in seams]
    return {
        "ok": ok, "speed": speed,
        "colour_drift": float(255 * np.linalg.norm(np.nanmean(tr.colour[list(tail)], 0) - tr.colour[0])),
        "iou_tail": float(np.mean([tracking.registered_iou(local, t) for t in tail])),
        "iou_first": float(np.mean([tracking.registered_iou(local, t) for t in range(1, world.FRAMES)])),
        "seam": float(np.sqrt(np.nanmean(second[seams] ** 2))) if seams else math.nan,
        "inside": float(np.sqrt(np.nanmean(second[inside] ** 2))),
        "shift": float(along[-1] - along[0]),
        "second_object": float(np.mean(extra[1:] > 0.3)),
    }


def summarise(per_video: list[dict]) -> dict:
    ok = np.array([v["ok"] for v in per_video], float)
    speed = np.array([v["speed"] for v in per_video], float)
    keep = speed[:, -1] / speed[:, 0] if speed.shape[1] > 1 else np.full(len(speed), np.nan)
    return {"accuracy": ok.mean(0).tolist(), "speed_kept": float(np.nanmedian(keep)),
            "speed": np.nanmedian(speed, 0).tolist(),
            **{k: float(np.nanmedian([v[k] for v in per_video]))
               for k in ("colour_drift", "iou_tail", "iou_first", "seam", "inside", "shift")},
            "second_object": float(np.mean([v["second_object"] for v in per_video])),
            "n": len(per_video), "per_video": per_video}


def evaluate(motions: list[str], rows: list[str], n: int, weights_dir: Path, seed: int = 0,
             strips: Path | None = None, steps: int = TOY_SAMPLING_STEPS, cache: Path | None = None,
             guidance: float = TOY_GUIDANCE, log=print) -> dict:
    text_encoder = load_text_encoder(weights_dir)
    results: dict[str, dict] = {r: {} for r in rows}
    for motion in motions:
        scenes = world.unseen_first_frames(motion, n, seed=seed)
        height, width = long_canvas(motion, FRAMES)
        first = world.render(scenes, size=height, width=width)
        unet = load_motion_unet(motion, weights_dir)
        for key in rows:
            row, clock = ROWS[key], Stopwatch()
            cached = None if cache is None else cache / f"{motion}_{key}_n{n}_s{steps}_g{guidance:g}_seed{seed}.pt"
            if cached is not None and cached.is_file():
                videos = torch.load(cached, weights_only=True).float() / 255
            elif row.source == "ground_truth":
                videos = torch.stack([codec.decode(codec.encode(world.render(continued(s, motion), height, width)))
                                      for s in scenes])
            else:
                options = SamplingOptions(steps=steps, guidance_scale=guidance, frames=row.frames,
                                          long_strategy=row.strategy, long_options=row.options)
                videos = animate(unet, text_encoder, first, [s.caption for s in scenes], seed=seed, options=options)
            if cached is not None and not cached.is_file():
                cached.parent.mkdir(parents=True, exist_ok=True)
                torch.save((videos * 255).round().to(torch.uint8), cached)
            cell = summarise([score_video(v, s.shape, motion) for v, s in zip(videos, scenes)])
            cell["seconds"] = round(clock(), 1)
            results[key][motion] = cell
            if strips is not None:
                every = max(1, len(videos[0]) // 16)
                save_video(videos[0][::every], strips / f"long_{motion}_{key}", "gif")
            log(f"  {motion:<5} {row.label:<66} acc/chunk {['%.0f%%' % (100 * a) for a in cell['accuracy']]} "
                f"speed kept {cell['speed_kept']:.2f}  colour drift {cell['colour_drift']:.1f}  "
                f"IoU {cell['iou_tail']:.2f} ({cell['iou_first']:.2f})  seam {cell['seam']:.2f} / inside "
                f"{cell['inside']:.2f}  shift {cell['shift']:.1f} px  second object {cell['second_object']:.0%}  "
                f"px/frame {['%.2f' % v for v in cell['speed']]}  ({cell['seconds']:.0f} s)")
    return results


def table(results: dict) -> str:
    """One markdown row per (row, motion) cell."""
    head = ["strategy", "motion", "accuracy chunks 1-4", "px/frame chunks 1-4", "speed kept (4 vs 1)",
            "colour drift", "shape IoU end (chunk 1)", "seam / inside 2nd diff (px)", "total shift (px)",
            "second object", "s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in ROWS:
        for motion, cell in results.get(key, {}).items():
            acc = " / ".join(f"{a:.0%}" for a in cell["accuracy"])
            seam = "–" if math.isnan(cell["seam"]) else f"{cell['seam']:.2f}"
            speed = "–" if math.isnan(cell["speed_kept"]) else f"{cell['speed_kept']:.2f}"
            pace = " / ".join(f"{v:.2f}" for v in cell["speed"])
            lines.append(f"| {ROWS[key].label} | {motion} | {acc} | {pace} | {speed} | {cell['colour_drift']:.1f} | "
                         f"{cell['iou_tail']:.2f} ({cell['iou_first']:.2f}) | {seam} / {cell['inside']:.2f} | "
                         f"{cell['shift']:.1f} | {cell['second_object']:.0%} | {cell['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lamp_model.toy.long_eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--motions", nargs="+", default=list(MOTIONS), choices=list(MOTIONS))
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--n", type=int, default=6, help="unseen first frames per motion")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=TOY_SAMPLING_STEPS, help="DDIM steps (toy default 20)")
    ap.add_argument("--guidance", type=float, default=TOY_GUIDANCE,
                    help=f"classifier-free guidance (toy default {TOY_GUIDANCE:g})")
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--strips", type=Path, default=None, help="also write the first video of each cell here")
    ap.add_argument("--cache", type=Path, default=None, help="keep / reuse the sampled videos in this folder")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    ap.add_argument("--from-json", type=Path, nargs="+", default=None, metavar="JSON",
                    help="print one table merged from earlier --json files and exit")
    args = ap.parse_args(argv)
    if args.from_json:
        merged: dict = {}
        for path in args.from_json:
            for key, cells in json.loads(path.read_text())["results"].items():
                merged.setdefault(key, {}).update(cells)
        print(table(merged))
        return 0
    clock = Stopwatch()
    results = evaluate(args.motions, args.rows, args.n, args.weights, args.seed, args.strips, args.steps, args.cache,
                       args.guidance)
    print()
    print(table(results))
    print(f"\nlong_eval: {args.n} unseen first frames per motion, total {clock():.0f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"n": args.n, "seed": args.seed, "steps": args.steps,
                                         "guidance": args.guidance, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
