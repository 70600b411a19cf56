"""Video editing (paper §5.2): tune on one clip, DDIM-invert it, then sample with an edited first frame.

The official editing run (``inference_script.py --editing``) starts the denoising loop from the inverted latent
of the source clip instead of shared noise: every frame after frame 0 begins at its own inverted latent, with
*no* shared-noise mix, and frame 0 is replaced by the edited first frame's clean latent and pinned as usual.
Everything else is the normal loop (DDIM, classifier-free guidance, the AdaIN schedule, the final AdaIN, then
histogram matching in pixel space). :func:`edit_video` is that run; the CLI (``python -m lamp_model edit``) and
the ComfyUI nodes both call it.

Unlike the official code, which inverts a *random* window of the training clip during validation and loads it
back by a hard-coded step number, the caller picks the clip, its frames (:func:`clip_window`) and the edit;
:class:`InversionCache` keeps an inversion on disk and reuses it while its inputs stay the same.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch
from safetensors import safe_open
from safetensors.torch import load_file

#: ``callback(step, total, latents)``, as in :mod:`lamp_model.sampling` (imported lazily: this module is also
#: read at ComfyUI start-up for its constants and :func:`clip_window`).
Callback = Callable[[int, int, torch.Tensor], Any]

#: The official editing settings (``configs/run-editing.yaml`` and the inference script).
EDIT_FRAMES = 24
EDIT_STRIDE = 2
EDIT_STEPS = 50


def clip_window(num_frames: int, frames: int, start: int = 0, stride: int = 1) -> list[int]:
    """Indices ``start, start + stride, …`` (``frames`` of them) into a clip of ``num_frames`` frames.

    Raises a ``ValueError`` that says how long the clip must be, and what to change, when it is too short.
    """
    for name, value, least in (("frames", frames, 2), ("stride", stride, 1), ("start", start, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    last = start + (frames - 1) * stride
    if last >= num_frames:
        fit = (num_frames - 1 - start) // stride + 1 if start < num_frames else 0
        raise ValueError(f"the clip has {num_frames} frames, but {frames} frames at stride {stride} from frame "
                         f"{start} need {last + 1}; use a longer clip, a smaller stride or start, or at most "
                         f"{max(fit, 0)} frames")
    return list(range(start, last + 1, stride))


def check_inverted_start(inverted: torch.Tensor, first_frame_latent: torch.Tensor) -> torch.Tensor:
    """The inverted start ``[B, C, F, h, w]``, checked against the edited first frame's latent ``[B, C, 1, h, w]``.

    Raises a ``ValueError`` naming both shapes when channels or size differ (frame one edited at another size,
    a clip inverted at another resolution) or when the start is not a video latent.
    """
    if not torch.is_tensor(inverted) or inverted.ndim != 5 or inverted.shape[2] < 2:
        got = tuple(inverted.shape) if torch.is_tensor(inverted) else type(inverted).__name__
        raise ValueError(f"the inverted start must be a clip latent [B, 4, F, h, w] with F >= 2 frames, got {got}")
    first = first_frame_latent.unsqueeze(2) if first_frame_latent.ndim == 4 else first_frame_latent
    if first.ndim != 5 or first.shape[1] != inverted.shape[1] or first.shape[-2:] != inverted.shape[-2:] \
            or first.shape[0] not in (1, inverted.shape[0]):
        c, h, w = inverted.shape[1], inverted.shape[3], inverted.shape[4]
        raise ValueError(f"the edited first frame's latent {tuple(first.shape)} does not match the inverted clip "
                         f"{tuple(inverted.shape)}: the first frame must be encoded at the source video's size "
                         f"({w * 8}x{h * 8} pixels, latent {c}x{h}x{w})")
    return first


def check_edit_settings(steps: int, inversion_steps: Optional[int] = None, scheduler: Any = None) -> None:
    """Raise a ``ValueError`` unless the editing run samples with DDIM and, when ``inversion_steps`` is known,
    with as many steps as the inversion took (so sampling starts at the timestep the inversion ended at)."""
    if scheduler is not None and not (isinstance(scheduler, str) and scheduler.strip().lower() == "ddim"):
        raise ValueError(f"editing starts from a DDIM inversion and samples with DDIM; got scheduler {scheduler!r}: "
                         "choose ddim")
    if inversion_steps is not None and int(inversion_steps) != int(steps):
        raise ValueError(f"the clip was inverted with {inversion_steps} steps but sampling uses {steps}; use the same "
                         "number for both (official 50), so sampling starts where the inversion ended")


def edit_video(unet: Callable[..., Any], first_frame_latent: torch.Tensor, cond: torch.Tensor,
               uncond: Optional[torch.Tensor], inverted: torch.Tensor, steps: int = EDIT_STEPS,
               guidance_scale: float = 12.5, adain: bool = True, callback: Optional[Callback] = None, *,
               inversion_steps: Optional[int] = None, scheduler: Any = None) -> torch.Tensor:
    """The official editing run: :func:`~lamp_model.sampling.sample_video` started from an inverted clip.

    Args:
        unet, cond, uncond, guidance_scale, adain, callback: as for ``sample_video`` (official: cfg 12.5, AdaIN).
        first_frame_latent: the edited first frame ``[B, 4, 1, h, w]`` (scaled by 0.18215); pinned and clean.
        inverted: the source clip's inverted latent ``[B, 4, F, h, w]`` (:func:`~lamp_model.ddim_invert`);
            frames 1.. start from it as they are (no shared-noise mix), its frame 0 is replaced by the edit.
        steps: DDIM steps; must equal ``inversion_steps`` when that is given, so that sampling starts at the
            timestep the inversion ended at.
        scheduler: ``None`` / ``"ddim"`` only: the inverted latent is a DDIM state, not sigma-scaled noise.

    Returns the final latents ``[B, 4, F, h, w]`` (after the final AdaIN), frame 0 = the edited first frame.
    """
    from .inversion import check_unet_layout
    from .sampling import make_scheduler, sample_video

    first = check_inverted_start(inverted, first_frame_latent)
    check_edit_settings(steps, inversion_steps, scheduler)
    check_unet_layout(unet, inverted, cond, "editing")
    return sample_video(unet, first, cond, uncond, inverted, steps=steps, guidance_scale=guidance_scale,
                        shared_noise_alpha=0.0, adain=adain, scheduler=make_scheduler("ddim"), callback=callback)


# ---------------------------------------------------------------------------------------------- cache
def fingerprint(*parts: Any) -> str:
    """A sha256 hex digest of tensors (their dtype, shape and bytes) and JSON-able values, in order."""
    digest = hashlib.sha256()
    for part in parts:
        if torch.is_tensor(part):
            t = part.detach().cpu().contiguous()
            digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"|")
    return digest.hexdigest()


def files_fingerprint(*paths: str | Path) -> str:
    """A digest of where files are, how large and how new (every file below a folder): cheap, and it changes
    when a motion file is re-tuned or a base is replaced, so an old inversion is never reused for them."""
    entries = []
    for path in paths:
        path = Path(path).expanduser().resolve()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        entries += [(str(f), f.stat().st_size, f.stat().st_mtime_ns) if f.exists() else (str(f), None)
                    for f in files]
    return fingerprint(entries)


class InversionCache:
    """An inverted latent on disk (safetensors), valid while its key (model, clip, settings) is the same.

    ``get(key)`` returns the stored latent when the file exists and holds ``key``, else ``None``;
    ``put(key, latent, info)`` writes it atomically with ``info`` (strings) in the metadata.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def get(self, key: str) -> Optional[torch.Tensor]:
        if not self.path.is_file():
            return None
        try:
            with safe_open(str(self.path), "pt") as f:
                stored = (f.metadata() or {}).get("key")
            return load_file(str(self.path))["inverted"] if stored == key else None
        except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, never fatal
            return None

    def put(self, key: str, latent: torch.Tensor, info: Mapping[str, Any] | None = None) -> Path:
        from .weights import atomic_save

        meta = {str(k): str(v) for k, v in (info or {}).items()}
        meta["key"] = key
        return atomic_save({"inverted": latent.detach().float().cpu().contiguous()}, self.path, meta)
