"""Time per step and peak memory of the two LAMP paths side by side (prints figures, asserts nothing).

    python benchmarks/native_path.py                                # engine level: LampUNet3D vs BorrowedLampUNet
    COMFYUI_DIR=/path/to/ComfyUI python benchmarks/native_path.py   # + both paths in a real ComfyUI

Engine level (no ComfyUI): one CFG forward (batch 2) of the LAMP UNet on its own weights vs the same UNet on
borrowed base tensors (``torch.func.functional_call``, the native path's UNet), "mid" config of
benchmarks/unet_speed.py, 16 frames at 32x32, fp32 CPU.

Real ComfyUI: the opt-in test's tiny SD-1.5-detectable fixtures (320/640 channels, full CLIP-L), 128x64, 8 frames.
Each path runs in a fresh server (so that its peak RSS, VmHWM, is its own) at 2 and 12 steps; time per step
= (t12 - t2) / 10 from ComfyUI's execution timestamps. LAMP Sampler = LAMP Load Motion + LAMP Sampler (DDIM);
native = LAMP Apply Motion + SamplerCustomAdvanced (LAMP DDIM Sampler, LAMP DDIM Sigmas, LAMP Shared Noise).
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from lamp_model.borrowed_unet import BorrowedLampUNet  # noqa: E402
from lamp_model.unet3d import SD1_DEFAULTS, LampUNet3D, randomize_motion_layers  # noqa: E402
from lamp_model.weights import motion_state_dict  # noqa: E402

MID = {**SD1_DEFAULTS, "block_out_channels": [64, 128, 256, 256]}


def engine_level(frames: int = 16, size: int = 32, repeats: int = 3) -> None:
    torch.manual_seed(0)
    unet = randomize_motion_layers(LampUNet3D(MID).eval())
    motion = motion_state_dict(unet)
    borrowed = BorrowedLampUNet(MID, motion)
    base = {k: v for k, v in unet.state_dict().items() if k not in motion}
    x, ctx, t = torch.randn(2, 4, frames, size, size), torch.randn(2, 77, 768), torch.tensor([501, 501])
    calls = {"LampUNet3D (LAMP Sampler)": lambda: unet(x, t, ctx),
             "BorrowedLampUNet (native)": lambda: borrowed(base, x, t, ctx)}
    times: dict[str, list[float]] = {name: [] for name in calls}
    outs = {}
    with torch.inference_mode():
        for call in calls.values():
            call()  # warm-up
        for _ in range(repeats):  # interleaved, so that a busy neighbour slows both alike
            for name, call in calls.items():
                start = time.perf_counter()
                outs[name] = call()
                times[name].append(time.perf_counter() - start)
    rows = {name: (statistics.median(times[name]), outs[name]) for name in calls}
    diff = float((rows["LampUNet3D (LAMP Sampler)"][1] - rows["BorrowedLampUNet (native)"][1]).abs().max())
    print(f"engine level, mid config, CFG forward, {frames} frames {size}x{size}, fp32, "
          f"{torch.get_num_threads()} thread(s):")
    for name, (sec, _) in rows.items():
        print(f"  {name:28s} {sec:7.3f} s")
    print(f"  max |difference| {diff:.2e}")


def comfy_level(comfy_dir: str, frames: int = 8) -> None:
    import test_comfyui_integration as harness
    import test_comfyui_native as graphs

    python = harness._python() if harness.COMFYUI_DIR else str(Path(comfy_dir).resolve().parent / "venv/bin/python")
    env = {**harness.server_env(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        harness.build_fixtures(base, python, env)

        def graph(path: str, steps: int, seed: int) -> dict:
            graphs.STEPS = steps
            g = graphs.base_graph(frames, seed=seed)  # a new seed each run: nothing comes from the cache
            if path == "native":
                return graphs.native(g, ["1", 0], f"bench_native_{steps}", steps=steps)
            return graphs.lamp_sampler(g, f"bench_sampler_{steps}")

        print(f"real ComfyUI ({comfy_dir}), tiny SD-1.5 fixtures, {frames} frames 128x64, fp32 CPU, "
              f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}:")
        for path in ("LAMP Sampler", "native"):
            with harness.running_server(base, python, env, f"comfy_{path.replace(' ', '_')}.log") as server:
                spans = {}
                for seed, steps in enumerate((2, 2, 12)):  # the first run loads the models
                    history = server.run(graph("native" if path == "native" else "sampler", steps, seed), timeout=1800)
                    stamps = {event: data["timestamp"] for event, data in history["status"]["messages"]}
                    spans[steps] = (stamps["execution_success"] - stamps["execution_start"]) / 1000
                per_step = (spans[12] - spans[2]) / 10
                print(f"  {path:14s} {per_step:7.3f} s/step   peak RSS {graphs.peak_rss_gib(server.proc.pid):5.2f} GiB")


if __name__ == "__main__":
    engine_level()
    if os.environ.get("COMFYUI_DIR"):
        comfy_level(os.environ["COMFYUI_DIR"])
