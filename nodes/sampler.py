"""LAMP Sampler: Algorithm 1 of the paper (clean frame one pinned, shared noise, AdaIN) inside ComfyUI."""
from __future__ import annotations

import logging
import math
from typing import Any

import torch

from lamp_model.long_video import DEFAULT_COLOR_REFERENCE, DEFAULT_CONTENT_LOCK, DEFAULT_STRATEGY, TRAINED_FRAMES
from lamp_model.long_video import STRATEGIES as LONG_STRATEGIES
from lamp_model.sampling import COLOR_CONSISTENCY as ENGINE_COLOR_CONSISTENCY

from . import host
from .control import controlled
from .motion_model import DTYPE_CHOICES, SD1_LATENT_SCALE, LampModel, resolve_dtype
from .shared_noise import LampNoise

log = logging.getLogger("ComfyUI-LAMP")

SCHEDULERS = ["ddim", "dpmpp_2m", "euler"]
#: Long-video options: the widget labels of the colour reference and the engine's names for them.
COLOR_LABELS = {"segment": "segment start", "original": "frame one"}
COLOR_CHOICES = {label: name for name, label in COLOR_LABELS.items()}
MAX_SEGMENT_FRAMES = 64
LONG_TOOLTIP = ("Used when the LATENT has more frames than segment_frames. segments: each segment starts from "
                "the previous segment's last frame, pinned clean. windows: overlapping windows, each with the clean "
                "frame one, blended inside one denoising loop. See the README (Long videos) for which keeps the "
                "motion.")
#: Where the AdaIN statistics come from when adain is on (the engine's modes without "none": adain off is that).
COLOR_CONSISTENCY = [mode for mode in ENGINE_COLOR_CONSISTENCY if mode != "none"]
COLOR_CONSISTENCY_TOOLTIP = ("Where AdaIN takes its colour statistics (when adain is on). official: the whole frame. "
                             "static: only the pixels that did not change from frame one, so a motion that changes "
                             "the subject's size (grow, zoom) is not pulled back to frame one's size (not in the "
                             "paper; README: Toy motion world, Results). Pair it with LAMP Color Match static.")
MAX_STEPS = 1000
MAX_CFG = 100.0
#: Conditioning keys that the LAMP sampler cannot honour (areas, masks, GLIGEN …; ControlNets it honours).
_IGNORED_COND_KEYS = ("area", "mask", "gligen", "hooks", "concat_latent_image", "strength")


def conditioning_tensor(conditioning: Any, name: str, context_dim: int) -> torch.Tensor:
    """The text embedding ``[1,L,D]`` of a ComfyUI CONDITIONING (first entry), checked against the UNet."""
    try:
        tensor, extras = conditioning[0][0], conditioning[0][1]
        if not torch.is_tensor(tensor) or tensor.ndim != 3:
            raise TypeError
    except (TypeError, IndexError, KeyError):
        raise ValueError(f"LAMP Sampler: '{name}' is not a ComfyUI CONDITIONING. Connect a CLIPTextEncode that "
                         "uses the CLIP of the SD-1.x checkpoint.") from None
    if tensor.shape[-1] != context_dim:
        raise ValueError(f"LAMP Sampler: '{name}' has width {tensor.shape[-1]} but this LAMP model needs "
                         f"{context_dim} (SD-1.x CLIP). A width of 2048 or 1280 means an SD-XL CLIP: encode the "
                         "LAMP prompts with the CLIP of the SD-1.x checkpoint.")
    if len(conditioning) > 1:
        log.warning("[LAMP] '%s' holds %d conditionings (combined/concatenated); LAMP uses the first.",
                    name, len(conditioning))
    ignored = sorted(k for k in _IGNORED_COND_KEYS if isinstance(extras, dict) and extras.get(k) is not None)
    if ignored:
        log.warning("[LAMP] '%s' carries %s, which the LAMP Sampler ignores.", name, ", ".join(ignored))
    return tensor[:1]


def match_lengths(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat two token sequences ``[1,L,D]`` to a common length (as ComfyUI does for long prompts)."""
    if a.shape[1] == b.shape[1]:
        return a, b
    n = math.lcm(a.shape[1], b.shape[1])
    return a.repeat(1, n // a.shape[1], 1), b.repeat(1, n // b.shape[1], 1)


def raw_noise_for(noise: Any, shape: tuple[int, ...]) -> tuple[torch.Tensor, float]:
    """Raw noise ``[1,4,F,h,w]`` and the shared-noise alpha. A LAMP noise gives both; any other ComfyUI NOISE
    (RandomNoise …) supplies the raw noise and the official alpha is used."""
    if isinstance(noise, LampNoise):
        return noise.raw(shape), noise.alpha
    if not hasattr(noise, "generate_noise"):
        raise ValueError("LAMP Sampler: 'noise' is not a NOISE. Connect LAMP Shared Noise.")
    from lamp_model.noise import DEFAULT_ALPHA
    _, c, f, h, w = shape
    frames = noise.generate_noise({"samples": torch.zeros(f, c, h, w)})
    if tuple(frames.shape) != (f, c, h, w):
        raise ValueError(f"LAMP Sampler: the NOISE gave shape {tuple(frames.shape)}, expected {(f, c, h, w)}.")
    log.info("[LAMP] non-LAMP NOISE: using it as raw noise with the official shared-noise alpha %.2f", DEFAULT_ALPHA)
    return frames.float().transpose(0, 1).unsqueeze(0).cpu(), DEFAULT_ALPHA


class LampSampler:
    """LAMP Sampler node: LAMP_MODEL + prompts + first-frame LATENT + noise → video LATENT."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "lamp_model": ("LAMP_MODEL", {"tooltip": "From LAMP Load Motion or LAMP Load Official Checkpoint."}),
            "positive": ("CONDITIONING", {"tooltip": "Prompt of the video, encoded with the SD-1.x CLIP "
                                                     "(CLIPTextEncode). Mention the learned motion."}),
            "negative": ("CONDITIONING", {"tooltip": "Negative prompt, encoded with the SD-1.x CLIP."}),
            "latent": ("LATENT", {"tooltip": "From LAMP First Frame: frame 0 is kept, its batch size is the frame "
                                             "count."}),
            "noise": ("NOISE", {"tooltip": "From LAMP Shared Noise (seed + alpha)."}),
            "steps": ("INT", {"default": 50, "min": 1, "max": MAX_STEPS, "tooltip": "Denoising steps (official 50)."}),
            "cfg": ("FLOAT", {"default": 12.5, "min": 0.0, "max": MAX_CFG, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance scale (official 12.5)."}),
            "scheduler": (SCHEDULERS, {"default": "ddim", "tooltip": "ddim is the official scheduler; dpmpp_2m and "
                                                                     "euler reach similar quality in fewer steps."}),
            "adain": ("BOOLEAN", {"default": True, "tooltip": "AdaIN of every frame's latent to frame one during the "
                                                              "last steps and at the end (official: on)."}),
            "dtype": (DTYPE_CHOICES, {"default": "auto", "tooltip": "Compute precision. auto: fp16 where the GPU "
                                                                    "supports it, else bf16/fp32."}),
        }, "optional": {
            # Long videos (more frames than segment_frames); see lamp_model.long_video and the README.
            "long_strategy": (list(LONG_STRATEGIES), {"default": DEFAULT_STRATEGY, "tooltip": LONG_TOOLTIP}),
            "segment_frames": ("INT", {"default": TRAINED_FRAMES, "min": 3, "max": MAX_SEGMENT_FRAMES,
                                       "tooltip": "Frames per segment / window, frame one included (LAMP is "
                                                  "trained on 16). Memory is that of one segment."}),
            "overlap": ("INT", {"default": -1, "min": -1, "max": MAX_SEGMENT_FRAMES - 2,
                                "tooltip": "-1: the strategy's default (4). segments: frames shared with the "
                                           "previous segment, the first of them pinned clean (1 = only the "
                                           "previous segment's last frame); windows: frames shared by "
                                           "neighbouring windows."}),
            "content_lock": ("BOOLEAN", {"default": DEFAULT_CONTENT_LOCK,
                                         "tooltip": "segments: the frame-0 attention of every segment reads the "
                                                    "original frame one instead of the segment's first frame "
                                                    "(one extra UNet pass per step)."}),
            "color_reference": (list(COLOR_CHOICES), {"default": COLOR_LABELS[DEFAULT_COLOR_REFERENCE],
                                                      "tooltip": "segments: the final AdaIN gives each segment the "
                                                                 "colours of its first frame or of frame one."}),
            "color_consistency": (COLOR_CONSISTENCY, {"default": "official", "tooltip": COLOR_CONSISTENCY_TOOLTIP}),
        }}

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The video latent [frames,4,h,w]; decode it with VAE Decode and the SD-1.x VAE.",)
    FUNCTION = "sample"
    CATEGORY = "LAMP"
    DESCRIPTION = ("Generates the video: frame one stays fixed and clean, the LAMP UNet denoises the following "
                   "frames from shared noise with classifier-free guidance, and AdaIN keeps their colours on frame "
                   "one. Shows progress and a preview every step; Cancel stops it between steps.")

    def sample(self, lamp_model: LampModel, positive: Any, negative: Any, latent: dict, noise: Any,
               steps: int = 50, cfg: float = 12.5, scheduler: str = "ddim", adain: bool = True,
               dtype: str = "auto", long_strategy: str = DEFAULT_STRATEGY, segment_frames: int = TRAINED_FRAMES,
               overlap: int = -1, content_lock: bool = DEFAULT_CONTENT_LOCK,
               color_reference: str = COLOR_LABELS[DEFAULT_COLOR_REFERENCE],
               color_consistency: str = "official") -> tuple[dict]:
        from lamp_model.long_video import plan_long_video, sample_long_video

        if not isinstance(lamp_model, LampModel):
            raise ValueError("LAMP Sampler: 'lamp_model' must come from LAMP Load Motion or LAMP Load Official "
                             "Checkpoint.")
        if not 1 <= int(steps) <= MAX_STEPS:
            raise ValueError(f"LAMP Sampler: steps must be between 1 and {MAX_STEPS}, got {steps} (official 50).")
        if not 0.0 <= float(cfg) <= MAX_CFG:
            raise ValueError(f"LAMP Sampler: cfg must be between 0 and {MAX_CFG}, got {cfg} (official 12.5).")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"LAMP Sampler: scheduler must be one of {SCHEDULERS}, got {scheduler!r}.")
        samples = latent.get("samples") if isinstance(latent, dict) else None
        if not torch.is_tensor(samples) or samples.ndim != 4 or samples.shape[1] != 4:
            shape = tuple(samples.shape) if torch.is_tensor(samples) else type(samples).__name__
            raise ValueError(f"LAMP Sampler: 'latent' must be a 4-channel LATENT [frames,4,h,w] from LAMP First "
                             f"Frame, got {shape}.")
        frames, _, h, w = samples.shape
        if frames < 2:
            raise ValueError("LAMP Sampler: the LATENT holds 1 frame; LAMP needs frame one plus at least one more. "
                             "Use LAMP First Frame and set 'frames' (16 = official).")

        cond = conditioning_tensor(positive, "positive", lamp_model.context_dim)
        uncond = conditioning_tensor(negative, "negative", lamp_model.context_dim)
        cond, uncond = match_lengths(cond, uncond)
        raw, alpha = raw_noise_for(noise, (1, 4, frames, h, w))
        from .invert_nodes import InvertedStart
        edit = noise.steps if isinstance(noise, InvertedStart) else None
        if edit is not None:  # a start from LAMP Invert Video: the official editing run
            from lamp_model.editing import check_edit_settings, edit_video
            try:
                check_edit_settings(int(steps), edit, scheduler)
            except ValueError as e:
                raise ValueError(f"LAMP Sampler: {e}.") from None

        if color_consistency not in COLOR_CONSISTENCY:
            raise ValueError(f"LAMP Sampler: color_consistency must be one of {COLOR_CONSISTENCY}, got "
                             f"{color_consistency!r}.")
        if edit is not None and color_consistency != "official":
            log.warning("[LAMP] color_consistency '%s' is not used by editing runs (LAMP Invert Video): they keep "
                        "the official AdaIN.", color_consistency)
        if color_reference not in COLOR_CHOICES:
            raise ValueError(f"LAMP Sampler: color_reference must be one of {list(COLOR_CHOICES)}, got "
                             f"{color_reference!r}.")
        try:
            plan = plan_long_video(frames, long_strategy, int(segment_frames), None if int(overlap) < 0 else overlap)
        except ValueError as e:
            raise ValueError(f"LAMP Sampler: {e}.") from None
        if edit is not None:  # editing runs over the whole inverted clip at once
            plan = plan_long_video(frames, "segments", max(frames, 3))
        elif not plan.single:
            log.info("[LAMP] long video: %d frames as %d %s of %d frames (overlap %d)", frames, len(plan.spans),
                     plan.strategy, plan.segment_frames, plan.overlap)

        device = host.torch_device()
        compute = resolve_dtype(dtype, device)
        first = (samples[:1].float() * SD1_LATENT_SCALE).transpose(0, 1).unsqueeze(0)  # [1,4,1,h,w]
        bar = host.progress(plan.total_steps(int(steps)), previews=True)
        log.info("[LAMP] sampling %d frames %dx%d, %d %s steps, cfg %.2f, alpha %.2f, %s on %s", frames, w * 8, h * 8,
                 steps, scheduler, cfg, alpha, str(compute).replace("torch.", ""), device)
        held = min(frames, plan.segment_frames)  # one segment / window on the device at a time
        with lamp_model.on_device(device, compute, held, h, w) as unet, torch.no_grad(), \
                controlled(unet, positive, negative, device) as unet:
            if edit is not None:
                video = edit_video(unet, first.to(device), cond.to(device, compute), uncond.to(device, compute),
                                   raw.to(device), int(steps), float(cfg), bool(adain), host.callback_for(bar))
            else:
                video = sample_long_video(
                    unet, first.to(device), cond.to(device, compute), uncond.to(device, compute), raw.to(device),
                    steps=int(steps), guidance_scale=float(cfg), shared_noise_alpha=alpha, adain=bool(adain),
                    scheduler=scheduler, callback=host.callback_for(bar), strategy=plan.strategy,
                    segment_frames=plan.segment_frames, overlap=plan.overlap, content_lock=bool(content_lock),
                    color_reference=COLOR_CHOICES[color_reference], color_consistency=color_consistency)
            out = (video[0].transpose(0, 1).float() / SD1_LATENT_SCALE).to(host.intermediate_device())
            del video
        if not torch.isfinite(out).all():
            from lamp_model.checks import nan_advice
            raise FloatingPointError(f"LAMP Sampler: the result holds NaN/inf values: {nan_advice(device, compute)}.")
        return ({"samples": out.contiguous()},)


NODE_CLASS_MAPPINGS = {"LAMP_Sampler": LampSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"LAMP_Sampler": "LAMP Sampler"}
