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
import signal
import statistics
import subprocess
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


def _vm_hwm(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # GiB
    return float("nan")


def comfy_level(comfy_dir: str, frames: int = 8) -> None:
    import test_comfyui_integration as harness
    import test_comfyui_native as graphs

    python = harness._python() if harness.COMFYUI_DIR else str(Path(comfy_dir).resolve().parent / "venv/bin/python")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        build = subprocess.run([python, "-c", harness.BUILD, str(base), str(ROOT)], cwd=comfy_dir, env=env,
                               capture_output=True, text=True, timeout=900)
        if build.returncode != 0:
            raise SystemExit(build.stderr[-3000:])
        (base / "custom_nodes").mkdir()
        (base / "custom_nodes" / "ComfyUI-LAMP").symlink_to(ROOT, target_is_directory=True)
        (base / "input").mkdir()
        (base / "input" / "example.png").write_bytes((Path(comfy_dir) / "input" / "example.png").read_bytes())

        def graph(path: str, steps: int, seed: int) -> dict:
            graphs.STEPS = steps
            g = graphs.base_graph(frames, seed=seed)  # a new seed each run: nothing comes from the cache
            if path == "native":
                return graphs.native(g, ["1", 0], f"bench_native_{steps}", steps=steps)
            return graphs.lamp_sampler(g, f"bench_sampler_{steps}")

        print(f"real ComfyUI ({comfy_dir}), tiny SD-1.5 fixtures, {frames} frames 128x64, fp32 CPU, "
              f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}:")
        for path in ("LAMP Sampler", "native"):
            port = harness._free_port()
            log = base / f"comfy_{path.replace(' ', '_')}.log"
            with open(log, "w") as out:
                proc = subprocess.Popen([python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                                         "--disable-auto-launch", "--disable-api-nodes", "--base-directory", str(base),
                                         "--disable-all-custom-nodes", "--whitelist-custom-nodes", "ComfyUI-LAMP"],
                                        cwd=comfy_dir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            try:
                url = f"http://127.0.0.1:{port}"
                for _ in range(240):
                    try:
                        harness._get(f"{url}/system_stats", 2)
                        break
                    except OSError:
                        time.sleep(0.5)
                server = harness.Server(url, base, log, proc)
                spans = {}
                for seed, steps in enumerate((2, 2, 12)):  # the first run loads the models
                    history = server.run(graph("native" if path == "native" else "sampler", steps, seed), timeout=1800)
                    stamps = {event: data["timestamp"] for event, data in history["status"]["messages"]}
                    spans[steps] = (stamps["execution_success"] - stamps["execution_start"]) / 1000
                per_step = (spans[12] - spans[2]) / 10
                print(f"  {path:14s} {per_step:7.3f} s/step   peak RSS {_vm_hwm(proc.pid):5.2f} GiB")
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)


if __name__ == "__main__":
    engine_level()
    if os.environ.get("COMFYUI_DIR"):
        comfy_level(os.environ["COMFYUI_DIR"])
