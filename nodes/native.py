"""The native path: LAMP inside ComfyUI's own sampling.

- **LAMP Apply Motion** turns an SD-1.x MODEL into a LAMP MODEL (a clone; the input is never changed) that
  KSampler, KSamplerAdvanced and SamplerCustomAdvanced sample as one video with its frames on the batch axis.
- **LAMP DDIM Sampler** (SAMPLER) and **LAMP DDIM Sigmas** (SIGMAS) reproduce the official loop there.

How the MODEL works (see the README, "Native path"): ComfyUI's diffusion-model call is wrapped; the wrapper
runs the engine's LAMP UNet (:class:`lamp_model.borrowed_unet.BorrowedLampUNet`) on ComfyUI's own UNet tensors
(LoRA patches and device moves included) plus the motion tensors, puts the clean first-frame latent in frame 0
at every call, adds ControlNet residuals per frame (never on frame 0) and keeps frame 0 in every context window.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from . import host
from .control import control_residuals
from .motion_model import require_sd1

log = logging.getLogger("ComfyUI-LAMP")

#: transformer_options key under which the sampler-run wrapper leaves the clean first frame for the model.
FIRST_FRAME_KEY = "lamp_first_frame"


@dataclass
class FirstFrame:
    """The clean frame-0 latent of one sampling run (model space, ``[1,C,h,w]``) and whether it is pinned."""

    latent: torch.Tensor
    pinned: bool


def _frame0_is_masked(denoise_mask: torch.Tensor | None, frames: int) -> bool:
    if denoise_mask is None or denoise_mask.shape[0] != frames:
        return False
    return bool((denoise_mask[0] == 0).all()) and bool((denoise_mask[1:] > 0).any())


class LampMotionPatch:
    """The two wrappers a LAMP MODEL carries: one per sampling run, one per diffusion-model call."""

    def __init__(self, unet: Any, names: dict[str, str]) -> None:
        self.unet, self.names = unet, names
        self._warned = False
        self._slots: tuple[Any, list] | None = None  # (ComfyUI UNet module, its tensor slots)

    # -- SAMPLER_SAMPLE: remember the clean first frame of this run --------------------------------------
    def sampler_sample(self, executor: Callable, guider: Any, sigmas: torch.Tensor, extra_args: dict,
                       callback: Any, noise: torch.Tensor, latent_image: torch.Tensor | None,
                       denoise_mask: torch.Tensor | None, disable_pbar: bool) -> torch.Tensor:
        if latent_image is None or latent_image.ndim != 4 or latent_image.shape[0] < 2:
            shape = None if latent_image is None else tuple(latent_image.shape)
            raise ValueError(f"LAMP: the LATENT must hold a video [frames,4,h,w] with frames >= 2, got {shape}. "
                             "Use LAMP First Frame to make it.")
        for conds in (getattr(guider, "conds", None) or {}).values():
            for cond in conds or []:
                host.check_sd1_control(cond.get("control") if isinstance(cond, dict) else None, "LAMP MODEL")
        pinned = _frame0_is_masked(denoise_mask, latent_image.shape[0])
        if not pinned and not self._warned:
            self._warned = True
            log.warning("[LAMP] the LATENT has no noise mask that keeps frame 0: frame 0 is generated like the other "
                        "frames, not kept as LAMP's first frame. Use the LATENT of LAMP First Frame (its noise_mask is "
                        "0 on frame 0).")
        options = extra_args.setdefault("model_options", {}).setdefault("transformer_options", {})
        options[FIRST_FRAME_KEY] = FirstFrame(latent_image[:1].clone(), pinned)
        with host.context_windows_fixed(extra_args["model_options"]):
            samples = executor(guider, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)
        if pinned:  # multistep samplers (uni_pc, …) end near, not at, the kept frame: put it back exactly
            samples = torch.cat([latent_image[:1].to(samples), samples[1:]])
        return samples

    # -- DIFFUSION_MODEL: the LAMP UNet on ComfyUI's tensors ----------------------------------------------
    def diffusion_model(self, executor: Any, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                        y: Any = None, control: dict | None = None, transformer_options: dict | None = None,
                        **kwargs: Any) -> torch.Tensor:
        options = transformer_options or {}
        first = options.get(FIRST_FRAME_KEY)
        if not isinstance(first, FirstFrame):
            raise RuntimeError("LAMP: the LAMP MODEL was called outside a ComfyUI sampler run (no first frame "
                               "known); sample it with KSampler or SamplerCustomAdvanced.")
        videos = max(1, len(options.get("cond_or_uncond") or [0]))
        if x.shape[0] % videos:
            raise ValueError(f"LAMP: batch {x.shape[0]} does not split into {videos} videos.")
        frames = x.shape[0] // videos
        window = options.get("context_window")
        index = list(getattr(window, "index_list", range(frames)))
        if window is not None and getattr(window, "dim", 0) != 0:
            raise ValueError("LAMP: context windows must run over dim 0 (frames on the batch axis); set dim = 0.")
        if first.latent.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"LAMP: the LAMP MODEL got a {tuple(x.shape[-2:])} crop of the {tuple(first.latent.shape[-2:])} "
                             "latent: area/mask conditioning is not supported on the LAMP part.")
        pinned = first.pinned
        add_first = pinned and 0 not in index  # LAMP's attention reads the clean frame 0: every window gets it
        pos0 = 0 if add_first or 0 not in index else index.index(0)

        def per_video(t: torch.Tensor) -> torch.Tensor:  # [videos*frames, ...] -> [videos, frames(+1), ...]
            t = t.reshape(videos, frames, *t.shape[1:])
            if add_first:
                t = torch.cat([t[:, :1], t], dim=1)
            return t

        video = per_video(x).clone()
        if pinned:
            video[:, pos0] = first.latent.to(video)[0]
        t = per_video(timesteps)[:, 0]
        ctx = per_video(context)[:, 0]
        down, mid = control_residuals(control, videos, frames, pos0 if pinned else None, add_first)
        if self._slots is None or self._slots[0] is not executor.class_obj:
            self._slots = (executor.class_obj, host.tensor_slots(executor.class_obj, self.names))
        base = host.live_tensors(self._slots[1], x.device, x.dtype)
        eps = self.unet(base, video.transpose(1, 2), t, ctx, down, mid).transpose(1, 2)  # [videos, f, C, h, w]
        if add_first:
            eps = eps[:, 1:]
        return eps.reshape(videos * frames, *eps.shape[2:])


def motion_patch(model: Any) -> LampMotionPatch | None:
    """The :class:`LampMotionPatch` that LAMP Apply Motion (or Apply Official Motion) put on a ComfyUI MODEL, or
    None for a MODEL without LAMP."""
    patch = getattr(host.native_wrapper(model), "__self__", None)
    return patch if isinstance(patch, LampMotionPatch) else None


class NativeLampUNet(torch.nn.Module):
    """A LAMP MODEL's video UNet as an engine-style module ``unet(sample [B,C,F,h,w], t, encoder_hidden_states)``
    (what :func:`lamp_model.ddim_invert` calls): the patch's own LAMP UNet on the MODEL's live UNet tensors, the
    same module and tensors KSampler runs, nothing copied. Its parameters are the motion tensors, so the engine
    reads the run's device and dtype from them; load the MODEL (:func:`host.load_for_run`) before using it."""

    def __init__(self, patch: LampMotionPatch, host_unet: torch.nn.Module) -> None:
        super().__init__()
        self.lamp = patch.unet
        self.__dict__["slots"] = host.tensor_slots(host_unet, patch.names)  # not state: ComfyUI's own tensors

    @property
    def config(self) -> dict[str, Any]:
        return self.lamp.config

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
                ) -> torch.Tensor:
        base = host.live_tensors(self.slots, sample.device, sample.dtype)
        return self.lamp(base, sample, timestep, encoder_hidden_states)


class LampApplyMotion:
    """LAMP Apply Motion: SD-1.x MODEL + motion file → a LAMP MODEL for ComfyUI's own samplers."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "model": ("MODEL", {"tooltip": "An SD-1.x model (SD-1.4/1.5). LoRAs applied to it, before or after this "
                                           "node, reach the LAMP UNet."}),
            "motion_file": (host.list_motion_files(), {"tooltip": "A LAMP motion file from models/lamp."}),
        }}

    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A LAMP MODEL: sample it with KSampler / SamplerCustomAdvanced on the LATENT of LAMP First "
                       "Frame (frames on the batch axis, frame 0 kept clean and fixed).",)
    FUNCTION = "apply"
    CATEGORY = "LAMP"
    DESCRIPTION = ("Makes ComfyUI's own samplers generate LAMP videos: the SD-1.x UNet runs as LAMP's video UNet "
                   "(temporal convs, frame-0 attention, temporal attention, frame-pooled GroupNorm) with the motion "
                   "file's layers. For the paper's schedule use SamplerCustomAdvanced with LAMP DDIM Sampler, LAMP "
                   "DDIM Sigmas and LAMP Shared Noise. ControlNets on the conditioning steer every frame but frame 0.")

    def apply(self, model: Any, motion_file: str) -> tuple[Any]:
        from lamp_model import weights

        require_sd1(model)
        path = host.motion_path(motion_file)
        try:
            motion, metadata = weights.read_motion(path)
        except (weights.WeightsFormatError, OSError, ValueError) as e:
            hint = (" It is a whole official LAMP UNet: use LAMP Apply Official Motion." if "lamp_full" in str(e) else "")
            raise ValueError(f"LAMP Apply Motion: cannot read motion file '{motion_file}': {e}{hint}") from None
        return (patched_model(model, motion, metadata, f"motion file '{motion_file}'", "LAMP Apply Motion"),)


def patched_model(model: Any, motion: dict, metadata: dict, what: str, node: str) -> Any:
    """The LAMP MODEL: a clone of ``model`` carrying the motion tensors and the two wrappers."""
    from lamp_model import weights
    from lamp_model.borrowed_unet import BorrowedLampUNet, ldm_names

    try:
        config, names = ldm_names(host.unet_module(model).state_dict(), metadata, "the MODEL's UNet")
        unet = BorrowedLampUNet(config, motion, metadata).to(host.compute_dtype(model))  # no cast per call
    except (weights.WeightsFormatError, ValueError) as e:
        raise ValueError(f"{node}: {what} does not fit this model: {e}") from None
    names = {k: v for k, v in names.items() if k in set(unet.base_names)}
    patch = LampMotionPatch(unet, names)
    log.info("[LAMP] Apply Motion: %s on the MODEL (native path)", what)
    return host.patch_model(model, unet, patch.diffusion_model, patch.sampler_sample)


class LampApplyOfficialMotion:
    """LAMP Apply Official Motion: SD-1.x MODEL + an official LAMP checkpoint's motion layers → a LAMP MODEL."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "model": ("MODEL", {"tooltip": "An SD-1.x model; the official motions were trained on SD-1.4 "
                                           "(sd-v1-4.ckpt), SD-1.5 works too."}),
            "checkpoint_path": ("STRING", {"default": "", "tooltip": "Official LAMP checkpoint: its folder (holding "
                                                                    "unet/), the unet/ folder, or a full-UNet "
                                                                    ".safetensors. Absolute, or relative to models/lamp."}),
        }}

    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A LAMP MODEL with the checkpoint's motion layers on this MODEL's SD-1.x weights.",)
    FUNCTION = "apply"
    CATEGORY = "LAMP"
    DESCRIPTION = ("LAMP Apply Motion for an official LAMP checkpoint (a whole video UNet, ~4 GB): its motion "
                   "layers (temporal convs and attention, tuned frame-0 query) go on the MODEL; the checkpoint's "
                   "own SD-1.4 weights are not used. Converting it once with LAMP Convert Official and using LAMP "
                   "Apply Motion loads faster.")

    def apply(self, model: Any, checkpoint_path: str) -> tuple[Any]:
        from lamp_model import weights

        from .loader_nodes import resolve_checkpoint_path

        require_sd1(model)
        path = resolve_checkpoint_path(checkpoint_path)
        try:
            unet = weights.load_unet(path, dtype=torch.float16, device="cpu")
        except (weights.WeightsFormatError, OSError, ValueError) as e:
            raise ValueError(f"LAMP Apply Official Motion: cannot load '{checkpoint_path}': {e}") from None
        motion = weights.motion_state_dict(unet)
        metadata = {"architecture": json.dumps({k: unet.config[k] for k in weights.ARCH_KEYS})}
        del unet
        return (patched_model(model, motion, metadata, f"official checkpoint '{checkpoint_path}'",
                              "LAMP Apply Official Motion"),)


# ---------------------------------------------------------------------------------------------- LAMP DDIM
def lamp_ddim_function(adain: bool) -> Callable:
    """The k-diffusion sampler function of LAMP DDIM (ComfyUI layout in, engine loop inside)."""
    from lamp_model.sigma_sampling import sample_on_sigmas

    def sample(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
               callback: Callable | None = None, disable: Any = None) -> torch.Tensor:
        extra_args = extra_args or {}
        frames = x.shape[0]
        if frames < 2:
            raise ValueError("LAMP DDIM Sampler: the LATENT holds 1 frame; use LAMP First Frame (frames >= 2).")
        start = float(sigmas[0])
        noise = getattr(model, "noise", None)
        if torch.is_tensor(noise) and noise.shape == x.shape:  # official start: x_T = noise, frames' latent ignored
            latent = getattr(model, "latent_image", None)
            x = noise * math.sqrt(1 + start ** 2) + (latent if torch.is_tensor(latent) else 0)
        ones = x.new_ones(frames)

        def denoise(video: torch.Tensor, sigma: float) -> torch.Tensor:
            out = model(video[0].transpose(0, 1).to(x.dtype), ones * sigma, **extra_args)
            return out.transpose(0, 1).unsqueeze(0).float()

        def report(i: int, total: int, video: torch.Tensor, denoised: torch.Tensor) -> None:
            if callback is not None:
                callback({"x": video[0].transpose(0, 1), "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i],
                          "denoised": denoised[0].transpose(0, 1)})

        video = sample_on_sigmas(denoise, x.transpose(0, 1).unsqueeze(0), sigmas, adain=adain, callback=report)
        return video[0].transpose(0, 1).to(x.dtype)

    return sample


class LampDDIMSampler:
    """LAMP DDIM Sampler: a SAMPLER that runs the official LAMP loop (DDIM, AdaIN schedule, final AdaIN)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "adain": ("BOOLEAN", {"default": True, "tooltip": "AdaIN of every frame's latent to frame one during the "
                                                              "late steps and at the end (official: on)."}),
        }}

    RETURN_TYPES = ("SAMPLER",)
    RETURN_NAMES = ("sampler",)
    OUTPUT_TOOLTIPS = ("For SamplerCustomAdvanced with a LAMP MODEL, LAMP DDIM Sigmas and LAMP Shared Noise.",)
    FUNCTION = "make"
    CATEGORY = "LAMP"
    DESCRIPTION = ("The paper's sampler for ComfyUI's SamplerCustomAdvanced: deterministic DDIM with LAMP's "
                   "in-loop AdaIN schedule and final AdaIN; frame 0 stays the clean first frame. With LAMP DDIM "
                   "Sigmas and LAMP Shared Noise it gives the LAMP Sampler's result.")

    def make(self, adain: bool = True) -> tuple[Any]:
        return (host.k_sampler(lamp_ddim_function(bool(adain))),)


class LampDDIMSigmas:
    """LAMP DDIM Sigmas: the official DDIM schedule (50 steps: timesteps 981…1, final alpha ᾱ_0) as SIGMAS."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "steps": ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip": "Denoising steps (official 50)."}),
        }}

    RETURN_TYPES = ("SIGMAS",)
    RETURN_NAMES = ("sigmas",)
    OUTPUT_TOOLTIPS = ("steps + 1 sigmas of the official SD-1.x DDIM schedule (the last one is not 0).",)
    FUNCTION = "make"
    CATEGORY = "LAMP"
    DESCRIPTION = "The official LAMP/SD-1.x DDIM timesteps as sigmas for SamplerCustomAdvanced."

    def make(self, steps: int = 50) -> tuple[torch.Tensor]:
        from lamp_model.sigma_sampling import official_sigmas
        return (official_sigmas(int(steps)),)


NODE_CLASS_MAPPINGS = {
    "LAMP_ApplyMotion": LampApplyMotion,
    "LAMP_ApplyOfficialMotion": LampApplyOfficialMotion,
    "LAMP_DDIMSampler": LampDDIMSampler,
    "LAMP_DDIMSigmas": LampDDIMSigmas,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LAMP_ApplyMotion": "LAMP Apply Motion",
    "LAMP_ApplyOfficialMotion": "LAMP Apply Official Motion",
    "LAMP_DDIMSampler": "LAMP DDIM Sampler",
    "LAMP_DDIMSigmas": "LAMP DDIM Sigmas",
}
