"""``python -m lamp_model smoke``: the whole LAMP inference path on a tiny random model, in seconds on a CPU.

Builds everything in code (nothing is downloaded): a tiny LAMP UNet with non-trivial motion layers, a tiny
random diffusers ``AutoencoderKL`` (8× down-sampling like SD's VAE) and random text embeddings. Then it runs
the real pipeline: VAE-encode a synthetic first frame → :func:`~lamp_model.sampling.sample_video` (or, for
``--frames`` above ``--segment-frames``, :func:`~lamp_model.long_video.sample_long_video`) (shared
noise, pinned frame 0, CFG, AdaIN) → VAE-decode → histogram matching to frame 0 → GIF, MP4 and a PNG strip.
The pictures are meaningless (random weights); the run proves that the parts fit together and the outputs
open. Prints the file paths and the time of each stage.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

#: A tiny SD-1.x-shaped UNet config (two levels, 16/32 channels).
TINY_UNET = {
    "sample_size": 16, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [16, 32], "layers_per_block": 1, "attention_head_dim": 2, "cross_attention_dim": 16,
    "norm_num_groups": 4,
}
#: A tiny AutoencoderKL with SD's 8× spatial factor and 4 latent channels.
TINY_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [8, 8, 16, 16], "sample_size": 128,
}
LATENT_SCALE = 0.18215


def tiny_models(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A tiny LAMP UNet (motion layers drawn at random so that none is an identity) and a tiny VAE."""
    from diffusers import AutoencoderKL

    from .unet3d import LampUNet3D, randomize_motion_layers

    with torch.random.fork_rng(devices=[]):  # seeded default init without touching the caller's RNG
        torch.manual_seed(seed)
        unet = randomize_motion_layers(LampUNet3D(TINY_UNET).eval(), seed)
        vae = AutoencoderKL(**TINY_VAE).eval()
    return unet, vae


def synthetic_first_frame(size: int = 128) -> torch.Tensor:
    """An RGB test picture ``[3, size, size]`` in 0..1: colour gradients and a bright disc."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    disc = (((x - 0.6) ** 2 + (y - 0.4) ** 2) < 0.04).float()
    return torch.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.8 - 0.5 * x * y]).clamp(0, 1) * (1 - disc) + disc * 0.95


def run(out_dir: Path, frames: int = 8, steps: int = 10, seed: int = 0, size: int = 128,
        long: dict | None = None) -> dict[str, Path]:
    """Run the smoke pipeline, write ``lamp_smoke.gif/.mp4/_strip.png`` into ``out_dir``; returns the paths.

    ``long``: keyword arguments of :func:`~lamp_model.long_video.sample_long_video` (strategy, segment_frames,
    overlap, content_lock, color_reference) for videos longer than a segment; ``None`` = its defaults.
    """
    from .long_video import (DEFAULT_STRATEGY, TRAINED_FRAMES, match_histogram_long, plan_long_video,
                             sample_long_video)
    from .noise import make_raw_noise
    from .video_io import write_strip, write_video

    if frames < 2 or steps < 1 or size % 8:
        raise ValueError("smoke needs --frames >= 2, --steps >= 1 and a size divisible by 8")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    unet, vae = tiny_models(seed)
    timings["build models"] = time.perf_counter() - start

    with torch.no_grad():
        start = time.perf_counter()
        image = synthetic_first_frame(size)[None] * 2 - 1                                   # [1,3,H,W] in -1..1
        first = vae.encode(image).latent_dist.mode().unsqueeze(2) * LATENT_SCALE           # [1,4,1,h,w]
        timings["vae encode"] = time.perf_counter() - start

        g = torch.Generator().manual_seed(seed + 1)
        dim = TINY_UNET["cross_attention_dim"]
        cond, uncond = torch.randn(1, 77, dim, generator=g), 0.5 * torch.randn(1, 77, dim, generator=g)
        noise = make_raw_noise(seed + 2, (1, 4, frames, size // 8, size // 8))
        start = time.perf_counter()
        long = dict(long or {})
        plan = plan_long_video(frames, long.get("strategy", DEFAULT_STRATEGY),
                               long.get("segment_frames", TRAINED_FRAMES), long.get("overlap"))
        latents = sample_long_video(unet, first, cond, uncond, noise, steps=steps, **long)
        what = "sample_video" if plan.single else f"sample_long_video, {len(plan.spans)} {plan.strategy}"
        timings[f"{what} ({steps} steps, {frames} frames)"] = time.perf_counter() - start

        start = time.perf_counter()
        video = vae.decode(latents[0].transpose(0, 1) / LATENT_SCALE).sample                 # [F,3,H,W]
        video = (video / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)                          # [F,H,W,3]
        timings["vae decode"] = time.perf_counter() - start

    start = time.perf_counter()
    video = match_histogram_long(video, plan, long.get("color_reference", "original"))
    timings["histogram matching"] = time.perf_counter() - start

    start = time.perf_counter()
    out_dir = Path(out_dir)
    paths = {
        "gif": write_video(video, out_dir / "lamp_smoke.gif", fps=8),
        "mp4": write_video(video, out_dir / "lamp_smoke.mp4", fps=8),
        "strip": write_strip(video, out_dir / "lamp_smoke_strip.png"),
    }
    timings["write files"] = time.perf_counter() - start
    for stage, seconds in timings.items():
        print(f"  {stage:<36} {seconds:7.3f} s")
    for kind, path in paths.items():
        print(f"{kind:>5}: {path}  ({path.stat().st_size} bytes)")
    return paths


def main(argv: list[str] | None = None) -> int:
    from .checks import as_int, writable_dir
    from .cli import ArgumentParser, run_command

    parser = ArgumentParser(prog="python -m lamp_model smoke", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("lamp_smoke_out"), help="output folder")
    parser.add_argument("--frames", type=int, default=8, help="video length (>= 2)")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps")
    parser.add_argument("--seed", type=int, default=0)
    from .long_video import add_long_video_arguments, long_video_options
    add_long_video_arguments(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        as_int("--frames", args.frames, 2, hint="frame one plus at least one more")
        as_int("--steps", args.steps, 1, 1000)
        as_int("--seed", args.seed, 0)
        writable_dir(args.out, "--out")
        _, long = long_video_options(args, args.frames)
        total = time.perf_counter()
        run(args.out, frames=args.frames, steps=args.steps, seed=args.seed, long=long)
        print(f"smoke OK in {time.perf_counter() - total:.2f} s")
        return 0

    return run_command(body)
