"""``python -m lamp_model paper-eval --motions DIR --base B --first-frames DIR --clip PATH``: the paper's
evaluation protocol in one command — generate every benchmark video with the engine, then score it.

    --motions DIR        <motion>.safetensors (compact motion file or full LAMP UNet) or <motion>/ (an official
                         checkpoint folder holding unet/), e.g. the 8 official motions
    --first-frames DIR   <motion>/<prompt with _ for spaces>.png, the layout of the official benchmark/ folder
                         (6 SD-XL first frames per motion; the user supplies them)
    --base B             the SD-1.x base (SD-1.4 for the official motions): diffusers folder, or a single-file
                         checkpoint with --text-encoder <diffusers SD-1.x folder>

The protocol (Table 1 of the paper, :data:`PROTOCOL`): 16 frames at 512x320, 50 DDIM steps, guidance 12.5,
empty negative prompt, shared noise 0.2, AdaIN, histogram matching — the official ``inference_script.py``
(first frame stretched to 512x320, prompt = the file name with ``_`` → space). Seeds: the official script never
seeds its generator, so every video there starts from PyTorch's default generator state; here the noise of
each video is drawn from the listed ``--seeds`` (default 0; several seeds give several videos per prompt).
The first-frame latent is the VAE posterior mean (the official script draws a sample; for SD's VAE the
difference is far below what CLIP sees). Each video is scored from its frames in memory, then written as
``<out>/videos/<motion>/<name>.gif`` (8 fps, as the official script) with ``prompts.json``, so
``evaluate-videos <out>/videos --prompts <out>/prompts.json`` re-scores the files (GIF palettes change the
numbers slightly). ``metrics.md`` / ``metrics.json`` hold the table.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch

from .cli import ArgumentParser, run_command
from .data import IMAGE_SUFFIXES, _natural_key
from .metrics import EvalVideo, load_clip, score_named, summarize

#: The paper's protocol. Motions and prompt counts: the official benchmark/ folder (6 first frames each).
PROTOCOL: dict[str, Any] = {
    "motions": ["birds_fly", "firework", "helicopter", "horse_run", "play_the_guitar", "rain", "turn_to_smile",
                "waterfall"],
    "prompts_per_motion": 6, "frames": 16, "width": 512, "height": 320, "steps": 50, "guidance_scale": 12.5,
    "shared_noise_alpha": 0.2, "adain": True, "histogram_matching": True, "negative_prompt": "", "seeds": [0],
    "fps": 8,
}


class PaperEvalError(ValueError):
    """A missing input or model part; the message says what to give."""


@dataclass
class Job:
    """One video of the protocol: a motion's weights, a first frame, its prompt, a seed and the output name."""

    motion: str
    weights: Path
    first_frame: Path
    prompt: str
    seed: int
    name: str


def _motion_weights(folder: Path) -> dict[str, Path]:
    found = {}
    for entry in sorted(folder.iterdir(), key=lambda p: _natural_key(p.name)):
        if entry.is_file() and entry.suffix == ".safetensors":
            found[entry.stem] = entry
        elif entry.is_dir() and ((entry / "unet" / "config.json").is_file() or (entry / "config.json").is_file()):
            found[entry.name] = entry
    return found


def plan(motions_dir: Path, first_frames_dir: Path, seeds: Sequence[int], only: Sequence[str] = ()) -> list[Job]:
    """Every (motion, first frame, seed) to generate, for the motions present in both folders."""
    for what, folder in (("--motions", motions_dir), ("--first-frames", first_frames_dir)):
        if not folder.is_dir():
            raise PaperEvalError(f"{what} folder '{folder}' does not exist")
    if len(set(seeds)) != len(seeds):  # the same seed twice would write one video over the other and count it twice
        raise PaperEvalError(f"--seeds {' '.join(map(str, seeds))} repeats a seed; list each seed once")
    weights = _motion_weights(motions_dir)
    if not weights:
        raise PaperEvalError(f"'{motions_dir}' holds no motions: put <motion>.safetensors files (python -m lamp_model "
                             "convert) or official checkpoint folders <motion>/unet/ there")
    names = [m for m in weights if (first_frames_dir / m).is_dir()]
    if only:
        missing = [m for m in only if m not in names]
        if missing:
            raise PaperEvalError(f"motion(s) {missing} need both {motions_dir}/<motion> weights and "
                                 f"{first_frames_dir}/<motion>/ first frames; found motions {names}")
        names = list(only)
    if not names:
        raise PaperEvalError(f"no motion has both weights in '{motions_dir}' ({', '.join(weights)}) and a folder of "
                             f"first frames in '{first_frames_dir}' (the official benchmark/<motion>/ layout)")
    jobs = []
    for motion in names:
        images = sorted((p for p in (first_frames_dir / motion).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                        key=lambda p: _natural_key(p.name))
        if not images:
            raise PaperEvalError(f"'{first_frames_dir / motion}' holds no first frames (.png/.jpg)")
        for image in images:
            for seed in seeds:
                name = image.stem if len(seeds) == 1 else f"{image.stem}_seed{seed}"
                jobs.append(Job(motion, weights[motion], image, image.stem.replace("_", " ").strip(), seed, name))
    return jobs


def _text_encoder(base: Path, text_encoder: Optional[str], device: torch.device):
    from .train_cli import TrainSetupError, text_encoder_from_folder

    folder = Path(text_encoder) if text_encoder else base
    if not folder.is_dir():
        raise PaperEvalError(f"{base.name} is a single-file checkpoint, which carries no tokenizer: pass "
                             "--text-encoder <diffusers SD-1.x folder with tokenizer/ and text_encoder/>")
    try:
        return text_encoder_from_folder(folder, device, alternative="")
    except TrainSetupError as err:
        raise PaperEvalError(str(err)) from err


def generate(jobs: Sequence[Job], base: Path, settings: dict[str, Any], device: torch.device, dtype: torch.dtype,
             vae_path: Optional[str] = None, text_encoder: Optional[str] = None) -> Iterator[EvalVideo]:
    """Generate every job's video with the engine (one UNet loaded per motion), yielding each video with its
    prompt as soon as it is made (frames ``[F, H, W, 3]`` float in 0..1 on the CPU)."""
    from PIL import Image

    from .data import diffusers_vae_decoder, diffusers_vae_encoder, frames_to_pixels, resize_frame
    from .noise import make_raw_noise
    from .postprocess import color_match
    from .sampling import sample_video
    from .train_cli import load_vae
    from .weights import load_unet

    encode_text = _text_encoder(base, text_encoder, device)
    uncond = encode_text([settings["negative_prompt"]])
    vae = load_vae(base, vae_path).to(device).eval().requires_grad_(False)
    if vae.dtype != dtype:
        vae.to(dtype=dtype)
    encode, decode = diffusers_vae_encoder(vae), diffusers_vae_decoder(vae)
    width, height, n_frames = settings["width"], settings["height"], settings["frames"]
    unet, loaded = None, None
    for job in jobs:
        if loaded != job.weights:
            unet = None  # free the previous motion before loading the next
            unet = load_unet(job.weights, base=base, dtype=dtype, device=device)
            loaded = job.weights
        with Image.open(job.first_frame) as img:  # the official script: a stretch to 512x320
            pixels = frames_to_pixels(resize_frame(img, width, height, "stretch")[None])
        with torch.no_grad():
            first = encode(pixels)[0][:, :, None]                                  # [1, 4, 1, h, w]
            noise = make_raw_noise(job.seed, (1, first.shape[1], n_frames, *first.shape[-2:]))
            latents = sample_video(unet, first, encode_text([job.prompt]).to(device, dtype), uncond.to(device, dtype),
                                   noise.to(device, dtype), steps=settings["steps"],
                                   guidance_scale=settings["guidance_scale"],
                                   shared_noise_alpha=settings["shared_noise_alpha"], adain=settings["adain"])
        frames = decode(latents)
        if settings["histogram_matching"]:
            frames = color_match(frames, mode="histogram")
        yield EvalVideo(job.motion, job.name, job.prompt, frames)


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lamp_model paper-eval``; a user error is one ``error:`` line and exit code 2."""
    from .checks import as_float, as_int, writable_dir
    from .weights import base_context_width
    from .evaluate_videos import add_metric_options, clip_path, print_report, resolve_device, tqdm_progress
    from .video_io import write_video

    ap = ArgumentParser(prog="python -m lamp_model paper-eval", description=__doc__.split("\n\n")[0],
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--motions", type=Path, required=True, help="folder of motion files / official checkpoints")
    ap.add_argument("--first-frames", type=Path, required=True, help="folder <motion>/<prompt>.png (benchmark/)")
    ap.add_argument("--base", type=Path, required=True, help="SD-1.x base (diffusers folder or single file)")
    ap.add_argument("--text-encoder", help="diffusers SD-1.x folder with tokenizer/ and text_encoder/ (default: base)")
    ap.add_argument("--vae", help="VAE instead of the base's (diffusers folder or .safetensors)")
    ap.add_argument("--out", type=Path, default=Path("paper_eval"), help="output folder (default ./paper_eval)")
    ap.add_argument("--motion", action="append", default=[], help="evaluate only this motion (repeatable)")
    ap.add_argument("--seeds", type=int, nargs="+", default=PROTOCOL["seeds"], help="noise seeds (one video each)")
    for key, kind in (("frames", int), ("width", int), ("height", int), ("steps", int), ("guidance_scale", float)):
        ap.add_argument("--" + key.replace("_", "-"), type=kind, default=PROTOCOL[key],
                        help=f"protocol: {PROTOCOL[key]}")
    ap.add_argument("--dtype", default="auto", choices=["auto", "fp16", "bf16", "fp32"],
                    help="UNet/VAE dtype: auto = fp16 on CUDA (official), fp32 on CPU")
    add_metric_options(ap)
    args = ap.parse_args(argv)
    settings = {**PROTOCOL, "frames": args.frames, "width": args.width, "height": args.height, "steps": args.steps,
                "guidance_scale": args.guidance_scale, "seeds": list(args.seeds)}

    def body() -> int:
        if args.width % 8 or args.height % 8 or args.frames < 2:
            raise PaperEvalError(f"--width/--height must be multiples of 8 and --frames >= 2 "
                                 f"(got {args.width}x{args.height}, {args.frames})")
        as_int("--steps", args.steps, 1, 1000, hint="the protocol uses 50")
        as_float("--guidance-scale", args.guidance_scale, 0.0, hint="the protocol uses 12.5")
        device = resolve_device(args.device)
        writable_dir(args.out, "--out")  # before generating anything
        base_context_width(args.base)  # header only: an SD-XL/SD-2 or damaged base is named at once
        clip = load_clip(clip_path(args.clip), device=device)  # fail early, before any generation
        jobs = plan(args.motions, args.first_frames, settings["seeds"], args.motion)
        scores, prompts = [], {}
        bar, progress = tqdm_progress(len(jobs), "generating + scoring")
        with bar:  # each video is scored and written at once, so only its CLIP features stay in memory
            for k, video in enumerate(generate(jobs, args.base, settings, device, _dtype(args.dtype, device),
                                               args.vae, args.text_encoder)):
                scores.append(score_named(clip, video, official_quirks=args.official_quirks))
                write_video(video.frames, args.out / "videos" / video.motion / f"{video.name}.gif",
                            fps=settings["fps"])
                prompts[f"{video.motion}/{video.name}"] = video.prompt
                progress(k + 1, len(jobs))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "prompts.json").write_text(json.dumps(prompts, indent=2) + "\n", encoding="utf-8")
        report = {**summarize(clip, scores, official_quirks=args.official_quirks), "protocol": settings}
        print_report(report, args.out)
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
