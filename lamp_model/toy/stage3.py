"""Stage 3: generation: animate first frames with a learned motion, through the engine's real sampler.

``python -m lamp_model.toy.stage3 --motion right [--n 4] [--out DIR]`` takes first frames whose
(shape, colour) pair the motion never saw in training, encodes them with the toy codec and runs
:func:`lamp_model.sampling.sample_video` (shared noise, clean frame 0 pinned and never stepped, the
AdaIN schedule and the final AdaIN, DDIM, classifier-free guidance), decodes, and matches every frame's
histogram to frame 0 (:func:`lamp_model.postprocess.color_match`, the official post-processing). Writes a
GIF and a side-by-side strip PNG per video.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..noise import DEFAULT_ALPHA, make_raw_noise
from ..postprocess import color_match
from ..long_video import DEFAULT_COLOR_REFERENCE, match_histogram_long, plan_long_video, sample_long_video
from ..sampling import sample_video
from ..unet3d import LampUNet3D
from ..video_io import write_strip, write_video
from ..weights import load_unet, read_motion
from . import codec, world
from .models import BASE_FILE, WEIGHTS_DIR, Stopwatch, load_text_encoder, missing_weights_error
from .stage2 import motion_arg, motion_file
from .text import ToyTextEncoder

#: Sampling settings of the toy: the official alpha, fewer DDIM steps (CPU budget), and guidance 5 instead of
#: the official 12.5: on the toy's weights 5 keeps more of the shape at the same or better motion accuracy
#: (the README's toy results, row "the official guidance 12.5").
TOY_SAMPLING_STEPS = 20
TOY_GUIDANCE = 5.0
OFFICIAL_GUIDANCE = 12.5


@dataclass
class SamplingOptions:
    """One sampling configuration (the ablations switch these off one at a time)."""

    steps: int = TOY_SAMPLING_STEPS
    guidance_scale: float = TOY_GUIDANCE
    shared_noise_alpha: float = DEFAULT_ALPHA
    adain: bool = True
    histogram: bool = True
    #: Statistics of the AdaIN passes and the histogram matching: "official" (whole frame), "static" (the
    #: pixels that did not change, so growth is not undone) or "none" (both off); see lamp_model.postprocess.
    color_consistency: str = "official"
    pin_first_frame: bool = True
    frames: int = world.FRAMES
    #: None: one run of ``frames`` frames (sample_video); "segments"/"windows": lamp_model.long_video, with
    #: ``long_options`` (segment_frames, overlap, content_lock, color_reference) passed on.
    long_strategy: str | None = None
    long_options: dict = field(default_factory=dict)


def load_motion_unet(motion: str | Path | world.MotionSpec, weights_dir: Path | None = None) -> LampUNet3D:
    """The LAMP UNet for a motion (a name or spec, or a motion file path) on the toy base, via the engine's
    loader. A motion that does not ship and was not trained yet is a clear error that gives the stage-2
    command that trains it.

    The temporal-conv mode a motion was trained with (metadata ``temporal_conv``, ablations) is restored.
    """
    weights_dir = Path(weights_dir or WEIGHTS_DIR)
    if isinstance(motion, (str, Path)) and str(motion).endswith(".safetensors"):
        path = Path(motion)
    else:
        spec = world.motion_spec(motion)
        path = motion_file(spec, weights_dir)
        if spec.name not in world.MOTIONS and not path.is_file():
            base = "" if weights_dir.resolve() == WEIGHTS_DIR.resolve() else f" --base {weights_dir}"
            raise FileNotFoundError(
                f"no motion file for '{spec.text}' ({spec.description}) at {path}: train it first with "
                f"`python -m lamp_model.toy.stage2 --motion '{spec.text}'{base}` (README: Your own motion)")
    for needed in (path, weights_dir / BASE_FILE):
        if not needed.is_file():
            raise missing_weights_error(needed)
    unet = load_unet(path, base=weights_dir / BASE_FILE)
    _, metadata = read_motion(path)
    unet.set_temporal_conv_mode(metadata.get("temporal_conv", "causal"))
    return unet.eval()


@torch.no_grad()
def animate(unet: LampUNet3D, text_encoder: ToyTextEncoder, first_frames: torch.Tensor, prompts: list[str],
            seed: int = 0, options: SamplingOptions | None = None, callback=None) -> torch.Tensor:
    """First frames ``[N, 3, H, W]`` (0..1; 32x32, or a wider canvas for long videos) + prompts -> videos
    ``[N, F, 3, H, W]`` (0..1).

    All N videos run as one batch; the raw noise is ``make_raw_noise(seed, [N, 4, F, 16, 16])``, so the
    same seed and batch give the same noise to every ablation.
    """
    opt = options or SamplingOptions()
    first = codec.encode(first_frames).unsqueeze(2)  # [N, 4, 1, h, w]
    n, c, _, h, w = first.shape
    cond, uncond = text_encoder.encode(prompts), text_encoder.encode([""] * n)
    noise = make_raw_noise(seed, (n, c, opt.frames, h, w))
    common = dict(steps=opt.steps, guidance_scale=opt.guidance_scale, shared_noise_alpha=opt.shared_noise_alpha,
                  adain=opt.adain, callback=callback, color_consistency=opt.color_consistency)
    static, histogram = opt.color_consistency == "static", opt.histogram and opt.color_consistency != "none"
    if opt.long_strategy is not None:
        latents = sample_long_video(unet, first, cond, uncond, noise, **common, strategy=opt.long_strategy,
                                    **opt.long_options)
    else:
        latents = sample_video(unet, first, cond, uncond, noise, **common, pin_first_frame=opt.pin_first_frame)
    videos = codec.decode_video(latents)
    if histogram and opt.long_strategy is not None:
        # Long videos: frames matched to frame one, or segment by segment to each segment's first frame.
        plan = plan_long_video(opt.frames, opt.long_strategy, opt.long_options.get("segment_frames", world.FRAMES),
                               opt.long_options.get("overlap"))
        reference = opt.long_options.get("color_reference", DEFAULT_COLOR_REFERENCE)
        videos = torch.stack([match_histogram_long(v, plan, reference, static) for v in videos])
    elif histogram:
        # Official post-processing: frames 1.. matched to frame 0 (with frame 0 pinned, the given image);
        # without pinning, every frame is matched to the given first frame.
        refs = codec.decode(first[:, :, 0])
        videos = torch.stack([color_match(v, None if opt.pin_first_frame else ref, static=static)
                              for v, ref in zip(videos, refs)])
    return videos


def save_video(video: torch.Tensor, stem: Path, fmt: str = "gif", scale: int = 4, fps: float = 8) -> tuple[Path, Path]:
    """Write ``stem.<fmt>`` (gif, webp or mp4) and ``stem_strip.png`` (frames ``[F, 3, H, W]``, upscaled
    ``scale`` x with nearest neighbours so the 32 px pixels stay visible)."""
    big = F.interpolate(video, scale_factor=scale, mode="nearest").permute(0, 2, 3, 1)
    return (write_video(big, stem.parent / f"{stem.name}.{fmt}", fps=fps),
            write_strip(big, stem.parent / f"{stem.name}_strip.png"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lamp_model.toy.stage3", description=__doc__.split("\n\n")[0])
    ap.add_argument("--motion", required=True, type=motion_arg,
                    help=f"{', '.join(world.MOTIONS)} or a trained spec (README: Your own motion)")
    ap.add_argument("--n", type=int, default=4, help="how many unseen first frames to animate")
    ap.add_argument("--steps", type=int, default=TOY_SAMPLING_STEPS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--out", type=Path, default=Path("toy_out"))
    args = ap.parse_args(argv)
    clock = Stopwatch()
    unet = load_motion_unet(args.motion, args.weights)
    text_encoder = load_text_encoder(args.weights)
    scenes = world.unseen_first_frames(args.motion, args.n, seed=args.seed)
    videos = animate(unet, text_encoder, world.render(scenes), [s.caption for s in scenes], seed=args.seed,
                     options=SamplingOptions(steps=args.steps))
    for i, (scene, video) in enumerate(zip(scenes, videos)):
        gif, strip = save_video(video, args.out / f"{args.motion.name}_{i:02d}_{scene.caption.replace(' ', '_')}")
        print(f"stage 3 [{args.motion.name}]: {scene.caption} -> {gif}, {strip}")
    print(f"stage 3 [{args.motion.name}]: {len(scenes)} videos in {clock():.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
