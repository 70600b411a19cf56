"""LAMP Invert Video: DDIM inversion of a source clip, the start of a video edit (paper §5.2).

    Load Video → Get Video Components (or VHS Load Video) → LAMP Invert Video → noise ─┐
                                                                 first_frame → edit ─→ LAMP First Frame → LAMP Sampler

The node picks ``frames`` frames at ``stride`` from ``start`` of the IMAGE batch, fits them to the video size,
encodes them with the SD-1.x VAE and inverts them with the LAMP UNet (:func:`lamp_model.ddim_invert`, the empty
prompt, no CFG): the LAMP_MODEL's, or the native LAMP MODEL's (LAMP Apply Motion, see
:class:`nodes.native.NativeLampUNet`). Its ``noise`` output is an :class:`InvertedStart`: a NOISE that the LAMP
Sampler recognises and samples from with :func:`lamp_model.editing.edit_video` (no shared-noise mix, frame 0 =
the edited first frame). ComfyUI's execution cache keeps the inversion while only the edit (prompt, first frame) changes.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator, Sequence

import torch

from lamp_model.checks import nan_advice
from lamp_model.editing import EDIT_FRAMES, EDIT_STEPS, EDIT_STRIDE, clip_window
from lamp_model.frames import RESIZE_MODES

from . import host
from .first_frame import fit_image
from .motion_model import DTYPE_CHOICES, SD1_LATENT_SCALE, LampModel, resolve_dtype
from .shared_noise import LampNoise

log = logging.getLogger("ComfyUI-LAMP")
NODE = "LAMP Invert Video"


class InvertedStart(LampNoise):
    """A NOISE holding a DDIM-inverted clip latent ``[1, 4, F, h, w]`` (scaled by 0.18215) and its step count.

    The LAMP Sampler starts every frame after frame 0 from it, unmixed (``alpha`` = 0). As a plain ComfyUI NOISE
    (``generate_noise``) it gives the same latent with frames on the batch axis.
    """

    def __init__(self, latent: torch.Tensor, steps: int) -> None:
        super().__init__(seed=0, alpha=0.0)
        self.latent = latent.detach().float().cpu()
        self.steps = int(steps)

    def _check(self, shape: Sequence[int]) -> None:
        if tuple(shape) != tuple(self.latent.shape):
            _, c, f, h, w = self.latent.shape
            got = tuple(shape)
            raise ValueError(f"LAMP Sampler: the inverted start from {NODE} is {f} frames of {w * 8}x{h * 8} "
                             f"(latent {tuple(self.latent.shape)}), but the LATENT is {got[2]} frames of "
                             f"{got[4] * 8}x{got[3] * 8}; set LAMP First Frame to frames={f}, width={w * 8}, "
                             f"height={h * 8}.")

    def raw(self, shape: Sequence[int]) -> torch.Tensor:
        self._check(shape)
        return self.latent.clone()

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        samples = input_latent["samples"]
        if samples.ndim == 5:
            return self.raw(samples.shape)
        frames, channels, h, w = samples.shape
        return self.raw((1, channels, frames, h, w))[0].transpose(0, 1).contiguous()


def select_frames(images: Any, frames: int, start: int, stride: int, width: int, height: int,
                  resize: str) -> torch.Tensor:
    """The chosen frames of an IMAGE batch, fitted to ``width``×``height``: IMAGE ``[frames, height, width, 3]``."""
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        got = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"{NODE}: 'images' must be the source video as an IMAGE batch [frames,H,W,3] (Load Video → "
                         f"Get Video Components, or VHS Load Video), got {got}.")
    for name, value in (("width", width), ("height", height)):
        if value % 8:
            raise ValueError(f"{NODE}: {name} {value} is not a multiple of 8; use {value // 8 * 8} or "
                             f"{value // 8 * 8 + 8}.")
    try:
        index = clip_window(images.shape[0], frames, start, stride)
    except ValueError as e:
        raise ValueError(f"{NODE}: {e}.") from None
    try:
        return fit_image(images[index, :, :, :3].float(), width, height, resize)
    except ValueError as e:
        raise ValueError(str(e).replace("LAMP First Frame", NODE)) from None


class LampInvertVideo:
    """LAMP Invert Video: LAMP_MODEL or LAMP MODEL + source IMAGE batch + SD-1.x VAE + empty prompt → NOISE."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The source video as an IMAGE batch: Load Video → Get Video Components, "
                                            "or VHS Load Video."}),
            "vae": ("VAE", {"tooltip": "The VAE of the SD-1.x checkpoint the LAMP model is built on."}),
            "conditioning": ("CONDITIONING", {"tooltip": "The empty prompt '' encoded with the SD-1.x CLIP (the "
                                                         "official inversion prompt)."}),
            "frames": ("INT", {"default": EDIT_FRAMES, "min": 2, "max": 128,
                               "tooltip": "Frames to invert and edit (official editing: 24). LAMP First Frame must "
                                          "use the same count."}),
            "start": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "First source frame used."}),
            "stride": ("INT", {"default": EDIT_STRIDE, "min": 1, "max": 16,
                               "tooltip": "Take every stride-th source frame (official editing: 2)."}),
            "steps": ("INT", {"default": EDIT_STEPS, "min": 1, "max": 1000,
                              "tooltip": "DDIM inversion steps (official 50); the LAMP Sampler must use the same."}),
            "width": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 8,
                              "tooltip": "Video width in pixels (multiple of 8), as in LAMP First Frame."}),
            "height": ("INT", {"default": 320, "min": 64, "max": 2048, "step": 8,
                               "tooltip": "Video height in pixels (multiple of 8), as in LAMP First Frame."}),
            "resize": (list(RESIZE_MODES), {"default": "stretch", "tooltip": "How the source frames are fitted: "
                                            "stretch (official), center-crop, or pad with black."}),
            "dtype": (DTYPE_CHOICES, {"default": "auto", "tooltip": "Compute precision of a LAMP_MODEL. auto: fp16 "
                                                                    "where the GPU supports it, else bf16/fp32. A LAMP "
                                                                    "MODEL runs in ComfyUI's dtype for it."}),
        }, "optional": {
            "lamp_model": ("LAMP_MODEL", {"tooltip": "The LAMP model to edit with (LAMP Load Motion or LAMP Load "
                                                     "Official Checkpoint), ideally tuned on this clip. Connect this "
                                                     "or 'model'."}),
            "model": ("MODEL", {"tooltip": "Or a LAMP MODEL from LAMP Apply Motion / LAMP Apply Official Motion "
                                           "(the native path): the same LAMP UNet on the MODEL's weights, LoRAs "
                                           "included."}),
        }}

    RETURN_TYPES = ("NOISE", "IMAGE", "IMAGE")
    RETURN_NAMES = ("noise", "first_frame", "source")
    OUTPUT_TOOLTIPS = ("The inverted start: connect it to the LAMP Sampler's noise (with LAMP First Frame set to the "
                       "same frames and size).",
                       "The source's first chosen frame, fitted to the video size: the picture to edit (Canny, "
                       "ControlNet, img2img …).",
                       "All chosen source frames, fitted to the video size (to compare with the edit).")
    FUNCTION = "invert"
    CATEGORY = "LAMP"
    DESCRIPTION = ("Video editing: DDIM-inverts the chosen frames of a source video with the LAMP model (the empty "
                   "prompt, no guidance, as the official code). Feed its noise to the LAMP Sampler together with an "
                   "edited first frame: the edit then follows the source's motion. Progress every step; Cancel "
                   "stops it.")

    def invert(self, lamp_model: LampModel | None = None, images: torch.Tensor | None = None, vae: Any = None,
               conditioning: Any = None, frames: int = EDIT_FRAMES, start: int = 0, stride: int = EDIT_STRIDE,
               steps: int = EDIT_STEPS, width: int = 512, height: int = 320, resize: str = "stretch",
               dtype: str = "auto", model: Any = None) -> tuple[InvertedStart, torch.Tensor, torch.Tensor]:
        from lamp_model.inversion import ddim_invert

        from .sampler import conditioning_tensor

        if (lamp_model is None) == (model is None):
            raise ValueError(f"{NODE}: connect exactly one LAMP model: 'lamp_model' (LAMP Load Motion / LAMP Load "
                             "Official Checkpoint) or 'model' (a LAMP MODEL from LAMP Apply Motion), "
                             f"{'not both' if model is not None else 'none is connected'}.")
        if lamp_model is not None and not isinstance(lamp_model, LampModel):
            raise ValueError(f"{NODE}: 'lamp_model' must come from LAMP Load Motion or LAMP Load Official Checkpoint.")
        patch = None if model is None else _motion_patch(model)
        if not 1 <= int(steps) <= 1000:
            raise ValueError(f"{NODE}: steps must be between 1 and 1000, got {steps} (official 50).")
        pixels = select_frames(images, int(frames), int(start), int(stride), int(width), int(height), resize)
        context_dim = lamp_model.context_dim if patch is None else int(patch.unet.config["cross_attention_dim"])
        try:
            context = conditioning_tensor(conditioning, "conditioning", context_dim)
        except ValueError as e:
            raise ValueError(str(e).replace("LAMP Sampler", NODE)) from None
        encoded = vae.encode(pixels)
        if encoded.ndim == 5:  # video-capable VAEs may return [B,C,1,h,w]
            encoded = encoded[:, :, 0]
        if encoded.shape[1] != 4:
            raise ValueError(f"{NODE}: the VAE gives {encoded.shape[1]}-channel latents; LAMP needs the 4-channel "
                             "SD-1.x VAE. Connect the VAE of the SD-1.x checkpoint.")
        latents = (encoded.float().cpu() * SD1_LATENT_SCALE).transpose(0, 1).unsqueeze(0)  # [1,4,F,h,w]
        _, _, f, h, w = latents.shape
        device = host.torch_device()
        bar = host.progress(int(steps), previews=True)
        log.info("[LAMP] inverting %d frames %dx%d (start %d, stride %d), %d DDIM steps on %s", f, w * 8, h * 8,
                 start, stride, steps, device)
        with _unet_for_run(lamp_model, model, patch, dtype, f, h, w) as unet, torch.no_grad():
            compute = next(unet.parameters()).dtype
            inverted = ddim_invert(unet, latents, context, steps=int(steps), callback=host.callback_for(bar))
            inverted = inverted.float().cpu()
        if not torch.isfinite(inverted).all():
            raise FloatingPointError(f"{NODE}: the inversion holds NaN/inf values; {nan_advice(device, compute)}.")
        out = host.intermediate_device()
        return InvertedStart(inverted, int(steps)), pixels[:1].to(out), pixels.to(out)


def _motion_patch(model: Any) -> Any:
    """The LampMotionPatch of a native LAMP MODEL, or a clear error for a MODEL without LAMP."""
    from .native import motion_patch

    patch = motion_patch(model)
    if patch is None:
        raise ValueError(f"{NODE}: 'model' is a MODEL without LAMP motion; put LAMP Apply Motion (or LAMP Apply "
                         f"Official Motion) between the SD-1.x checkpoint loader and {NODE}, or connect a LAMP "
                         "Load Motion to 'lamp_model' instead.")
    return patch


@contextlib.contextmanager
def _unet_for_run(lamp_model: LampModel | None, model: Any, patch: Any, dtype: str, frames: int, h: int,
                  w: int) -> Iterator[torch.nn.Module]:
    """The LAMP UNet on the compute device for one inversion: the LAMP_MODEL's (in the chosen ``dtype``), or the
    native MODEL's, loaded by ComfyUI and run in ComfyUI's dtype for it."""
    from .native import NativeLampUNet

    device = host.torch_device()
    if lamp_model is not None:
        with lamp_model.on_device(device, resolve_dtype(dtype, device), frames, h, w) as unet:
            yield unet
        return
    host.load_for_run(model, (frames, 4, h, w))
    device = getattr(model, "load_device", device)
    patch.unet.to(device=device, dtype=host.compute_dtype(model))  # a no-op once ComfyUI has loaded it
    yield NativeLampUNet(patch, host.unet_module(model))


NODE_CLASS_MAPPINGS = {"LAMP_InvertVideo": LampInvertVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"LAMP_InvertVideo": "LAMP Invert Video"}
