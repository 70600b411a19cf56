"""Peak memory of a long LAMP video (64 frames at 320x512) with each strategy, estimated on the meta device.

    python benchmarks/long_video_memory.py [--frames 64] [--height 320] [--width 512] [--dtype fp16] [--check]

The SD-1.4-size LAMP UNet is built on the meta device (no weights, no compute) and run under a dispatch
mode that counts the bytes of every tensor alive during the forward pass (allocated by an op, freed when its
last reference goes): the peak of those plus the weights is the activation memory a GPU would need, without
allocator caching and fragmentation (a real run needs a few hundred MB more). Attention is counted as a fused
kernel (flash / memory-efficient, what SDPA uses on a GPU: output and log-sum-exp, no score matrix); the
"scores materialised" column counts the matrix as SDPA's math backend (old GPUs) would, from its meta-device
decomposition, which keeps more intermediates than a real run (an upper bound, see ``--check``).

What is counted per strategy (one CFG forward = batch 2, the largest moment of a sampling step):

* one 16-frame segment / window (every strategy holds one at a time), plus the long video's latents and
  noise (fp32, a few MB);
* segments + content lock: the same forward while the recorded frame-0 tokens of every transformer block
  are held (they are recorded in a separate pass, so that pass's activations are gone);
* all 64 frames in one forward: what a long video would need without segments or windows (for comparison;
  LAMP is not trained for it).

Prints figures; asserts nothing. Not yet measured on a GPU (none was lent to this project so far).
"""
from __future__ import annotations

import argparse
import sys
import weakref
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lamp_model.attention import FirstFrameBank  # noqa: E402
from lamp_model.long_video import plan_long_video  # noqa: E402
from lamp_model.unet3d import SD1_DEFAULTS, LampUNet3D  # noqa: E402

GB = 1024 ** 3


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of tensors created by ops while they are alive; ``peak`` is the maximum."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and id(t) not in inputs and not t._is_view():
                nbytes = t.untyped_storage().nbytes()
                self.live += nbytes
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, nbytes)
        return out


def _fused_sdpa(q, k, v, *args, **kwargs):
    """Stand-in for a fused attention kernel: allocates what flash attention keeps (output + log-sum-exp)."""
    torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)  # log-sum-exp, freed at once
    return torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device=q.device)


@contextmanager
def attention(fused: bool):
    real = torch.nn.functional.scaled_dot_product_attention
    if fused:
        torch.nn.functional.scaled_dot_product_attention = _fused_sdpa
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = real


def peak_forward(unet: LampUNet3D, frames: int, h: int, w: int, dtype: torch.dtype, fused: bool,
                 lock: bool = False) -> tuple[int, int]:
    """(peak bytes of one CFG forward, bytes held by the content-lock bank during it)."""
    x = torch.empty(2, 4, frames, h, w, device="meta", dtype=dtype)
    ctx = torch.empty(2, 77, 768, device="meta", dtype=dtype)
    t = torch.tensor(500, device="meta")
    bank = FirstFrameBank() if lock else None
    with torch.no_grad(), attention(fused):
        if bank is not None:  # the recording pass: its activations go, the frame-0 tokens stay
            unet.set_frame0_bank(bank)
            unet(x, t, ctx)
            bank.mode = "read"
        held = sum(v.untyped_storage().nbytes() for v in bank.tokens.values()) if bank else 0
        mode = LiveBytes()
        with mode:
            unet(x, t, ctx)
        unet.set_frame0_bank(None)
    return mode.peak, held


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--height", type=int, default=320)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"])
    ap.add_argument("--check", action="store_true",
                    help="also count the 'mid' config of benchmarks/unet_speed.py (fp32, 16 frames, 40x64), whose "
                         "peak RSS was measured on the CPU (README: 1.35 GB ours, 15.4 GB official-style)")
    args = ap.parse_args()
    if args.check:
        with torch.device("meta"):
            mid = LampUNet3D({**SD1_DEFAULTS, "block_out_channels": [64, 128, 256, 256]}).eval()
        mid_weights = sum(p.numel() for p in mid.parameters()) * 4
        fused, _ = peak_forward(mid, 16, 40, 64, torch.float32, True)
        math_peak, _ = peak_forward(mid, 16, 40, 64, torch.float32, False)
        print(f"check, mid config: counted {(fused + mid_weights) / GB:.2f} GB with fused attention (measured peak "
              f"RSS 1.35 GB, which adds the Python/torch runtime), {(math_peak + mid_weights) / GB:.2f} GB with "
              "scores materialised (measured official-style 15.4 GB: this column is an upper bound)\n")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    h, w = args.height // 8, args.width // 8
    with torch.device("meta"):
        unet = LampUNet3D(SD1_DEFAULTS).to(dtype).eval()
    weights = sum(p.numel() for p in unet.parameters()) * dtype.itemsize
    seg = plan_long_video(args.frames, "segments").segment_frames
    latents = 3 * 4 * args.frames * h * w * 4  # video latents, raw noise, mixed noise (fp32)
    print(f"SD-1.4-size LAMP UNet, {args.dtype}, {args.frames} frames at {args.height}x{args.width} "
          f"(latent {h}x{w}), CFG batch 2; weights {weights / GB:.2f} GB; long-video latents {latents / GB * 1024:.1f} MB")
    print(f"| what is held | activations, fused attention | peak incl. weights | scores materialised (math SDPA) |")
    print("|---|---|---|---|")
    rows = [(f"one {seg}-frame segment or window (segments, windows)", seg, False),
            (f"one {seg}-frame segment + content-lock frame-0 tokens", seg, True),
            (f"all {args.frames} frames in one forward (no long-video strategy)", args.frames, False)]
    for label, frames, lock in rows:
        fused, held = peak_forward(unet, frames, h, w, dtype, True, lock)
        math_peak, _ = peak_forward(unet, frames, h, w, dtype, False, lock)
        extra = held + (latents if frames == seg else 0)
        print(f"| {label} | {(fused + held) / GB:.2f} GB" + (f" (tokens {held / GB * 1024:.0f} MB)" if lock else "") +
              f" | **{(fused + extra + weights) / GB:.2f} GB** | {(math_peak + extra + weights) / GB:.2f} GB |")


if __name__ == "__main__":
    main()
