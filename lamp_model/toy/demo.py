"""``python -m lamp_model demo``: LAMP end to end on a CPU in seconds, with the shipped toy weights.

    python -m lamp_model demo --motion right --prompt "a blue triangle" [--out DIR] [--image first.png]
    python -m lamp_model demo --motion all                                                  # every shipped motion
    python -m lamp_model demo --motion right --frames 64 --long-strategy segments|windows   # a long video
    python -m lamp_model demo --motion 'translate:dx=-12,dy=0' --motion-file runs/left/motion.safetensors  # your own

Renders a first frame of the prompt (or takes ``--image``, resized to 32x32), animates it with the
learned motion through the engine's real sampler (shared noise, pinned frame 0, AdaIN, DDIM with
the toy's guidance 5, official 12.5) and histogram matching, and writes an animated GIF (or WebP / MP4)
and a side-by-side strip PNG, both upscaled 4x. Nothing is downloaded: the tiny stage-1 UNet, its text
encoder and one motion file per motion live in ``lamp_model/toy/weights`` (``python -m lamp_model.toy.build_weights``
regenerates them). Prints the paths, what the tracker measured, and the time taken.

With ``--frames`` above 16 the video is a long one (:mod:`lamp_model.long_video`, ``--long-strategy``):
for ``right`` / ``down`` the canvas is widened along the motion (:func:`~lamp_model.toy.long_eval.long_canvas`)
so the shape can keep moving, and the tracker reports every 16-frame chunk.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..checks import as_float, as_int, writable_dir
from ..cli import ArgumentParser, run_command
from ..long_video import add_long_video_arguments, long_video_options
from ..sampling import COLOR_CONSISTENCY
from . import tracking, world
from .long_eval import long_canvas, score_video
from .models import WEIGHTS_DIR, Stopwatch, load_text_encoder
from .stage2 import motion_arg
from .stage3 import (OFFICIAL_GUIDANCE, TOY_GUIDANCE, TOY_SAMPLING_STEPS, SamplingOptions, animate,
                     load_motion_unet, save_video)

#: ``--motion all``: one video per shipped motion (what ``bash scripts/demo.sh`` renders without arguments).
ALL = "all"
#: ``--color-consistency auto`` (the default): see :func:`color_consistency`.
AUTO = "auto"


def first_frame(motion: str | world.MotionSpec, prompt: str, seed: int, image: Path | None,
                frames: int = world.FRAMES) -> tuple[torch.Tensor, str]:
    """The first frame ``[1, 3, H, W]`` (rendered from the prompt, or read from ``image`` and resized to the
    canvas) and its shape; 32x32, or the long-video canvas of ``frames`` frames."""
    colour, shape = world.parse_caption(prompt)
    spec = world.motion_spec(motion)
    height, width = long_canvas(spec.name, frames)
    if image is None:
        scene = world.start_scene(spec, np.random.default_rng([seed, 5]), shape, colour)
        return world.render([scene], height, width), shape
    from PIL import Image

    from ..data import resize_frame

    if not image.is_file():
        raise FileNotFoundError(f"--image {image}: file not found")
    try:
        with Image.open(image) as img:
            rgb = resize_frame(img, width, height)
    except OSError as err:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"--image {image}: not a readable picture ({type(err).__name__}); give a PNG or JPEG "
                         "file") from None
    return torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None], shape


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m lamp_model demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--motion", default=None, type=lambda text: ALL if text == ALL else motion_arg(text),
                    help=f"the learned motion to apply: {', '.join(world.MOTIONS)} (default right), '{ALL}' (one video "
                         "each), or a spec trained with stage 2 (e.g. translate:dx=-12,dy=0; README: Your own motion)")
    ap.add_argument("--prompt", default="a blue triangle",
                    help=f"'a <colour> <shape>'; colours: {', '.join(world.COLOURS)}; shapes: {', '.join(world.SHAPES)}")
    ap.add_argument("--image", type=Path, default=None, help="use this picture as the first frame (resized to 32x32)")
    ap.add_argument("--out", type=Path, default=Path("lamp_demo"), help="output folder (default: ./lamp_demo)")
    ap.add_argument("--format", default="gif", choices=["gif", "webp", "mp4"])
    ap.add_argument("--steps", type=int, default=TOY_SAMPLING_STEPS, help="DDIM steps")
    ap.add_argument("--guidance", type=float, default=TOY_GUIDANCE,
                    help=f"classifier-free guidance (the toy's {TOY_GUIDANCE:g}; official {OFFICIAL_GUIDANCE:g})")
    ap.add_argument("--no-adain", action="store_true",
                    help="skip the latent AdaIN (histogram matching kept; ablation)")
    ap.add_argument("--color-consistency", default=AUTO, choices=[AUTO, *COLOR_CONSISTENCY],
                    help="statistics of the AdaIN and histogram matching: official (whole frame), static (only "
                         "the pixels that did not change), none (both off); auto (default): static for a motion "
                         "that changes size (whose growth the whole-frame statistics undo), official otherwise")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="folder of the toy weights")
    ap.add_argument("--motion-file", type=Path, default=None,
                    help="a motion file of your own (e.g. runs/left/motion.safetensors from `python -m lamp_model "
                         "train --preset toy`) instead of <weights>/motion_<name>.safetensors; --motion names "
                         "the motion it learned (which places the first frame and is what the tracker checks; "
                         "read from the file when stage 2 wrote it)")
    ap.add_argument("--frames", type=int, default=world.FRAMES,
                    help=f"video length (default {world.FRAMES}, what the motions were trained on; more makes a "
                         "long video, e.g. 64)")
    add_long_video_arguments(ap)
    args = ap.parse_args(argv)
    return run_command(lambda: _demo(args))


def _demo(args: argparse.Namespace) -> int:
    as_int("--steps", args.steps, 1, 1000, hint=f"the toy default is {TOY_SAMPLING_STEPS}")
    as_float("--guidance", args.guidance, 0.0, hint=f"the toy default is {TOY_GUIDANCE}")
    as_int("--seed", args.seed, 0)
    as_int("--frames", args.frames, 2, 1024, hint=f"the motions were trained on {world.FRAMES}")
    if args.motion is None:
        args.motion = world.motion_spec("right") if args.motion_file is None else _file_motion(args.motion_file)
    motions = [world.motion_spec(m) for m in world.MOTIONS] if args.motion == ALL else [args.motion]
    if args.motion == ALL and args.motion_file is not None:
        raise ValueError("--motion-file animates one motion: give it with --motion <the motion it learned>, not all")
    plan, long_options = long_video_options(args, args.frames)
    writable_dir(args.out, "--out")
    world.parse_caption(args.prompt)  # clear errors for a bad prompt before any work
    text_encoder = load_text_encoder(args.weights)
    text_encoder.tokenize(args.prompt)
    total = Stopwatch()
    for motion in motions:
        _demo_one(args, motion, text_encoder, plan, long_options)
    if len(motions) > 1:
        print(f"all {len(motions)} motions: {total():.1f} s")
    return 0


def _demo_one(args: argparse.Namespace, motion: world.MotionSpec, text_encoder, plan, long_options: dict) -> None:
    """Render, save and report one motion's video."""
    frame, shape = first_frame(motion, args.prompt, args.seed, args.image, args.frames)
    colors = color_consistency(args.color_consistency, motion)
    clock = Stopwatch()
    unet = load_motion_unet(_motion_file(args.motion_file) or motion, args.weights)
    video = animate(unet, text_encoder, frame, [args.prompt], seed=args.seed,
                    options=SamplingOptions(steps=args.steps, guidance_scale=args.guidance,
                                            adain=not args.no_adain, frames=args.frames,
                                            color_consistency=colors,
                                            long_strategy=None if plan.single else plan.strategy,
                                            long_options={k: v for k, v in long_options.items()
                                                          if k != "strategy" and not plan.single}))[0]
    stem = args.out / f"{motion.name}_{args.prompt.strip().lower().replace(' ', '_')}"
    path, strip = save_video(video, stem, args.format)
    print(f"video: {path}\nstrip: {strip}")
    if not plan.single:
        _report_long(video, shape, motion, plan)
        print(f"time: {clock():.1f} s on {torch.get_num_threads()} CPU thread(s), nothing downloaded")
        return
    track = tracking.track(video, shape)
    amount = tracking.motion_amount(track, motion)
    print(f"tracked motion: {amount:.1f} {tracking.amount_unit(motion)} over {len(video)} frames "
          f"({'matches' if tracking.motion_ok(track, motion) else 'does NOT match'} '{motion.name}': "
          f"{tracking.criterion(motion)})")
    if motion.scales and colors == "official" and not args.no_adain:
        print("hint: AdaIN and histogram matching over the whole frame pull every frame's colour statistics back "
              "to frame 0's, which undoes growth; try --color-consistency static (README: Toy motion world, Results)")
    print(f"time: {clock():.1f} s on {torch.get_num_threads()} CPU thread(s), nothing downloaded")


def color_consistency(choice: str, motion: world.MotionSpec) -> str:
    """``--color-consistency``: ``auto`` is ``static`` for a motion that changes size (the whole-frame
    statistics undo growth: README, Toy motion world, Results) and ``official`` otherwise."""
    if choice != AUTO:
        return choice
    return "static" if motion.scales else "official"


def _motion_file(path: Path | None) -> Path | None:
    """``--motion-file``, checked: an existing ``.safetensors`` file (a clear error otherwise)."""
    if path is None:
        return None
    if path.suffix != ".safetensors" or not path.is_file():
        raise FileNotFoundError(f"--motion-file {path}: no such .safetensors file; give the motion.safetensors a "
                                "training run wrote (python -m lamp_model train --preset toy ... --output-dir DIR)")
    return path


def _file_motion(path: Path) -> world.MotionSpec:
    """The motion a ``--motion-file`` learned, from the spec toy stage 2 records in it (``toy_motion_spec``); a
    file without one (e.g. from ``train --preset toy``) is a clear error asking for ``--motion``."""
    from ..weights import read_motion

    text = read_motion(_motion_file(path))[1].get("toy_motion_spec")
    if not text:
        raise ValueError(f"--motion-file {path}: the file does not say which motion it learned; give it with --motion "
                         "(e.g. --motion translate:dx=-12,dy=0), which places the first frame so the motion fits and "
                         "is what the tracker checks")
    return world.motion_spec(text)


def _report_long(video: torch.Tensor, shape: str, motion: world.MotionSpec, plan) -> None:
    """Per-chunk tracking of a long video (right / down; other motions get the whole-video amount)."""
    print(f"long video: {plan.frames} frames as {len(plan.spans)} {plan.strategy} of {plan.segment_frames} "
          f"(overlap {plan.overlap})")
    if motion.name not in ("right", "down"):
        amount = tracking.motion_amount(tracking.track(video, shape), motion)
        print(f"tracked motion over all frames: {amount:.1f} {tracking.amount_unit(motion)}")
        return
    figures = score_video(video, shape, motion.name)
    speeds = ", ".join(f"{v:.2f}" for v in figures["speed"])
    print(f"tracked: {figures['shift']:.1f} {tracking.amount_unit(motion)} in all (the motion continued: "
          f"{world.SHIFT_PX / (world.FRAMES - 1) * (plan.frames - 1):.1f}); px/frame per 16-frame chunk: {speeds}; "
          f"chunks matching '{motion.name}': {sum(figures['ok'])} of {len(figures['ok'])}; seam jump "
          f"{figures['seam']:.2f} vs {figures['inside']:.2f} px/frame^2 inside")


if __name__ == "__main__":
    raise SystemExit(main())
