"""``python -m lamp_model edit``: edit a video with LAMP (paper §5.2) from the command line.

    python -m lamp_model edit --motion runs/run/motion.safetensors --base ./stable-diffusion-v1-5 \\
        --video run.mp4 --first-frame edited.png --prompt "a girl runs beside a river, Van Gogh style"

Steps: read ``--frames`` frames at ``--stride`` from ``--start`` of the clip, fit them to ``--width``×``--height``
(as training does), encode them with the base's VAE (posterior mean), DDIM-invert them with the LAMP UNet and the
empty prompt (:func:`lamp_model.ddim_invert`; cached in ``<out>/<name>.inversion.safetensors`` and reused while
the motion and base files, the source latents and the steps are the same), encode the edited first frame (stretched to the video size, as the official
script does), sample with :func:`lamp_model.editing.edit_video` (DDIM, cfg, AdaIN; frames 1.. start from the
inversion, unmixed), decode, match every frame's histogram to frame one, and write ``<name>.<format>`` and
``<name>_strip.png`` (source frames above the edit). Defaults are the official editing settings: 24 frames at
stride 2, 50 steps, guidance 12.5. Text comes from the base folder's CLIP (needs ``transformers``),
``--text-encoder`` or ``--text-embeddings``, as for ``python -m lamp_model train``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .editing import EDIT_FRAMES, EDIT_STEPS, EDIT_STRIDE, InversionCache, clip_window, files_fingerprint, fingerprint
from .frames import RESIZE_MODES


def build_parser() -> argparse.ArgumentParser:
    """The ``edit`` command's options (defaults: the official editing settings)."""
    from .cli import ArgumentParser

    p = ArgumentParser(prog="python -m lamp_model edit", description=__doc__.split("\n\n")[0])
    p.add_argument("--motion", required=True, help="motion file (.safetensors, needs --base) or official checkpoint")
    p.add_argument("--base", required=True, help="SD-1.x base: diffusers folder or single-file checkpoint (VAE, text)")
    p.add_argument("--video", required=True, help="the source clip (video file or folder of frames)")
    p.add_argument("--first-frame", required=True, help="the edited first frame (an image)")
    p.add_argument("--prompt", required=True, help="prompt of the edited video")
    p.add_argument("--negative-prompt", default="", help="negative prompt (default: empty, official)")
    p.add_argument("--start", type=int, default=0, help="first source frame (default 0)")
    p.add_argument("--stride", type=int, default=EDIT_STRIDE, help=f"take every n-th frame (default {EDIT_STRIDE})")
    p.add_argument("--frames", type=int, default=EDIT_FRAMES, help=f"frames to edit (default {EDIT_FRAMES})")
    p.add_argument("--steps", type=int, default=EDIT_STEPS, help=f"DDIM steps, inversion and sampling ({EDIT_STEPS})")
    p.add_argument("--guidance-scale", type=float, default=12.5, help="classifier-free guidance (default 12.5)")
    p.add_argument("--width", type=int, default=512, help="video width in pixels (default 512)")
    p.add_argument("--height", type=int, default=320, help="video height in pixels (default 320)")
    p.add_argument("--resize", choices=RESIZE_MODES, default="stretch", help="how source frames are fitted")
    p.add_argument("--no-adain", action="store_true", help="skip the latent AdaIN (ablation)")
    p.add_argument("--no-histogram", action="store_true", help="skip the histogram matching to frame one")
    p.add_argument("--out", type=Path, default=Path("lamp_edit"), help="output folder (default ./lamp_edit)")
    p.add_argument("--name", default=None, help="output file name stem (default: the video's name + '_edit')")
    p.add_argument("--format", choices=["mp4", "gif", "webp"], default="mp4", help="video format (default mp4)")
    p.add_argument("--fps", type=float, default=8.0, help="frames per second of the written video (default 8)")
    p.add_argument("--vae", default=None, help="VAE instead of the base's: diffusers folder or .safetensors")
    p.add_argument("--text-encoder", default=None, help="folder with tokenizer/ and text_encoder/ (diffusers)")
    p.add_argument("--text-embeddings", default=None, help="safetensors: prompt -> [L, D] embedding ('' = empty)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    return p


def _bar(total: int, desc: str) -> tuple[Any, Callable[[int, int, torch.Tensor], None]]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)
    return bar, lambda step, n, latents: bar.update(1)


def _read_image(path: Path, width: int, height: int) -> torch.Tensor:
    """The edited first frame as pixels ``[1, 3, H, W]`` in [-1, 1], stretched to the video size (official)."""
    from PIL import Image

    from .data import frames_to_pixels, resize_frame

    if not path.is_file():
        raise FileNotFoundError(f"--first-frame not found: {path}")
    try:
        with Image.open(path) as img:
            size = img.size
            arr = resize_frame(img, width, height)
    except OSError as err:
        raise ValueError(f"--first-frame {path}: cannot be read ({err})") from err
    if abs(size[0] / size[1] - width / height) > 0.02 * width / height:
        print(f"note: the first frame is {size[0]}x{size[1]}, the video {width}x{height}: it is stretched to fit "
              "(make the edit at the video's aspect ratio to avoid that)", file=sys.stderr)
    return frames_to_pixels(arr[None])


def run(args: argparse.Namespace) -> dict[str, Path]:
    """Invert (or reuse the cached inversion), edit, decode, colour-match and write; returns the written paths."""
    from .data import frames_to_pixels, read_frames
    from .editing import edit_video
    from .inversion import ddim_invert
    from .postprocess import color_match
    from .train_cli import load_vae, make_text_encoder
    from .video_io import write_strip, write_video
    from .weights import base_context_width, load_unet

    from .checks import as_float, as_int, compute_device, writable_dir

    clock = time.perf_counter()
    device = compute_device(args.device)
    video = Path(args.video)
    if not video.exists():
        raise FileNotFoundError(f"--video not found: {video}")
    for name in ("width", "height"):
        if as_int(f"--{name}", getattr(args, name), 8, 4096) % 8:
            raise ValueError(f"--{name} {getattr(args, name)} is not a multiple of 8")
    as_int("--steps", args.steps, 1, 1000)
    # checked here, not after minutes of inversion at SD size
    as_float("--guidance-scale", args.guidance_scale, 0.0, hint="official 12.5")
    as_float("--fps", args.fps, 0.0, lo_open=True, hint="official 8")
    first_frame = _read_image(Path(args.first_frame), args.width, args.height)
    writable_dir(args.out, "--out")
    if args.name is not None and (not args.name.strip() or Path(args.name).name != args.name
                                  or args.name in {".", ".."}):
        raise ValueError(f"--name must be a plain file name stem (no folder, no '..'), got {args.name!r}; "
                         "the files go to --out")
    base_context_width(args.base)  # header only: an SD-XL/SD-2 or damaged base is named before any loading
    need = args.start + (max(args.frames, 1) - 1) * max(args.stride, 1) + 1
    clip = read_frames(video, args.width, args.height, args.resize, max_frames=need)
    index = clip_window(len(clip), args.frames, args.start, args.stride)
    source = clip[index]  # uint8 [F, H, W, 3]

    base = Path(args.base)
    vae = load_vae(base, args.vae).to(device).eval().requires_grad_(False)
    scale = float(vae.config.scaling_factor)
    encode_text = make_text_encoder({"text_embeddings": args.text_embeddings, "text_encoder": args.text_encoder,
                                     "base": args.base}, device)
    empty, cond = encode_text([""]), encode_text([args.prompt])
    uncond = empty if not args.negative_prompt else encode_text([args.negative_prompt])
    unet = load_unet(args.motion, base=base, device=device).eval()

    with torch.no_grad():
        def encode(pixels: torch.Tensor) -> torch.Tensor:
            chunks = [vae.encode(pixels[i:i + 4].to(device, vae.dtype)).latent_dist.mean for i in range(0, len(pixels), 4)]
            return torch.cat(chunks).float() * scale

        latents = encode(frames_to_pixels(source)).transpose(0, 1).unsqueeze(0)  # [1, 4, F, h, w]
        first = encode(first_frame).unsqueeze(2)

    stem = args.name or f"{video.stem}_edit"
    out = Path(args.out)
    cache = InversionCache(out / f"{stem}.inversion.safetensors")
    key = fingerprint(files_fingerprint(args.motion, base), latents, empty, args.steps)
    inverted = cache.get(key)
    if inverted is None:
        bar, callback = _bar(args.steps, "inverting")
        inverted = ddim_invert(unet, latents, empty.to(device), steps=args.steps, callback=callback)
        bar.close()
        cache.put(key, inverted, {"video": video.name, "start": args.start, "stride": args.stride,
                                  "frames": args.frames, "steps": args.steps, "size": f"{args.width}x{args.height}"})
    else:
        print(f"reusing the inversion in {cache.path}")
    bar, callback = _bar(args.steps, "editing")
    edited = edit_video(unet, first, cond.to(device), uncond.to(device), inverted.to(device), steps=args.steps,
                        guidance_scale=args.guidance_scale, adain=not args.no_adain, callback=callback,
                        inversion_steps=args.steps)
    bar.close()
    with torch.no_grad():
        frames = edited[0].transpose(0, 1) / scale
        pixels = torch.cat([vae.decode(frames[i:i + 4].to(device, vae.dtype)).sample for i in range(0, len(frames), 4)])
    result = ((pixels.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu()  # [F, H, W, 3]
    if not args.no_histogram:
        result = color_match(result)
    paths = {"video": write_video(result, out / f"{stem}.{args.format}", fps=args.fps),
             "strip": write_strip(torch.cat([torch.from_numpy(source).float() / 255, result], dim=1),
                                  out / f"{stem}_strip.png"),
             "inversion": cache.path}
    print(f"video: {paths['video']}\nstrip: {paths['strip']} (source above, edit below)\n"
          f"inversion: {cache.path}\ntime: {time.perf_counter() - clock:.1f} s on {device}")
    return paths


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lamp_model edit``; a user error is one ``error:`` line and exit code 2."""
    from .cli import run_command
    from .train_cli import TrainSetupError

    args = build_parser().parse_args(argv)

    def body() -> int:
        run(args)
        return 0

    return run_command(body, (TrainSetupError,))


if __name__ == "__main__":
    sys.exit(main())
