"""LAMP training inside ComfyUI: learn a motion from a folder of clips in chunks you can stop and resume.

    LAMP Train Init (MODEL, CLIP, VAE, video folder, prompt, settings) → LAMP_TRAIN_STATE
    LAMP Train Steps (state, N)  → state + loss plot      (chain several, or re-queue the workflow)
    LAMP Validate (state, VAE, first frame) → video frames
    LAMP Save Motion (state, name) → models/lamp/<name>.safetensors

The engine does the work (:mod:`lamp_model.data`, :mod:`lamp_model.train`); these classes only convert
ComfyUI objects. Training runs with ``torch.inference_mode(False)`` (ComfyUI executes nodes in inference
mode) and grad enabled, after ComfyUI has unloaded its other models. Every step updates the progress bar,
which is also where Cancel is honoured. Nothing is lost but the steps since the last save: the run folder
(``output/lamp_training/<run>/``) gets the motion file and the exact training state every ``save_every``
steps, at the end of every chunk and when Cancel stops a chunk; Train Init continues that run when it finds
its state (``continue_run``).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lamp_model.frames import RESIZE_MODES

from . import host
from .motion_model import SD1_LATENT_SCALE, require_sd1, require_unet_weights

log = logging.getLogger("ComfyUI-LAMP")

CATEGORY = "LAMP/training"
STATE_TYPE = "LAMP_TRAIN_STATE"
PRECISIONS = ["auto", "no", "fp16", "bf16"]


@dataclass
class LampTrainState:
    """What flows through ``LAMP_TRAIN_STATE`` sockets: the trainer (UNet, optimizer, data cache) and the run.

    ``cond``/``uncond`` are the training prompt's and the empty prompt's embeddings (default validation
    prompts). The trainer is mutated in place by Train Steps: the socket always carries the latest weights.
    """

    trainer: Any
    run_dir: Path
    name: str
    prompt: str
    cond: torch.Tensor
    uncond: torch.Tensor
    saved_step: int = 0

    def report(self) -> str:
        t = self.trainer
        last = f", last loss {t.loss_history[-1]:.4f}" if t.loss_history else ""
        return (f"LAMP run '{self.name}' ({self.prompt!r}): step {t.global_step}{last}; saved at step "
                f"{self.saved_step} in {self.run_dir}")


def _engine():
    from lamp_model import data, train, weights  # lazily: keeps ComfyUI start-up fast
    return data, train, weights


def resolve_video_folder(path: str) -> Path:
    """A video folder as typed: absolute, or relative to ComfyUI's input folder."""
    text = (path or "").strip().strip('"').strip("'")
    if not text:
        raise ValueError("LAMP Train Init: no video folder given. Put 8-16 clips of one motion in a folder under "
                         f"ComfyUI's input folder ({host.input_dir()}) and enter its name, or an absolute path.")
    candidate = Path(os.path.expanduser(text))
    if not candidate.is_absolute():
        candidate = Path(host.input_dir()) / candidate
    if not candidate.exists():
        raise FileNotFoundError(f"LAMP Train Init: video folder '{text}' not found (looked at {candidate}). Put the "
                                f"clips in a folder under {host.input_dir()} or give an absolute path.")
    return candidate


def _encode_text(clip: Any, text: str) -> torch.Tensor:
    """SD-1.x CLIP embedding ``[1, L, D]`` of ``text`` through ComfyUI's CLIP object (a normal tensor)."""
    cond = clip.encode_from_tokens(clip.tokenize(text))
    cond = cond[0] if isinstance(cond, (tuple, list)) else cond
    return cond[:1].detach().float().cpu().clone()


def _vae_encoder(vae: Any):
    """A :data:`lamp_model.data.LatentEncoder` over ComfyUI's VAE (which returns the raw posterior mean)."""
    def encode(pixels: torch.Tensor) -> torch.Tensor:
        images = ((pixels + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).contiguous()  # [-1,1] NCHW -> IMAGE
        latents = vae.encode(images)
        if latents.ndim == 5:
            latents = latents[:, :, 0]
        if latents.shape[1] != 4:
            raise ValueError(f"LAMP Train Init: the VAE gives {latents.shape[1]}-channel latents; connect the VAE of "
                             "the SD-1.x checkpoint.")
        return latents.float().cpu().clone() * SD1_LATENT_SCALE
    return encode


def _base_hints(model: Any) -> dict:
    """Settings the UNet weights cannot tell (head count, norm groups), read from ComfyUI's UNet config."""
    unet_config = dict(getattr(getattr(model.model, "model_config", None), "unet_config", None) or {})
    hints = {}
    if isinstance(unet_config.get("num_heads"), int) and unet_config["num_heads"] > 0:
        hints["attention_head_dim"] = unet_config["num_heads"]
    if "norm_num_groups" in unet_config:
        hints["norm_num_groups"] = unet_config["norm_num_groups"]
    return hints


def _check_text_width(cond: torch.Tensor, model: Any) -> None:
    """Refuse a CLIP whose embeddings do not fit the MODEL's text context, before any frame is encoded."""
    width = host.unet_context_width(model)
    if width is not None and cond.shape[-1] != width:
        raise ValueError(f"LAMP Train Init: the CLIP gives {cond.shape[-1]}-wide embeddings but the MODEL needs {width} "
                         "(SD-1.x CLIP-L: 768). Connect the CLIP of the same SD-1.x checkpoint.")


def _loss_image(state: LampTrainState) -> torch.Tensor:
    _, train, _ = _engine()
    img = train.loss_plot(state.trainer.loss_history, title=f"LAMP {state.name}: loss per step")
    return torch.from_numpy(np.array(img, dtype=np.float32) / 255.0)[None]


def _checkpoint(state: LampTrainState) -> None:
    state.trainer.checkpoint()
    state.saved_step = state.trainer.global_step


def _check_state(state: Any, node: str) -> LampTrainState:
    if not isinstance(state, LampTrainState):
        raise ValueError(f"{node}: 'train_state' must come from LAMP Train Init (or LAMP Train Steps).")
    return state


class LampTrainInit:
    """LAMP Train Init: SD-1.x MODEL/CLIP/VAE + a video folder → a training state."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "model": ("MODEL", {"tooltip": "The SD-1.x model to learn the motion on (SD-1.4/1.5, or a fine-tune). "
                                           "The motion file works on any SD-1.x model afterwards."}),
            "clip": ("CLIP", {"tooltip": "The CLIP of the same SD-1.x checkpoint; encodes the training prompt."}),
            "vae": ("VAE", {"tooltip": "The VAE of the same SD-1.x checkpoint; encodes every frame once."}),
            "video_folder": ("STRING", {"default": "horse_run", "tooltip": "Folder of 8-16 clips of ONE motion (mp4, "
                                        "webm, mov, gif, or sub-folders of frames), or ONE video file to tune on for "
                                        "video editing (official: n_frames 24, stride 2, 500 steps, save every 50): "
                                        "under ComfyUI's input folder, or an absolute path."}),
            "prompt": ("STRING", {"default": "", "tooltip": "Training prompt. Empty: the folder name with _ → space "
                                  "(horse_run → 'horse run'), as the official code does."}),
            "run_name": ("STRING", {"default": "", "tooltip": "Name of the run folder output/lamp_training/<run_name> "
                                    "and of the motion file. Empty: the video folder's name."}),
            "n_frames": ("INT", {"default": 16, "min": 2, "max": 64, "tooltip": "Frames per training clip (official 16)."}),
            "stride": ("INT", {"default": 1, "min": 1, "max": 16, "tooltip": "Take every stride-th frame (official 1)."}),
            "width": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 8,
                              "tooltip": "Training width in pixels (official 512)."}),
            "height": ("INT", {"default": 320, "min": 64, "max": 2048, "step": 8,
                               "tooltip": "Training height in pixels (official 320)."}),
            "resize": (list(RESIZE_MODES), {"default": "stretch", "tooltip": "stretch to the size (official), or "
                                            "keep the aspect ratio and centre-crop or pad."}),
            "hflip": ("BOOLEAN", {"default": True, "tooltip": "Randomly mirror clips (official on). Turn it OFF for "
                                  "direction-specific motions such as 'turn left'."}),
            "learning_rate": ("FLOAT", {"default": 3e-5, "min": 1e-7, "max": 1e-2, "step": 1e-6, "round": 1e-7,
                                        "tooltip": "AdamW learning rate (official 3e-5)."}),
            "train_seed": ("INT", {"default": 33, "min": 0, "max": 0xFFFFFFFF, "tooltip": "Seed of every random "
                                   "draw (official 33); the same seed and settings give the same run."}),
            "mixed_precision": (PRECISIONS, {"default": "auto", "tooltip": "auto: fp16 on a GPU (official), none on "
                                             "CPU. bf16 is safer on recent GPUs."}),
            "gradient_checkpointing": ("BOOLEAN", {"default": True, "tooltip": "Recompute activations in the "
                                                   "backward pass: much less memory, ~30% slower (official on)."}),
            "use_8bit_adam": ("BOOLEAN", {"default": False, "tooltip": "8-bit AdamW (needs the bitsandbytes package): "
                                          "saves ~1.5 GB on SD-1.x."}),
            "save_every": ("INT", {"default": 500, "min": 0, "max": 100000, "tooltip": "Also save inside a chunk every "
                                   "this many steps (0: only at the end of each chunk and on Cancel)."}),
            "continue_run": ("BOOLEAN", {"default": True, "tooltip": "If the run folder holds a saved training state, "
                                         "continue exactly from it instead of starting over."}),
        }, "optional": {
            "skip_bad_clips": ("BOOLEAN", {"default": False, "tooltip": "Train on the readable clips when some cannot "
                                           "be decoded or are too short (they are listed in the report)."}),
        }}

    RETURN_TYPES = (STATE_TYPE, "STRING")
    RETURN_NAMES = ("train_state", "report")
    OUTPUT_TOOLTIPS = ("The training state: connect it to LAMP Train Steps.",
                       "What was loaded: clips, frames, prompt, and the step the run starts from.")
    FUNCTION = "init"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Prepares few-shot LAMP training: reads the video set, encodes every frame once with the VAE "
                   "and the prompt with CLIP, inflates the SD-1.x UNet with fresh motion layers and sets up the "
                   "optimizer (only the motion layers and the self-attention queries are trained). Continues a "
                   "saved run of the same name.")

    def init(self, model: Any, clip: Any, vae: Any, video_folder: str, prompt: str = "", run_name: str = "",
             n_frames: int = 16, stride: int = 1, width: int = 512, height: int = 320, resize: str = "stretch",
             hflip: bool = True, learning_rate: float = 3e-5, train_seed: int = 33, mixed_precision: str = "auto",
             gradient_checkpointing: bool = True, use_8bit_adam: bool = False, save_every: int = 500,
             continue_run: bool = True, skip_bad_clips: bool = False) -> tuple[LampTrainState, str]:
        data, train, weights = _engine()
        require_sd1(model)
        folder = resolve_video_folder(video_folder)
        name = (run_name or "").strip() or folder.stem
        if os.path.basename(name) != name or name in (".", ".."):
            raise ValueError(f"LAMP Train Init: run_name '{name}' must be a plain name (no folders).")
        device = host.torch_device()
        if mixed_precision == "auto":
            mixed_precision = "fp16" if device.type == "cuda" else "no"
        try:
            config = train.TrainConfig(n_frames=n_frames, stride=stride, width=width, height=height, resize=resize,
                                       hflip=hflip, learning_rate=learning_rate, seed=train_seed,
                                       mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing,
                                       use_8bit_adam=use_8bit_adam, save_every=save_every, validate_every=0)
            video_set = data.load_video_set(folder, n_frames, stride, width, height, resize, prompt or None,
                                            skip_bad=skip_bad_clips)
        except (ValueError, data.VideoSetError) as e:
            raise ValueError(f"LAMP Train Init: {e}") from None
        log.info("[LAMP] %s", video_set.summary())
        host.free_memory()  # unload ComfyUI's models: training needs the memory
        with torch.inference_mode(False):
            cond, uncond = _encode_text(clip, video_set.prompt), _encode_text(clip, "")
            _check_text_width(cond, model)
            frames = sum(len(c.frames) for c in video_set.clips) * (2 if hflip else 1)
            bar = host.progress(frames)
            clips = data.encode_video_set(video_set, _vae_encoder(vae), hflip=hflip,
                                          progress=lambda done, total: bar.update_absolute(done))
            text = video_set.prompt
            del video_set
            host.free_memory()  # the VAE and CLIP are done
            # Copies made here, outside inference mode, are normal tensors that autograd may use.
            state2d = host.patched_unet_state_dict(model)
            require_unet_weights(state2d, "LAMP Train Init")
            dtype = next(iter(state2d.values())).dtype
            try:
                unet_config, base = weights.load_base_unet2d(state2d, dtype=dtype, hints=_base_hints(model))
            except (weights.WeightsFormatError, ValueError) as e:
                raise ValueError(f"LAMP Train Init: the MODEL cannot be used for LAMP: {e}") from None
            del state2d
            unet = train.unet_for_training(unet_config, base, seed=train_seed).to(device)
            del base
            run_dir = Path(host.output_dir()) / "lamp_training" / name
            try:
                trainer = train.MotionTrainer(unet, clips, cond, config, output_dir=run_dir,
                                              motion_metadata={"motion_prompt": text})
            except (ValueError, RuntimeError) as e:
                raise ValueError(f"LAMP Train Init: {e}") from None
            resumed = ""
            if continue_run and (run_dir / train.STATE_FILE).is_file():
                try:
                    trainer.load(run_dir / train.STATE_FILE)
                except (ValueError, KeyError) as e:
                    raise ValueError(f"LAMP Train Init: cannot continue the run in {run_dir}: {e}. Turn off "
                                     "continue_run or choose another run_name.") from None
                resumed = f"\ncontinuing the saved run at step {trainer.global_step}"
        state = LampTrainState(trainer, run_dir, name, text, cond, uncond, saved_step=trainer.global_step)
        report = f"{clips_report(clips, config)}{resumed}\n{state.report()}"
        log.info("[LAMP] %s", report)
        return state, report


def clips_report(clips: Any, config: Any) -> str:
    lines = [f"{len(clips)} clip(s), {config.n_frames} frames at stride {config.stride}, "
             f"{config.width}x{config.height}, hflip {'on' if config.hflip else 'off'}"]
    lines += [f"  {c.name}: {c.num_frames} usable frames" for c in clips.clips]
    return "\n".join(lines)


class LampTrainSteps:
    """LAMP Train Steps: run N training steps on a training state."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "train_state": (STATE_TYPE, {"tooltip": "From LAMP Train Init or another LAMP Train Steps."}),
            "steps": ("INT", {"default": 250, "min": 1, "max": 100000, "tooltip": "Steps in this chunk. The author "
                              "advises 10k-20k steps in total; queue the workflow again to train on."}),
            "offload_after": ("BOOLEAN", {"default": True, "tooltip": "Move the UNet and optimizer to the CPU after "
                                          "the chunk, so other workflows get the GPU memory back."}),
        }}

    RETURN_TYPES = (STATE_TYPE, "IMAGE", "STRING")
    RETURN_NAMES = ("train_state", "loss_plot", "report")
    OUTPUT_TOOLTIPS = ("The same training state, trained further (connect Save Motion, Validate or more steps).",
                       "The loss of every step so far (raw and smoothed).", "Step, loss and where it was saved.")
    FUNCTION = "train"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Trains the LAMP motion layers for N steps. Progress every step; Cancel stops after the current "
                   "step and saves. The motion file and exact training state are saved in the run folder at the "
                   "end of the chunk (and every save_every steps).")

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> float:
        return float("nan")  # always run: the state it trains is the same object every time

    def train(self, train_state: LampTrainState, steps: int = 250, offload_after: bool = True
              ) -> tuple[LampTrainState, torch.Tensor, str]:
        state = _check_state(train_state, "LAMP Train Steps")
        trainer = state.trainer
        host.free_memory()
        device = host.torch_device()
        bar = host.progress(int(steps))
        with torch.inference_mode(False), torch.enable_grad():
            trainer.to(device)
            try:
                trainer.train(int(steps), callback=lambda t, loss: bar.update(1))
            except host.Interrupted:
                log.info("[LAMP] training cancelled at step %d; saving", trainer.global_step)
                _checkpoint(state)
                raise
            except torch.OutOfMemoryError:
                _checkpoint(state)
                raise MemoryError("LAMP Train Steps: out of GPU memory. The run is saved; lower n_frames or the size, "
                                  "turn on gradient_checkpointing / 8-bit Adam, or use bf16, and Train Init "
                                  "continues it.") from None
            except FloatingPointError as e:
                raise ValueError(f"LAMP Train Steps: {e}") from None
            else:
                _checkpoint(state)
            finally:
                if offload_after:
                    trainer.to(host.offload_device())
                    host.empty_cache()
        report = state.report()
        log.info("[LAMP] %s", report)
        return state, _loss_image(state), report


class LampSaveMotion:
    """LAMP Save Motion: training state → compact motion file in models/lamp."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "train_state": (STATE_TYPE, {"tooltip": "From LAMP Train Steps."}),
            "motion_name": ("STRING", {"default": "", "tooltip": "File name in models/lamp (empty: the run name). "
                                       "'.safetensors' is added."}),
            "add_step_to_name": ("BOOLEAN", {"default": True, "tooltip": "Append _step<N> so several saves of one "
                                             "run do not overwrite each other."}),
            "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace an existing file of that name."}),
        }}

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("motion_file",)
    OUTPUT_TOOLTIPS = ("The written motion file's name (as LAMP Load Motion lists it after a refresh).",)
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = ("Writes the learned motion as a compact motion file (~0.5 GB fp16 for SD-1.x) into models/lamp, "
                   "for LAMP Load Motion on any SD-1.x model. Also saves the run's training state.")

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> float:
        return float("nan")

    def save(self, train_state: LampTrainState, motion_name: str = "", add_step_to_name: bool = True,
             overwrite: bool = False) -> dict:
        state = _check_state(train_state, "LAMP Save Motion")
        name = (motion_name or "").strip() or state.name
        if name.endswith(".safetensors"):
            name = name[: -len(".safetensors")]
        if os.path.basename(name) != name or name in (".", ".."):
            raise ValueError(f"LAMP Save Motion: motion_name '{name}' must be a plain file name (no folders).")
        if add_step_to_name:
            name = f"{name}_step{state.trainer.global_step}"
        out = Path(host.lamp_folder()) / f"{name}.safetensors"
        if out.exists() and not overwrite:
            raise FileExistsError(f"LAMP Save Motion: {out} already exists. Choose another motion_name or turn on "
                                  "'overwrite'.")
        state.trainer.save_motion(out)
        if state.saved_step != state.trainer.global_step:
            _checkpoint(state)
        message = f"wrote {out} (step {state.trainer.global_step})"
        log.info("[LAMP] %s", message)
        return {"ui": {"text": [message]}, "result": (out.name,)}


class LampTrainValidate:
    """LAMP Validate: animate a first frame with the weights being trained."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "train_state": (STATE_TYPE, {"tooltip": "From LAMP Train Steps."}),
            "vae": ("VAE", {"tooltip": "The SD-1.x VAE (encodes the first frame, decodes the video)."}),
            "first_frame": ("IMAGE", {"tooltip": "Frame one of the test video (the first image of a batch is used); "
                                      "stretched to the training size."}),
            "steps": ("INT", {"default": 25, "min": 1, "max": 1000, "tooltip": "Denoising steps (official 50; fewer "
                              "is enough to judge the motion)."}),
            "cfg": ("FLOAT", {"default": 12.5, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": "Guidance scale "
                              "(official 12.5)."}),
            "sample_seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "tooltip": "Noise seed; keep it "
                                    "fixed to compare checkpoints."}),
        }, "optional": {
            "positive": ("CONDITIONING", {"tooltip": "Prompt of the test video (SD-1.x CLIPTextEncode). Default: "
                                          "the training prompt."}),
            "negative": ("CONDITIONING", {"tooltip": "Negative prompt. Default: the empty prompt."}),
        }}

    RETURN_TYPES = ("IMAGE", "LATENT")
    RETURN_NAMES = ("frames", "latent")
    OUTPUT_TOOLTIPS = ("The test video as an IMAGE batch (frame one first).", "Its video latent [frames,4,h,w].")
    FUNCTION = "validate"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Samples a short test video from a first frame with the motion being trained (official LAMP "
                   "sampling: shared noise, frame one pinned, AdaIN), to judge progress between chunks.")

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> float:
        return float("nan")

    def validate(self, train_state: LampTrainState, vae: Any, first_frame: torch.Tensor, steps: int = 25,
                 cfg: float = 12.5, sample_seed: int = 0, positive: Any = None, negative: Any = None
                 ) -> tuple[torch.Tensor, dict]:
        from lamp_model.noise import make_raw_noise
        from lamp_model.sampling import sample_video

        state = _check_state(train_state, "LAMP Validate")
        trainer = state.trainer
        if not torch.is_tensor(first_frame) or first_frame.ndim != 4:
            raise ValueError("LAMP Validate: 'first_frame' must be an IMAGE.")
        cfg_ = trainer.config
        pixels = torch.nn.functional.interpolate(first_frame[:1, :, :, :3].movedim(-1, 1).float(),
                                                 size=(cfg_.height, cfg_.width), mode="bilinear", antialias=True)
        first = _vae_encoder(vae)(pixels.clamp(0, 1) * 2 - 1)[:, :, None]  # [1,4,1,h,w], scaled
        cond = positive[0][0][:1].float() if positive is not None else state.cond
        uncond = negative[0][0][:1].float() if negative is not None else state.uncond
        if cond.shape[1] != uncond.shape[1]:
            n = np.lcm(cond.shape[1], uncond.shape[1])
            cond, uncond = cond.repeat(1, n // cond.shape[1], 1), uncond.repeat(1, n // uncond.shape[1], 1)
        device = host.torch_device()
        noise = make_raw_noise(sample_seed, (1, 4, cfg_.n_frames, *first.shape[-2:]))
        bar = host.progress(int(steps), previews=True)
        with torch.inference_mode(False):
            trainer.to(device)
            try:
                with trainer.evaluating() as unet:
                    latents = sample_video(unet, first.to(device), cond.to(device), uncond.to(device), noise,
                                           steps=int(steps), guidance_scale=float(cfg), callback=host.callback_for(bar))
            finally:
                trainer.to(host.offload_device())
                host.empty_cache()
        raw = (latents[0].transpose(0, 1).float() / SD1_LATENT_SCALE).cpu()  # [F,4,h,w]
        frames = vae.decode(raw)
        if frames.ndim == 5:
            frames = frames.reshape(-1, *frames.shape[-3:])
        return frames.float().to(host.intermediate_device()), {"samples": raw.to(host.intermediate_device())}


NODE_CLASS_MAPPINGS = {
    "LAMP_TrainInit": LampTrainInit,
    "LAMP_TrainSteps": LampTrainSteps,
    "LAMP_SaveMotion": LampSaveMotion,
    "LAMP_TrainValidate": LampTrainValidate,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LAMP_TrainInit": "LAMP Train Init",
    "LAMP_TrainSteps": "LAMP Train Steps",
    "LAMP_SaveMotion": "LAMP Save Motion",
    "LAMP_TrainValidate": "LAMP Validate (training)",
}
