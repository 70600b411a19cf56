"""Speed, memory and FLOPs of the LAMP UNet (engine-core benchmarks; prints figures, asserts nothing).

    python benchmarks/unet_speed.py            # CPU: "mid" config, 16 frames, 32x32 and 40x64 latents
    python benchmarks/unet_speed.py --flops    # FLOPs of the SD-1.4-size UNet, 16 x 320x512 (meta device)
    python benchmarks/unet_speed.py --gpu      # on a CUDA machine: SD-1.4-size sampling time and peak VRAM

Every CPU measurement runs in a fresh subprocess so that its peak RSS (ru_maxrss) is its own. The "mid"
config is the SD-1.x layout at a quarter of the width: block_out_channels (64, 128, 256, 256), 2 layers
per block, 32 groups, 768-d context, 8 heads, random weights, fp32. Figures of the official code on the
same config and machine class (from the issue): 6.6 s per sampling step at 32x32, 42.9 s and 14.1 GB
peak RSS per CFG forward at 40x64.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lamp_model.unet3d import SD1_DEFAULTS, LampUNet3D  # noqa: E402

MID = {**SD1_DEFAULTS, "block_out_channels": [64, 128, 256, 256]}
OFFICIAL = {"step_32x32_s": 6.6, "forward_40x64_s": 42.9, "forward_40x64_peak_gb": 14.1}


def _unet(config: dict, kv_first_only: bool, device: str = "cpu", dtype=torch.float32) -> LampUNet3D:
    """A random-weight LAMP UNet; ``kv_first_only=False`` also computes attention the official way (K/V for
    every frame, then frame 0 gathered, and the math backend that materialises the score matrix)."""
    torch.manual_seed(0)
    unet = LampUNet3D(config).to(device, dtype).eval()
    unet.set_first_frame_kv_only(kv_first_only)
    return unet


def measure(kind: str, h: int, w: int, frames: int, kv_first_only: bool, repeats: int) -> dict:
    """One measurement in this process: 'forward' = one CFG (batch 2) UNet call, 'step' = one sampling step."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    if not kv_first_only:  # official-style attention: scores materialised like the official baddbmm path
        with sdpa_kernel(SDPBackend.MATH):
            return _measure(kind, h, w, frames, kv_first_only, repeats)
    return _measure(kind, h, w, frames, kv_first_only, repeats)


def _measure(kind: str, h: int, w: int, frames: int, kv_first_only: bool, repeats: int) -> dict:
    unet = _unet(MID, kv_first_only)
    g = torch.Generator().manual_seed(0)
    ctx = torch.randn(1, 77, 768, generator=g)
    times = []
    with torch.inference_mode():
        if kind == "forward":
            x = torch.randn(2, 4, frames, h, w, generator=g)
            for _ in range(repeats):
                t0 = time.perf_counter()
                unet(x, torch.tensor(500), torch.cat([ctx, ctx]))
                times.append(time.perf_counter() - t0)
        else:
            from lamp_model.sampling import sample_video
            noise = torch.randn(1, 4, frames, h, w, generator=g)
            first = torch.randn(1, 4, 1, h, w, generator=g)
            stamps = []
            sample_video(unet, first, ctx, ctx * 0.5, noise, steps=repeats + 1,
                         callback=lambda i, n, lat: stamps.append(time.perf_counter()))
            times = [b - a for a, b in zip(stamps, stamps[1:])]  # step i's time, without set-up
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    return {"median_s": statistics.median(times), "min_s": min(times), "peak_rss_gb": peak_gb, "n": len(times)}


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_table(repeats: int) -> None:
    print(f"LAMP UNet, 'mid' config, fp32, 16 frames, CPU threads={torch.get_num_threads()}")
    print("attention 'ours': frame-0 K/V once per video + fused SDPA; 'official-style': K/V for every frame,"
          " gathered, with the score matrix materialised (SDPA math backend, like the official baddbmm path)")
    print(f"{'measure':<22}{'latent':>8}{'attention':>16}{'median s':>10}{'min s':>8}{'peak RSS GB':>13}")
    rows = [("step", 32, 32), ("forward", 32, 32), ("forward", 40, 64)]
    results = {}
    for kind, h, w in rows:
        for kv in (True, False):
            r = _child([kind, str(h), str(w), "16", str(int(kv)), str(repeats)])
            results[(kind, h, w, kv)] = r
            label = "ours" if kv else "official-style"
            print(f"{kind:<22}{f'{h}x{w}':>8}{label:>16}{r['median_s']:>10.2f}{r['min_s']:>8.2f}{r['peak_rss_gb']:>13.2f}")
    step, step_off = (results[("step", 32, 32, kv)]["median_s"] for kv in (True, False))
    fwd, fwd_off = (results[("forward", 40, 64, kv)] for kv in (True, False))
    print(f"\nsame run, ours vs official-style attention: step 32x32 {step_off / step:.1f}x faster; forward 40x64 "
          f"{fwd_off['median_s'] / fwd['median_s']:.1f}x faster, peak RSS {fwd['peak_rss_gb']:.2f} vs "
          f"{fwd_off['peak_rss_gb']:.2f} GB")
    print(f"vs the official code's figures (2 threads, issue): step 32x32 {OFFICIAL['step_32x32_s'] / step:.1f}x "
          f"faster (target >= 2x); forward 40x64 {OFFICIAL['forward_40x64_s'] / fwd['median_s']:.1f}x faster, peak "
          f"{fwd['peak_rss_gb']:.2f} GB vs {OFFICIAL['forward_40x64_peak_gb']} GB (target <= 3 GB)")


def flops() -> None:
    from torch.utils.flop_counter import FlopCounterMode
    for kv in (True, False):
        with torch.device("meta"):
            unet = LampUNet3D(SD1_DEFAULTS)
            unet.set_first_frame_kv_only(kv)
            x, ctx = torch.randn(1, 4, 16, 40, 64), torch.randn(1, 77, 768)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            unet(x, torch.tensor(500, device="meta"), ctx)
        total = counter.get_total_flops()
        label = "frame-0 K/V once per video" if kv else "K/V for every frame (official)"
        print(f"SD-1.4-size LAMP UNet, 1 video x 16 frames x 320x512 (latent 40x64), {label}: "
              f"{total / 1e12:.2f} TFLOP per forward, {2 * total / 1e12:.2f} TFLOP per CFG step, "
              f"{100 * total / 1e12:.0f} TFLOP per 50-step video")


def gpu(dtype_name: str, steps: int) -> None:
    from lamp_model.sampling import sample_video
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    unet = _unet(SD1_DEFAULTS, True, "cuda", dtype)
    g = torch.Generator().manual_seed(0)
    noise, first = torch.randn(1, 4, 16, 40, 64, generator=g), torch.randn(1, 4, 1, 40, 64, generator=g)
    ctx = torch.randn(1, 77, 768, generator=g)
    args = (unet, first.cuda(), ctx.cuda(), ctx.cuda() * 0.5, noise.cuda())
    sample_video(*args, steps=2)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    sample_video(*args, steps=steps)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(f"SD-1.4-size LAMP, {dtype_name}, 16x320x512, {steps} DDIM steps with CFG on "
          f"{torch.cuda.get_device_name()}: {dt:.1f} s per video ({dt / steps * 1000:.0f} ms/step), "
          f"peak VRAM {torch.cuda.max_memory_allocated() / 1024 ** 3:.2f} GB")


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        kind, h, w, f, kv, rep = sys.argv[2:8]
        print(json.dumps(measure(kind, int(h), int(w), int(f), bool(int(kv)), int(rep))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flops", action="store_true")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.flops:
        flops()
    elif args.gpu:
        gpu(args.dtype, args.steps)
    else:
        cpu_table(args.repeats)


if __name__ == "__main__":
    main()
