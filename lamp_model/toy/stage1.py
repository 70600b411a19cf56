"""Stage 1: pretrain the toy "text-to-image" model on still frames (the toy's SD-1.x).

``python -m lamp_model.toy.stage1 [--steps N] [--out DIR]`` renders random stills
of every (shape, colour) pair, encodes them with the toy codec, and trains the tiny SD-1.x-shaped UNet
with the epsilon-prediction DDPM loss under SD's noise schedule (Min-SNR-5 weighted; 10 % of captions
dropped to the empty prompt, so classifier-free guidance works). It then draws one image per prompt with DDIM + CFG and
reports how often the drawn object has the requested colour and shape (measured by
:mod:`lamp_model.toy.tracking`, not by a learned classifier).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel, compute_snr

from ..sampling import make_scheduler
from ..train import default_noise_scheduler
from . import codec, tracking, world
from .models import STAGE1_STEPS, WEIGHTS_DIR, Stopwatch, build_unet2d, load_base, save_base
from .text import ToyTextEncoder


def train_base(steps: int = STAGE1_STEPS, n_stills: int = 16384, batch: int = 32, lr: float = 1e-3, seed: int = 0,
               config: dict | None = None, log_every: int = 250, log=print) -> tuple[torch.nn.Module, ToyTextEncoder]:
    """Train the stage-1 UNet (``config``: default :data:`TOY_UNET_CONFIG`) from scratch; returns its EMA
    weights and the (fixed) text encoder."""
    clock = Stopwatch()
    scenes = world.still_scenes(n_stills, seed)
    latents = torch.cat([codec.encode(world.render(scenes[i:i + 512])) for i in range(0, n_stills, 512)])
    text_encoder = ToyTextEncoder()
    captions = sorted({s.caption for s in scenes})
    table = text_encoder.encode(["", *captions])  # row 0: the empty prompt
    caption_ids = torch.tensor([captions.index(s.caption) + 1 for s in scenes])
    log(f"stage 1: {n_stills} stills rendered and encoded in {clock():.1f} s")

    unet = build_unet2d(config, seed=seed).train()
    ema = EMAModel(unet.parameters(), decay=0.999, use_ema_warmup=True, power=0.75)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    scheduler = default_noise_scheduler()
    g = torch.Generator().manual_seed(seed)
    running, count = 0.0, 0
    for step in range(1, steps + 1):
        idx = torch.randint(0, n_stills, (batch,), generator=g)
        x0 = latents[idx]
        ids = torch.where(torch.rand(batch, generator=g) < 0.1, 0, caption_ids[idx])
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=g)
        pred = unet(scheduler.add_noise(x0, noise, t), t, table[ids]).sample
        # Min-SNR-5 weighting (Hang et al. 2023): the same optimum, reached in far fewer steps.
        weight = compute_snr(scheduler, t).clamp(max=5.0) / compute_snr(scheduler, t)
        loss = (F.mse_loss(pred, noise, reduction="none").mean((1, 2, 3)) * weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.step(unet.parameters())
        running, count = running + loss.item(), count + 1
        if step % log_every == 0 or step == steps:
            log(f"  step {step}/{steps}  loss {running / count:.4f}  {clock():.0f} s")
            running, count = 0.0, 0
    ema.copy_to(unet.parameters())
    return unet.eval(), text_encoder


@torch.no_grad()
def draw(unet: torch.nn.Module, text_encoder: ToyTextEncoder, prompts: list[str], steps: int = 25,
         guidance_scale: float = 5.0, seed: int = 0) -> torch.Tensor:
    """Text-to-image with the 2-D UNet (DDIM, classifier-free guidance): RGB ``[N, 3, 32, 32]`` in 0..1."""
    scheduler = make_scheduler("ddim")
    scheduler.set_timesteps(steps)
    cond, uncond = text_encoder.encode(prompts), text_encoder.encode([""] * len(prompts))
    size = world.SIZE // codec.FACTOR
    x = torch.randn(len(prompts), 4, size, size, generator=torch.Generator().manual_seed(seed))
    for t in scheduler.timesteps:
        eps_u, eps_c = unet(torch.cat([x, x]), t, torch.cat([uncond, cond])).sample.chunk(2)
        x = scheduler.step(eps_u + guidance_scale * (eps_c - eps_u), t, x).prev_sample
    return codec.decode(x)


def evaluate_base(unet: torch.nn.Module, text_encoder: ToyTextEncoder, per_pair: int = 2, steps: int = 25,
                  seed: int = 0) -> dict[str, float]:
    """Draw every (shape, colour) prompt ``per_pair`` times; fraction with the right colour / shape / both."""
    pairs = [(s, c) for s in world.SHAPES for c in world.COLOURS] * per_pair
    images = draw(unet, text_encoder, [world.caption(c, s) for s, c in pairs], steps=steps, seed=seed)
    colour_ok, shape_ok = [], []
    for img, (shape, colour) in zip(images.permute(0, 2, 3, 1).double().numpy(), pairs):
        m = tracking.measure_frame(img, 0)
        colour_ok.append(tracking.colour_name(m.colour) == colour)
        shape_ok.append(tracking.shape_name(m.features) == shape)
    both = np.logical_and(colour_ok, shape_ok)
    return {"colour": float(np.mean(colour_ok)), "shape": float(np.mean(shape_ok)), "both": float(np.mean(both)),
            "n": len(pairs)}


def train_and_save(out: Path, steps: int = STAGE1_STEPS, n_stills: int = 16384, batch: int = 32, seed: int = 0) -> float:
    """:func:`train_base`, then the weights into ``out`` with the training settings and runtime as metadata;
    returns the seconds it took (stage 1 of both this CLI and ``build_weights``)."""
    clock = Stopwatch()
    unet, text_encoder = train_base(steps, n_stills, batch=batch, seed=seed)
    save_base(out, unet, text_encoder, {"steps": steps, "stills": n_stills, "batch": batch, "seed": seed,
                                        "train_seconds": round(clock())})
    return clock()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lamp_model.toy.stage1", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=STAGE1_STEPS)
    ap.add_argument("--stills", type=int, default=16384)
    ap.add_argument("--batch", type=int, default=32, help="stills per training step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="weights folder (default: the shipped one)")
    ap.add_argument("--eval-only", action="store_true", help="only measure the base weights already in --out")
    ap.add_argument("--grid", type=Path, default=None, help="also save a PNG grid of drawn images")
    args = ap.parse_args(argv)
    clock = Stopwatch()
    if not args.eval_only:
        seconds = train_and_save(args.out, args.steps, args.stills, args.batch, args.seed)
        print(f"stage 1: trained {args.steps} steps in {seconds:.0f} s -> {args.out}")
    unet, text_encoder = load_base(args.out)  # measure what was saved (fp16 on disk)
    t0 = clock()
    scores = evaluate_base(unet, text_encoder, seed=args.seed)
    print(f"stage 1: drawn objects with the requested colour {scores['colour']:.0%}, shape {scores['shape']:.0%}, "
          f"both {scores['both']:.0%} (n={scores['n']}, {clock() - t0:.0f} s)")
    if args.grid is not None:
        from PIL import Image
        pairs = [(s, c) for s in world.SHAPES for c in world.COLOURS]
        images = draw(unet, text_encoder, [world.caption(c, s) for s, c in pairs], seed=args.seed)
        grid = images.view(len(world.SHAPES), len(world.COLOURS), 3, 32, 32).permute(0, 3, 1, 4, 2).reshape(
            len(world.SHAPES) * 32, len(world.COLOURS) * 32, 3)
        Image.fromarray((grid.numpy() * 255).round().astype(np.uint8)).resize(
            (len(world.COLOURS) * 96, len(world.SHAPES) * 96), Image.NEAREST).save(args.grid)
        print(f"stage 1: grid -> {args.grid}")
    print(f"stage 1: total {clock():.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
