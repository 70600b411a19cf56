"""Training-step speed and memory (prints figures, asserts nothing).

    python benchmarks/train_step.py               # CPU: mid-size config, each memory option; then the estimate
    python benchmarks/train_step.py --estimate    # only the SD-1.4 training-VRAM estimate (meta device, instant)
    python benchmarks/train_step.py --gpu         # on a CUDA machine: measured step time and peak VRAM, SD-1.4 size

CPU: one :class:`~lamp_model.train.MotionTrainer` step (LAMP loss, backward, clip, AdamW) on the "mid"
config (the SD-1.x layout at a quarter of the width: block_out_channels (64, 128, 256, 256), 2 layers,
32 groups, 768-d context, 8 heads; random weights), ``--frames`` frames at ``--latent`` x ``--latent``
latents, with gradient checkpointing off/on and fp32 / bf16 autocast. Each option runs in a fresh
subprocess so its peak RSS (``ru_maxrss``) is its own.

Estimate (SD-1.4 size, 16 frames at 320x512 → latents 16x40x64, batch 1): parameters counted on a
meta-device LAMP UNet; fp32 master weights + fp32 grads + AdamW moments (2 x fp32, or 2 x 1 byte for 8-bit
Adam) for the trainable set; frozen weights in fp16 (``cast_frozen_weights``, CUDA) or fp32; the fp16 copies
of the trainable weights that autocast caches during the forward; activations = the bytes autograd saves
for backward, counted with ``saved_tensors_hooks`` on an fp16 meta-device forward (deduplicated by storage,
weights excluded, attention as a fused kernel keeps it: q, k, v, output, log-sum-exp),
plus, with checkpointing, the inputs each checkpointed block keeps and the largest block's recomputation;
plus the largest activation twice over for the gradient buffers in flight. No allocator overhead, no CUDA
context (~0.5 GB), no VAE / text encoder (freed after encoding).
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
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lamp_model.data import LatentClipSet  # noqa: E402
from lamp_model.train import MotionTrainer, TrainConfig  # noqa: E402
from lamp_model.unet3d import SD1_DEFAULTS, LampUNet3D, trainable_parameters  # noqa: E402

MID = {**SD1_DEFAULTS, "block_out_channels": [64, 128, 256, 256]}
OPTIONS = [("fp32", "no", False), ("fp32 + checkpointing", "no", True), ("bf16 autocast", "bf16", False),
           ("bf16 autocast + checkpointing", "bf16", True)]
GiB = 2 ** 30


def make_trainer(config: dict, frames: int, h: int, w: int, mixed: str, gc: bool, device: str = "cpu",
                 eight_bit: bool = False) -> MotionTrainer:
    torch.manual_seed(0)
    unet = LampUNet3D(config).to(device)
    g = torch.Generator().manual_seed(0)
    clips = LatentClipSet.from_latents([torch.randn(frames + 2, 4, h, w, generator=g) for _ in range(2)])
    cfg = TrainConfig(n_frames=frames, hflip=False, mixed_precision=mixed, gradient_checkpointing=gc,
                      use_8bit_adam=eight_bit, save_every=0, validate_every=0)
    return MotionTrainer(unet, clips, torch.randn(1, 77, config["cross_attention_dim"], generator=g), cfg)


def measure_cpu(frames: int, latent: int, mixed: str, gc: bool, steps: int) -> dict:
    trainer = make_trainer(MID, frames, latent, latent, mixed, gc)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    trainer.step()  # warm-up (allocates the AdamW state)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.step()
        times.append(time.perf_counter() - t0)
    return {"step_s": statistics.median(times), "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "rss_after_build_gib": rss_model}


def measure_gpu(frames: int, h: int, w: int, mixed: str, gc: bool, eight_bit: bool, steps: int) -> dict:
    trainer = make_trainer(SD1_DEFAULTS, frames, h, w, mixed, gc, device="cuda", eight_bit=eight_bit)
    trainer.step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"step_s": statistics.median(times), "peak_vram_gib": torch.cuda.max_memory_allocated() / GiB,
            "reserved_gib": torch.cuda.max_memory_reserved() / GiB}


# ---------------------------------------------------------------------------------------------- estimate
class _FusedAttentionStandIn(torch.autograd.Function):
    """What a fused (flash / memory-efficient) attention kernel keeps for backward: q, k, v, the output and
    the fp32 log-sum-exp, never the score matrix. The meta device would otherwise take PyTorch's math path,
    which saves the fp32 softmax (15.6 GiB at SD-1.4 size) and is not what runs on a CUDA GPU."""

    @staticmethod
    def forward(ctx, q, k, v):  # type: ignore[override]
        out = q.new_empty((*q.shape[:-1], v.shape[-1]))
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        q, k, v, _, _ = ctx.saved_tensors
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)


def activation_bytes(frames: int = 16, h: int = 40, w: int = 64) -> dict:
    """Saved-for-backward bytes of one fp16 forward of the SD-1.4-size LAMP UNet (meta device)."""
    with torch.device("meta"):
        unet = LampUNet3D(SD1_DEFAULTS).half()
    unet.requires_grad_(False)
    for _, p in trainable_parameters(unet):
        p.requires_grad_(True)
    units = [m for block in (*unet.down_blocks, *unet.up_blocks)
             for m in (*block.resnets, *getattr(block, "attentions", []))]  # what checkpointing wraps
    saved: dict[int, int] = {}
    per_unit: dict[int, int] = {}
    unit_inputs: dict[int, int] = {}
    largest = [0]
    active: list[int] = []

    weights = {p.untyped_storage()._cdata for p in unet.parameters()}  # counted with the weights, not here

    def pack(t: torch.Tensor) -> torch.Tensor:
        key, size = t.untyped_storage()._cdata, t.untyped_storage().nbytes()
        if key not in saved and key not in weights:
            saved[key] = size
            largest[0] = max(largest[0], size)
            if active:
                per_unit[active[-1]] = per_unit.get(active[-1], 0) + size
        return t

    def enter(module, args):
        active.append(id(module))
        unit_inputs[id(module)] = args[0].numel() * args[0].element_size()

    def leave(module, args, output) -> None:  # (a forward hook that returns a value replaces the output)
        active.pop()

    handles = [m.register_forward_pre_hook(enter) for m in units] + [m.register_forward_hook(leave) for m in units]
    x = torch.randn(1, 4, frames, h, w, device="meta", dtype=torch.float16)
    ctx = torch.randn(1, 77, 768, device="meta", dtype=torch.float16)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            mock.patch("torch.nn.functional.scaled_dot_product_attention", _FusedAttentionStandIn.apply):
        unet(x, torch.tensor([500], device="meta"), ctx)
    for handle in handles:
        handle.remove()
    total = sum(saved.values())
    inside = sum(per_unit.values())
    return {"no_checkpointing": total + 2 * largest[0],
            "checkpointing": total - inside + sum(unit_inputs.values()) + max(per_unit.values()) + 2 * largest[0],
            "largest": largest[0]}


def estimate() -> list[tuple[str, float, dict]]:
    with torch.device("meta"):
        unet = LampUNet3D(SD1_DEFAULTS)
    n_all = sum(p.numel() for p in unet.parameters())
    n_train = sum(p.numel() for _, p in trainable_parameters(unet))
    n_frozen = n_all - n_train
    act = activation_bytes()
    rows = []
    for name, frozen_bytes, adam_bytes, gc in [
            ("fp32 (no autocast), no checkpointing", 4, 8, False),
            ("fp16 autocast, fp32 frozen, no checkpointing", 4, 8, False),
            ("fp16 autocast + fp16 frozen + checkpointing (default)", 2, 8, True),
            ("... + 8-bit AdamW", 2, 2, True)]:
        autocast_copies = 0 if name.startswith("fp32") else 2 * n_train
        act_scale = 2 if name.startswith("fp32") else 1  # fp32 activations are twice the fp16 ones
        parts = {"trainable weights (fp32)": 4 * n_train, "grads (fp32)": 4 * n_train,
                 "AdamW moments": adam_bytes * n_train, "frozen weights": frozen_bytes * n_frozen,
                 "autocast weight copies": autocast_copies,
                 "activations": act_scale * act["checkpointing" if gc else "no_checkpointing"]}
        rows.append((name, sum(parts.values()) / GiB, {k: v / GiB for k, v in parts.items()}))
    print(f"\nSD-1.4-size LAMP UNet: {n_all / 1e6:.1f}M parameters, {n_train / 1e6:.1f}M trainable; "
          f"16 frames at 320x512 (latents 16x40x64), batch 1")
    print(f"saved activations (fp16): {act['no_checkpointing'] / GiB:.2f} GiB without checkpointing, "
          f"{act['checkpointing'] / GiB:.2f} GiB with")
    for name, total, parts in rows:
        detail = ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
        print(f"  {name:<55} ~{total:5.1f} GiB  ({detail})")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--estimate", action="store_true", help="only the SD-1.4 VRAM estimate")
    ap.add_argument("--gpu", action="store_true", help="measure on CUDA at SD-1.4 size (16x40x64 latents)")
    ap.add_argument("--frames", type=int, default=4, help="frames per clip on CPU (default 4)")
    ap.add_argument("--latent", type=int, default=16, help="latent side on CPU (default 16 = 128 px)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per option")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        mixed, gc = json.loads(args.one)
        print(json.dumps(measure_cpu(args.frames, args.latent, mixed, gc, args.steps)))
        return
    if args.gpu:
        for name, mixed, gc in [("fp16 autocast", "fp16", False), ("fp16 + checkpointing", "fp16", True),
                                ("bf16 + checkpointing", "bf16", True)]:
            r = measure_gpu(16, 40, 64, mixed, gc, False, args.steps)
            print(f"{name:<28} {r['step_s']:.2f} s/step, peak {r['peak_vram_gib']:.2f} GiB allocated "
                  f"({r['reserved_gib']:.2f} reserved)")
        try:
            r = measure_gpu(16, 40, 64, "fp16", True, True, args.steps)
            print(f"{'fp16 + ckpt + 8-bit AdamW':<28} {r['step_s']:.2f} s/step, peak {r['peak_vram_gib']:.2f} GiB")
        except RuntimeError as err:
            print(f"8-bit AdamW: {err}")
        return
    if not args.estimate:
        print(f"CPU training step, mid config {MID['block_out_channels']}, {args.frames} frames at "
              f"{args.latent}x{args.latent} latents, torch threads {torch.get_num_threads()}")
        for name, mixed, gc in OPTIONS:
            out = subprocess.run([sys.executable, __file__, "--one", json.dumps([mixed, gc]), "--frames",
                                  str(args.frames), "--latent", str(args.latent), "--steps", str(args.steps)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {name:<32} {r['step_s']:6.2f} s/step   peak RSS {r['peak_rss_gib']:.2f} GiB "
                  f"(after building the model {r['rss_after_build_gib']:.2f} GiB)")
    estimate()


if __name__ == "__main__":
    main()
