"""Video editing in the toy world (paper §5.2): tune on ONE clip, invert it, re-sample it with an edited frame one.

``python -m lamp_model.toy.editing [--train-steps 500] [--out toy_edit]`` (a few CPU minutes):

1. The source: one clip of a red circle moving along an arc (a path none of the shipped motions learned),
   rendered with :data:`SOURCE_FRAMES` frames; the edit uses 16 of them at stride 2 (the official editing
   preset's stride; 16 instead of 24 frames because the toy UNet works on 16).
2. One-clip tuning from the stage-1 base with the engine's trainer and the ``editing`` preset
   (:data:`lamp_model.train.PRESETS`: stride 2, 500 steps), at the toy's learning rate and without flips.
3. :func:`lamp_model.ddim_invert` of the 16 source frames (empty prompt, 50 steps), then
   :func:`lamp_model.editing.edit_video` (``--guidance``, the toy's 5 by default; AdaIN) + histogram
   matching, with the source's own first frame (reconstruction) and with recoloured / reshaped first frames.
4. The tracker (:mod:`lamp_model.toy.tracking`) measures the object's path in every video against the source's,
   and its colour and shape. Baselines: shared noise instead of the inversion, and the untuned inflated UNet.

Prints a Markdown table and writes one strip per video plus ``toy_edit_cfg<cfg>.png`` (all rows, 4x upscaled);
the tuned motion goes to ``<out>/source_motion.safetensors`` (``--motion`` reuses it).
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..data import LatentClipSet
from ..editing import EDIT_STEPS, clip_window, edit_video
from ..inversion import ddim_invert
from ..noise import make_raw_noise
from ..postprocess import color_match
from ..sampling import sample_video
from ..train import PRESETS, MotionTrainer, TrainConfig, default_noise_scheduler, unet_for_training
from ..unet3d import LampUNet3D
from ..video_io import write_strip
from ..weights import save_motion
from . import codec, tracking, world
from .models import WEIGHTS_DIR, Stopwatch, load_base_parts, load_text_encoder
from .stage2 import TOY_LR
from .stage3 import OFFICIAL_GUIDANCE, TOY_GUIDANCE, load_motion_unet, save_video

SOURCE_FRAMES = 33
EDIT_FRAMES = 16
STRIDE = PRESETS["editing"]["stride"]
#: (name, colour, shape) of the first frames tried; the source is a red circle.
EDITS = (("reconstruct (own frame one)", "red", "circle"), ("recolour: blue", "blue", "circle"),
         ("recolour: yellow", "yellow", "circle"), ("reshape: square", "red", "square"),
         ("reshape + recolour: green triangle", "green", "triangle"))


def source_clip(frames: int = SOURCE_FRAMES) -> world.Clip:
    """A red circle moving right along an arc (down then up again) on a gradient background."""
    scene = world.Scene("circle", "red", 10.0, 12.0, 4.8, 0.0, world.BACKGROUNDS[2], world.BACKGROUNDS[5], 30.0)
    scenes = []
    for t in range(frames):
        u = t / (frames - 1)
        scenes.append(replace(scene, cx=10.0 + 12.0 * u, cy=12.0 + 8.0 * math.sin(math.pi * u)))
    return world.Clip(world.render(scenes), scenes[0].caption, tuple(scenes))


def tune(clip: world.Clip, steps: int, weights_dir: Path | None = None, seed: int = 0, log=print) -> LampUNet3D:
    """One-clip tuning (the ``editing`` preset at the toy's size and learning rate) from the stage-1 base."""
    config, state = load_base_parts(weights_dir)
    unet = unet_for_training(config, state, seed=seed)
    clips = LatentClipSet.from_latents([codec.encode(clip.frames)], names=["source"])
    text = load_text_encoder(weights_dir).encode([clip.caption])
    cfg = TrainConfig(**{**PRESETS["editing"], "n_frames": EDIT_FRAMES, "steps": steps, "save_every": 0,
                         "validate_every": 0}, width=world.SIZE, height=world.SIZE, hflip=False,
                      learning_rate=TOY_LR, lr_scheduler="cosine", lr_warmup_steps=steps // 20,
                      gradient_checkpointing=False, seed=seed)
    trainer = MotionTrainer(unet, clips, text, cfg, noise_scheduler=default_noise_scheduler())
    clock, every = Stopwatch(), max(1, steps // 5)

    def progress(tr: MotionTrainer, loss: float) -> None:
        if tr.global_step % every == 0:
            log(f"  tune step {tr.global_step}/{steps}  loss {np.mean(tr.loss_history[-every:]):.4f}  {clock():.0f} s")

    trainer.train(callback=progress)
    return unet.eval()


def edited_first_frame(clip: world.Clip, colour: str, shape: str) -> torch.Tensor:
    """The source's first scene with another colour / shape: ``[1, 3, 32, 32]``."""
    return world.render([replace(clip.scenes[0], colour=colour, shape=shape)])


def path_error(track: tracking.Track, source: tracking.Track) -> tuple[float, float]:
    """Mean and max distance (px) between two tracked centroid paths over frames 1.."""
    d = np.hypot(track.cx[1:] - source.cx[1:], track.cy[1:] - source.cy[1:])
    return (float("nan"), float("nan")) if np.isnan(d).any() else (float(d.mean()), float(d.max()))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean()))


@torch.no_grad()
def run(train_steps: int, steps: int, guidances: list[float], out: Path, weights_dir: Path | None = None,
        motion: Path | None = None, log=print) -> list[dict]:
    """Tune (or load ``motion``, a motion file of an earlier run), invert, edit at every guidance scale."""
    clock = Stopwatch()
    clip = source_clip()
    frames = clip.frames[clip_window(len(clip.frames), EDIT_FRAMES, 0, STRIDE)]  # what is inverted and edited
    text = load_text_encoder(weights_dir)
    empty = text.encode([""])
    if motion is not None:
        tuned = load_motion_unet(motion, weights_dir)
        log(f"tuned motion loaded from {motion}")
    else:
        with torch.enable_grad():
            tuned = tune(clip, train_steps, weights_dir, log=log)
        saved = save_motion(tuned, out / "source_motion.safetensors", {"toy_edit_source": clip.caption,
                                                                       "training_steps": train_steps})
        log(f"tuned on one clip: {train_steps} steps, {clock():.0f} s -> {saved}")
    config, state = load_base_parts(weights_dir)
    untuned = unet_for_training(config, state, seed=0).eval()
    source = codec.encode_video(frames)
    src_track = tracking.track(frames, "circle")
    rows = []
    inverted = {name: ddim_invert(unet, source, empty, steps=steps) for name, unet in (("tuned", tuned),
                                                                                       ("untuned", untuned))}
    log(f"inverted: {clock():.0f} s")
    cases = [(name, colour, shape, "tuned", "inversion") for name, colour, shape in EDITS]
    cases += [("recolour: blue, shared noise (no inversion)", "blue", "circle", "tuned", "noise"),
              ("recolour: blue, untuned UNet", "blue", "circle", "untuned", "inversion")]
    for guidance in guidances:
        strips = [("source", frames)]
        for name, colour, shape, which, start in cases:
            unet = tuned if which == "tuned" else untuned
            first = codec.encode(edited_first_frame(clip, colour, shape)).unsqueeze(2)
            prompt = text.encode([world.caption(colour, shape)])
            if start == "inversion":
                latents = edit_video(unet, first, prompt, empty, inverted[which], steps=steps,
                                     guidance_scale=guidance, inversion_steps=steps)
            else:
                latents = sample_video(unet, first, prompt, empty, make_raw_noise(0, source.shape), steps=steps,
                                       guidance_scale=guidance)
            video = color_match(codec.decode_video(latents)[0])
            track = tracking.track(video, shape)
            mean_err, max_err = path_error(track, src_track)
            scores = tracking.content_scores(track, shape, colour)
            own = (colour, shape) == ("red", "circle")
            row = {"case": name, "cfg": guidance, "path_mean_px": mean_err, "path_max_px": max_err,
                   "colour": scores["colour"], "shape": scores["shape"], "psnr": psnr(video, frames) if own else None}
            rows.append(row)
            strips.append((name, video))
            save_video(video, out / f"cfg{guidance:g}_{len(strips) - 1:02d}_{colour}_{shape}_{which}_{start}")
            log(f"  cfg {guidance:g} {name}: path {mean_err:.2f} px (max {max_err:.2f}), colour {scores['colour']:.0%}, "
                f"shape {scores['shape']:.0%}" + (f", PSNR {row['psnr']:.1f} dB" if row["psnr"] else ""))
        big = torch.nn.functional.interpolate(torch.cat([v for _, v in strips], dim=2), scale_factor=4,
                                              mode="nearest")
        write_strip(big.permute(0, 2, 3, 1), out / f"toy_edit_cfg{guidance:g}.png")
    ceiling = psnr(codec.decode_video(source)[0], frames)
    log(f"codec round trip of the source (PSNR ceiling): {ceiling:.1f} dB; total {clock():.0f} s")
    rows.append({"case": "codec round trip of the source (ceiling)", "psnr": ceiling})
    return rows


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = ["| case | cfg | path error mean / max (px) | colour kept | shape kept | PSNR vs source |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        path = f"{r['path_mean_px']:.2f} / {r['path_max_px']:.2f}" if "path_mean_px" in r else ""
        colour = f"{r['colour']:.0%}" if "colour" in r else ""
        shape = f"{r['shape']:.0%}" if "shape" in r else ""
        quality = "" if r.get("psnr") is None else f"{r['psnr']:.1f} dB"
        cfg = f"{r['cfg']:g}" if "cfg" in r else ""
        lines.append(f"| {r['case']} | {cfg} | {path} | {colour} | {shape} | {quality} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lamp_model.toy.editing``; a user error is one ``error:`` line, exit code 2."""
    from ..checks import as_float, as_int, writable_dir
    from ..cli import ArgumentParser, run_command

    ap = ArgumentParser(prog="python -m lamp_model.toy.editing", description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-steps", type=int, default=PRESETS["editing"]["steps"], help="one-clip tuning steps (500)")
    ap.add_argument("--steps", type=int, default=EDIT_STEPS, help="DDIM steps, inversion and sampling (50)")
    ap.add_argument("--guidance", type=float, nargs="+", default=[TOY_GUIDANCE],
                    help=f"classifier-free guidance scale(s) (the toy's {TOY_GUIDANCE:g}; "
                         f"official {OFFICIAL_GUIDANCE:g})")
    ap.add_argument("--motion", type=Path, default=None,
                    help="a tuned motion file of an earlier run (<out>/source_motion.safetensors): skip the tuning")
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--out", type=Path, default=Path("toy_edit"))
    args = ap.parse_args(argv)

    def body() -> int:
        as_int("--train-steps", args.train_steps, 1, hint="the editing preset uses 500")
        as_int("--steps", args.steps, 1, 1000, hint="official 50")
        for cfg in args.guidance:
            as_float("--guidance", cfg, 0.0, hint=f"the toy's default is {TOY_GUIDANCE:g}")
        if args.motion is not None and not args.motion.is_file():
            raise FileNotFoundError(f"--motion {args.motion}: no such file; give the source_motion.safetensors of "
                                    "an earlier run, or leave --motion out to tune one")
        writable_dir(args.out, "--out")
        rows = run(args.train_steps, args.steps, args.guidance, args.out, args.weights, args.motion)
        print(table(rows))
        print(f"strips: {args.out}/*_strip.png, all rows: {args.out}/toy_edit_cfg<cfg>.png")
        return 0

    return run_command(body)


if __name__ == "__main__":
    raise SystemExit(main())
