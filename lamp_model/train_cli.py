"""``python -m lamp_model.train`` (also ``python -m lamp_model train``): learn a motion from a video set.

    python -m lamp_model.train --base ./stable-diffusion-v1-5 --videos ./videos/horse_run --output-dir runs/horse
    accelerate launch -m lamp_model.train --config horse.yaml          # several GPUs, same code

Settings come from flags and/or a YAML file (``--config``; keys = flag names with ``_``), flags win. Every
:class:`~lamp_model.train.TrainConfig` field is a flag (``--steps``, ``--learning-rate``, ``--n-frames``,
``--no-hflip``…). What is written to ``--output-dir``: ``motion.safetensors`` (the compact motion file,
updated every ``--save-every`` steps), ``train_state.safetensors`` (for ``--resume``), ``loss.jsonl``,
``loss.png`` and ``samples/step-<N>/`` (validation videos from ``--validation-image`` first frames).
``--preset editing`` starts from the official one-clip settings for video editing (``--videos clip.mp4``, 24
frames at stride 2, 500 steps, a save every 50; see :data:`~lamp_model.train.PRESETS`). ``--preset toy`` trains the
toy world (:mod:`lamp_model.toy`) on CPU: its shipped base, codec and text encoder and the toy stage-2 settings,
each clip with the prompt of its file name (``python -m lamp_model.toy.clips`` renders such a folder).

Models: the UNet and VAE come from ``--base`` (a diffusers SD-1.x folder, or a single-file SD-1.x
checkpoint); the prompt embeddings from the base folder's CLIP text encoder (needs the optional package
``transformers``), from ``--text-encoder <folder with tokenizer/ and text_encoder/>``, or from
``--text-embeddings FILE.safetensors`` (prompt -> ``[L, D]`` tensor; ``""`` is the empty prompt). A
single-file checkpoint carries no tokenizer, so it needs one of the last two. ``--model-family`` says which
kind of models these are (:data:`MODEL_FAMILIES`: ``sd1``, or ``toy``, set by ``--preset toy``).

Prompts: one for the whole folder (``--prompt``, default the folder name), or with ``--prompt-from-filenames``
one per clip, read from its file name (:func:`~lamp_model.data.prompt_from_filename`: ``03_a_horse_running.mp4``
-> "a horse running"); validation images then need their own ``--validation-prompt``.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from .checks import as_bool, as_float, as_int, one_of, writable_dir
from .cli import ArgumentParser, describe, fail
from .train import (PRESETS, STATE_FILE, MotionTrainer, TrainConfig, check_state_file, make_validator,
                    unet_for_training)

log = logging.getLogger("lamp_model.train")

#: The SD-1.x VAE (diffusers ``AutoencoderKL`` config), used to read the VAE of a single-file checkpoint offline.
SD1_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": 512, "layers_per_block": 2,
    "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32, "act_fn": "silu", "scaling_factor": 0.18215,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
TextEncoder = Callable[[Sequence[str]], torch.Tensor]
#: ``(encode, decode)``: a :data:`~lamp_model.data.LatentEncoder` and ``decode(latents [1, C, F, h, w]) -> frames
#: [F, H, W, 3]`` in 0..1 (validation videos).
Codec = tuple[Callable[[torch.Tensor], Any], Callable[[torch.Tensor], torch.Tensor]]


class TrainSetupError(RuntimeError):
    """A missing model part or a bad setting; the message says what to give instead."""


# ---------------------------------------------------------------------------------------------- arguments
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    """Every option defaults to "not given" (argparse.SUPPRESS), so YAML values can fill the gaps."""
    p = ArgumentParser(prog="python -m lamp_model.train", description="LAMP few-shot motion training.",
                       argument_default=argparse.SUPPRESS)
    p.add_argument("--config", help="YAML file with any of these settings (keys as the flags, '_' for '-')")
    p.add_argument("--base", help="SD-1.x base: diffusers folder or single-file checkpoint (.safetensors/.ckpt)")
    p.add_argument("--videos", help="folder of 8-16 clips of one motion (or one video file)")
    p.add_argument("--preset", choices=sorted({*PRESETS, *COMMAND_PRESETS}),
                   help="starting settings: 'editing' = the official one-clip tuning for video editing "
                        "(24 frames at stride 2, 500 steps, save every 50); 'toy' = the toy world on CPU (its "
                        "shipped base, codec and text encoder, the toy stage-2 settings, prompts from the file "
                        "names); other flags override it")
    p.add_argument("--model-family", choices=sorted(MODEL_FAMILIES),
                   help="what --base, --vae and --text-encoder are: sd1 (default) or toy (set by --preset toy)")
    p.add_argument("--output-dir", help="where motion.safetensors, train_state.safetensors, logs and samples go")
    p.add_argument("--prompt", help="training prompt (default: the video folder's name with _ -> space)")
    p.add_argument("--prompt-from-filenames", action=argparse.BooleanOptionalAction,
                   help="train each clip with its own prompt, its file name without a leading number "
                        "(03_a_horse_running.mp4 -> 'a horse running'); on with --preset toy")
    p.add_argument("--resume", nargs="?", const="auto",
                   help="continue exactly from a training state (default: <output-dir>/train_state.safetensors)")
    p.add_argument("--vae", help="VAE to use instead of the base's: diffusers folder or single .safetensors")
    p.add_argument("--text-encoder", help="folder with tokenizer/ and text_encoder/ (diffusers layout; toy: a "
                                          "folder with text_encoder.safetensors, default the base's folder)")
    p.add_argument("--text-embeddings", help="safetensors file: prompt -> [L, D] embedding ('' = empty prompt)")
    p.add_argument("--skip-bad-clips", action="store_true", help="train on the good clips when some are unreadable")
    p.add_argument("--validation-image", action="append", help="first frame to animate at validation (repeatable)")
    p.add_argument("--validation-prompt", action="append",
                   help="prompt for the matching --validation-image (default: the training prompt)")
    p.add_argument("--validation-steps", type=int, help="denoising steps per validation sample (default 50)")
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance at validation (default 12.5)")
    p.add_argument("--validation-format", choices=["mp4", "gif", "webp"], help="validation video format (mp4)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING"], help="logging level (INFO)")
    group = p.add_argument_group("training settings (TrainConfig)")
    for field in dataclasses.fields(TrainConfig):
        default = field.default
        if field.name == "mixed_precision":
            group.add_argument(_flag(field.name), choices=["auto", "no", "fp16", "bf16"],
                               help="autocast dtype; auto = fp16 on CUDA (official), no on CPU")
        elif isinstance(default, bool):
            group.add_argument(_flag(field.name), action=argparse.BooleanOptionalAction, help=f"default {default}")
        else:
            kind = float if isinstance(default, float) else str if isinstance(default, str) else int
            group.add_argument(_flag(field.name), type=kind, help=f"default {default}")
    return p


RUN_DEFAULTS: dict[str, Any] = {"prompt": None, "resume": None, "vae": None, "text_encoder": None,
                                "text_embeddings": None, "skip_bad_clips": False, "validation_image": [],
                                "validation_prompt": [], "validation_steps": 50, "guidance_scale": 12.5,
                                "validation_format": "mp4", "log_level": "INFO", "mixed_precision": "auto",
                                "model_family": "sd1", "prompt_from_filenames": False}

#: Presets that also choose models (so they live outside the engine's :data:`~lamp_model.train.PRESETS`):
#: name -> ``"module:function"``, imported only when chosen; the function gets the settings given (flags and
#: YAML) and returns the preset's settings, which those given override.
COMMAND_PRESETS: dict[str, str] = {"toy": "lamp_model.toy.train_preset:preset_settings"}


def _resolve(reference: str) -> Any:
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


def preset_settings(name: str | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of preset ``name`` (``{}`` for none) given the settings the user gave."""
    if name is None:
        return {}
    if name in PRESETS:
        return dict(PRESETS[name])
    if name in COMMAND_PRESETS:
        try:
            return _resolve(COMMAND_PRESETS[name])(given)
        except (TypeError, ValueError) as err:
            raise TrainSetupError(f"--preset {name}: {err}") from err
    raise TrainSetupError(f"unknown preset {name!r}; choose one of {sorted({*PRESETS, *COMMAND_PRESETS})}")


def resolve_settings(argv: Sequence[str] | None) -> tuple[dict[str, Any], TrainConfig]:
    """Merge defaults < YAML < flags; returns the run settings and the :class:`TrainConfig`."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    if "config" in given:
        import yaml

        path = Path(given.pop("config"))
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise TrainSetupError(f"cannot read the YAML config {path}: {err}") from err
        if not isinstance(loaded, dict):
            raise TrainSetupError(f"{path}: the YAML config must be a mapping of settings, got {type(loaded).__name__}")
        known = {a.dest for a in parser._actions} - {"help", "config"}
        unknown = sorted(k for k in (str(k).replace("-", "_") for k in loaded) if k not in known)
        if unknown:
            raise TrainSetupError(f"{path}: unknown setting(s) {unknown}; valid: {sorted(known)}")
        values.update({str(k).replace("-", "_"): v for k, v in loaded.items()})
    values.update(given)
    preset = values.pop("preset", None)
    settings = {**RUN_DEFAULTS, **preset_settings(preset, values), **values}
    for key in ("validation_image", "validation_prompt"):
        if isinstance(settings[key], str):
            settings[key] = [settings[key]]
    missing = [_flag(k) for k in ("base", "videos", "output_dir") if not settings.get(k)]
    if missing:
        raise TrainSetupError(f"missing {', '.join(missing)} (give them as flags or in the --config YAML)")
    if settings["mixed_precision"] == "auto":
        settings["mixed_precision"] = "fp16" if torch.cuda.is_available() else "no"
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        config = TrainConfig.from_dict({k: v for k, v in settings.items() if k in fields})
        settings["validation_steps"] = as_int("validation_steps", settings["validation_steps"], 1, 1000,
                                              hint="official 50")
        settings["guidance_scale"] = as_float("guidance_scale", settings["guidance_scale"], 0.0, hint="official 12.5")
        settings["skip_bad_clips"] = as_bool("skip_bad_clips", settings["skip_bad_clips"])
        one_of("validation_format", settings["validation_format"], ("mp4", "gif", "webp"))
        one_of("log_level", settings["log_level"], ("DEBUG", "INFO", "WARNING"))
        one_of("model_family", settings["model_family"], tuple(MODEL_FAMILIES))
        settings["prompt_from_filenames"] = as_bool("prompt_from_filenames", settings["prompt_from_filenames"])
    except (TypeError, ValueError) as err:
        raise TrainSetupError(str(err)) from err
    if settings["prompt_from_filenames"] and settings["prompt"]:
        raise TrainSetupError("--prompt and --prompt-from-filenames both given: keep one (--no-prompt-from-filenames "
                              "trains every clip with --prompt)")
    if settings["prompt_from_filenames"] and settings["validation_image"] and not settings["validation_prompt"]:
        raise TrainSetupError("with --prompt-from-filenames every --validation-image needs its --validation-prompt "
                              "(there is no single training prompt to default to)")
    return settings, config


def preflight(settings: dict[str, Any], config: TrainConfig) -> None:
    """The checks that need the file system, done before any clip is decoded or model loaded: the output
    folder is writable, the base is an SD-1.x UNet (header only), precomputed text embeddings fit its context
    width, ``--resume`` names a training state, and the validation images open."""
    from PIL import Image
    from safetensors import safe_open

    from .weights import base_context_width

    writable_dir(settings["output_dir"], "--output-dir")
    width = base_context_width(settings["base"])
    if settings["text_embeddings"]:
        path = Path(settings["text_embeddings"])
        if not path.is_file():
            raise TrainSetupError(f"--text-embeddings file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                shapes = {k: handle.get_slice(k).get_shape() for k in handle.keys()}
        except Exception as err:  # safetensors raises its own error types
            raise TrainSetupError(f"--text-embeddings {path}: not a readable safetensors file ({err})") from None
        wrong = {k: s for k, s in shapes.items() if len(s) not in (2, 3) or s[-1] != width}
        if wrong:
            prompt, shape = next(iter(wrong.items()))
            raise TrainSetupError(f"--text-embeddings {path.name}: the embedding of {prompt!r} has shape {shape}, "
                                  f"but the base UNet needs [tokens, {width}] (its text context width); encode the "
                                  "prompts with the base model's own text encoder")
    if settings["resume"]:
        auto = settings["resume"] == "auto"
        check_state_file(Path(settings["output_dir"]) / STATE_FILE if auto else Path(settings["resume"]))
    for image in settings["validation_image"]:
        try:
            with Image.open(image) as img:
                img.verify()
        except OSError as err:
            raise TrainSetupError(f"--validation-image {image}: not a readable picture ({type(err).__name__})") from None
    model_family(settings["model_family"]).check(settings)


# ---------------------------------------------------------------------------------------------- models
def load_vae(base: Path, vae: str | None) -> torch.nn.Module:
    """A diffusers ``AutoencoderKL``: from ``--vae`` or the base (``vae/`` folder, or the VAE inside a
    single-file checkpoint, converted offline with diffusers' converter and the SD-1.x VAE config)."""
    from diffusers import AutoencoderKL

    source = Path(vae) if vae else base
    if source.is_dir():
        folder = source / "vae" if (source / "vae").is_dir() else source
        if not (folder / "config.json").is_file():
            raise TrainSetupError(f"no VAE in {source} (expected vae/config.json); give one with --vae")
        return AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    from .weights import read_weights

    state = read_weights(source)  # a damaged file is one clear error, not a safetensors/pickle traceback
    if not any(k.startswith("first_stage_model.") for k in state):  # a bare VAE file: give it the LDM prefix
        state = {f"first_stage_model.{k}": v for k, v in state.items()}
    try:
        converted = convert_ldm_vae_checkpoint(state, dict(SD1_VAE_CONFIG))
        model = AutoencoderKL(**SD1_VAE_CONFIG)
        model.load_state_dict(converted, strict=True)
    except (KeyError, RuntimeError) as err:
        raise TrainSetupError(f"{source}: holds no usable SD-1.x VAE ({type(err).__name__}: {str(err)[:200]}); "
                              "give a diffusers VAE folder or VAE file with --vae") from err
    return model


def text_encoder_from_folder(folder: Path, device: torch.device, alternative: str = "--text-embeddings") -> TextEncoder:
    """CLIP tokenizer + text encoder from a diffusers-layout folder (needs ``transformers``). ``alternative``:
    the command's other way to give prompts, named in the messages ("" when it has none)."""
    other = f", or pass {alternative}" if alternative else ""
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError as err:
        raise TrainSetupError("encoding prompts with the base's CLIP text encoder needs the optional package "
                              f"'transformers' (pip install transformers){other}") from err
    if not (folder / "tokenizer").is_dir() or not (folder / "text_encoder").is_dir():
        raise TrainSetupError(f"{folder} has no tokenizer/ and text_encoder/ folders; pass --text-encoder <a "
                              f"diffusers SD-1.x folder>{other}")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), subfolder="tokenizer", local_files_only=True)
    model = CLIPTextModel.from_pretrained(str(folder), subfolder="text_encoder", local_files_only=True)
    model.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def encode(prompts: Sequence[str]) -> torch.Tensor:
        ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        return model(ids.to(device))[0].float().cpu()

    return encode


def text_embeddings_from_file(path: Path) -> TextEncoder:
    """Prompt embeddings precomputed into a safetensors file (key = prompt text, value ``[L, D]``)."""
    from .weights import read_weights

    if not path.is_file():
        raise TrainSetupError(f"--text-embeddings file not found: {path}")
    table = read_weights(path)

    def encode(prompts: Sequence[str]) -> torch.Tensor:
        missing = [p for p in prompts if p not in table]
        if missing:
            raise TrainSetupError(f"{path.name} has no embedding for {missing}; it holds {sorted(table)[:10]}")
        return torch.stack([table[p].reshape(table[p].shape[-2:]).float() for p in prompts])

    return encode


def make_text_encoder(settings: dict[str, Any], device: torch.device, family: "ModelFamily | None" = None) -> TextEncoder:
    """``--text-embeddings`` when given, else the text encoder of the model family (default SD-1.x)."""
    if settings["text_embeddings"]:
        return text_embeddings_from_file(Path(settings["text_embeddings"]))
    return (family or MODEL_FAMILIES["sd1"]).text_encoder(settings, device)


def sd1_text_encoder(settings: dict[str, Any], device: torch.device) -> TextEncoder:
    """The CLIP text encoder of ``--text-encoder`` or of the base folder."""
    folder = Path(settings["text_encoder"] or settings["base"])
    if not folder.is_dir():
        raise TrainSetupError(f"{folder.name} is a single-file checkpoint, which carries no tokenizer: pass "
                              "--text-encoder <diffusers SD-1.x folder> or --text-embeddings <file>")
    return text_encoder_from_folder(folder, device)


def load_noise_scheduler(base: Path) -> Any:
    """The base's own training scheduler config when it has one (as the official script), else SD-1.x's."""
    from .train import default_noise_scheduler

    if (base / "scheduler" / "scheduler_config.json").is_file():
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_pretrained(str(base), subfolder="scheduler", local_files_only=True)
    return default_noise_scheduler()


def sd1_codec(settings: dict[str, Any], device: torch.device) -> Codec:
    """The diffusers VAE of ``--vae`` or of the base, on ``device``: posterior mean and std, scaled."""
    from .data import diffusers_vae_decoder, diffusers_vae_encoder

    vae = load_vae(Path(settings["base"]), settings["vae"]).to(device).eval().requires_grad_(False)
    return diffusers_vae_encoder(vae), diffusers_vae_decoder(vae, float(vae.config.scaling_factor))


def sd1_base_unet(base: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from .weights import load_base_unet2d

    return load_base_unet2d(base, dtype=torch.float32, device="cpu")


def sd1_noise_scheduler(base: Path) -> Any:
    """The base folder's scheduler (see :func:`load_noise_scheduler`); ``None`` (the trainer's SD-1.x default)
    for a single-file base."""
    return load_noise_scheduler(base) if base.is_dir() else None


@dataclass(frozen=True)
class ModelFamily:
    """The models one kind of base brings to training, each built only when needed (so the text encoder can
    be freed before the VAE is loaded): ``text_encoder(settings, device)``, ``codec(settings, device)``
    (:data:`Codec`), ``base_unet(base) -> (config, 2-D state dict)`` on the CPU in fp32,
    ``noise_scheduler(base)`` (``None``: the SD-1.x training schedule), and ``check(settings)``, run by
    :func:`preflight` before any clip is decoded, which raises :class:`TrainSetupError` for settings the family
    cannot use."""

    text_encoder: Callable[[dict[str, Any], torch.device], TextEncoder]
    codec: Callable[[dict[str, Any], torch.device], Codec]
    base_unet: Callable[[Path], tuple[dict[str, Any], dict[str, torch.Tensor]]]
    noise_scheduler: Callable[[Path], Any]
    check: Callable[[dict[str, Any]], None] = lambda settings: None


#: ``--model-family``: ``sd1`` (diffusers VAE, CLIP text encoder) or ``toy`` (:mod:`lamp_model.toy.train_preset`,
#: imported only when chosen: the fixed toy codec and toy text encoder).
MODEL_FAMILIES: dict[str, ModelFamily | str] = {
    "sd1": ModelFamily(sd1_text_encoder, sd1_codec, sd1_base_unet, sd1_noise_scheduler),
    "toy": "lamp_model.toy.train_preset:TOY_FAMILY",
}


def model_family(name: str) -> ModelFamily:
    """The :class:`ModelFamily` called ``name`` (imported on first use)."""
    family = MODEL_FAMILIES[name]
    return _resolve(family) if isinstance(family, str) else family


def _posterior_mean(encoded: Any) -> torch.Tensor:
    return encoded[0] if isinstance(encoded, tuple) else encoded


def clip_prompts(video_set: Any, encode_text: TextEncoder) -> tuple[list[str], torch.Tensor]:
    """``--prompt-from-filenames``: each clip's prompt (:func:`~lamp_model.data.prompt_from_filename`) and their
    embeddings ``[clips, L, D]``; a clip whose name gives no usable prompt is one clear error naming it."""
    from .data import prompt_from_filename

    prompts, embeddings = [], []
    for clip in video_set.clips:
        prompt = prompt_from_filename(clip.name)
        if not prompt:
            raise TrainSetupError(f"clip {clip.name}: its name gives no prompt; name it after what it shows, e.g. "
                                  "00_a_horse_running.mp4 (or train with one --prompt)")
        try:
            embeddings.append(encode_text([prompt]))
        except ValueError as err:
            raise TrainSetupError(f"clip {clip.name}: its prompt {prompt!r} (from the file name) cannot be encoded: "
                                  f"{err}; rename the clip") from None
        prompts.append(prompt)
    return prompts, torch.cat(embeddings)


def _load_first_frame(path: str, width: int, height: int) -> torch.Tensor:
    """A validation first frame as pixels ``[1, 3, H, W]`` in [-1, 1], stretched to the training size
    (as the official validation does)."""
    from PIL import Image

    from .data import frames_to_pixels, resize_frame

    try:
        with Image.open(path) as img:
            arr = resize_frame(img, width, height)
    except OSError as err:
        raise TrainSetupError(f"--validation-image {path}: cannot be read ({err})") from err
    return frames_to_pixels(arr[None])


# ---------------------------------------------------------------------------------------------- run
def run(settings: dict[str, Any], config: TrainConfig) -> Path:
    """Train as configured; returns the motion file written last."""
    from accelerate import Accelerator

    from .data import encode_video_set, load_video_set

    preflight(settings, config)
    family = model_family(settings["model_family"])
    accelerator = Accelerator(mixed_precision="no")  # autocast is done by the trainer (--mixed-precision)
    device = accelerator.device
    out = Path(settings["output_dir"])
    base = Path(settings["base"])
    say = log.info if accelerator.is_main_process else log.debug

    video_set = load_video_set(settings["videos"], config.n_frames, config.stride, config.width, config.height,
                               config.resize, settings["prompt"], config.max_clip_frames, settings["skip_bad_clips"])
    say(video_set.summary())
    prompt = video_set.prompt
    encode_text = make_text_encoder(settings, device, family)
    if settings["prompt_from_filenames"]:
        clip_prompt_list, prompt_embeds = clip_prompts(video_set, encode_text)
        say("prompts from the file names: %s", ", ".join(repr(p) for p in clip_prompt_list))
    else:
        clip_prompt_list, prompt_embeds = [], encode_text([prompt])
    images = settings["validation_image"]
    prompts = settings["validation_prompt"] or [prompt] * len(images)
    if len(prompts) != len(images):
        raise TrainSetupError(f"{len(images)} --validation-image but {len(prompts)} --validation-prompt; give one "
                              "prompt per image (or none: the training prompt is used)")
    conds = [encode_text([p]) for p in prompts]
    uncond = encode_text([""]) if images else None
    del encode_text  # the text encoder is not needed any more

    encode, decode = family.codec(settings, device)
    clips = encode_video_set(video_set, encode, hflip=config.hflip)
    with torch.no_grad():  # validation first frames: the posterior mean (deterministic across validations)
        firsts = [_posterior_mean(encode(_load_first_frame(p, config.width, config.height)))[:, :, None]
                  for p in images]
    del encode
    if not images:
        del decode
    del video_set
    if device.type == "cuda":
        torch.cuda.empty_cache()

    say("loading the base UNet from %s", base)
    unet_config, state_2d = family.base_unet(base)
    unet = unet_for_training(unet_config, state_2d, seed=config.seed).to(device)
    del state_2d

    validator = None
    if images:
        names = [f"{i:02d}_" + "".join(c if c.isalnum() else "_" for c in p)[:60] for i, p in enumerate(prompts)]
        validator = make_validator(firsts, conds, uncond, names, decode, out / "samples",
                                   steps=settings["validation_steps"], guidance_scale=settings["guidance_scale"],
                                   seed=config.seed, video_format=settings["validation_format"])
    elif config.validate_every:
        say("no --validation-image given: no validation samples")

    trainer = MotionTrainer(unet, clips, prompt_embeds, config, output_dir=out,
                            noise_scheduler=family.noise_scheduler(base), accelerator=accelerator,
                            validator=validator, motion_metadata={"motion_prompt": prompt, "base": base.name,
                                                                  **_family_metadata(settings, clip_prompt_list)})
    if settings["resume"]:
        state = out / STATE_FILE if settings["resume"] == "auto" else Path(settings["resume"])
        trainer.load(state)
        say("resumed from %s at step %d", state, trainer.global_step)
    _train_with_progress(trainer, accelerator.is_main_process)
    trainer.checkpoint()
    say("motion file: %s (step %d)", out / "motion.safetensors", trainer.global_step)
    return out / "motion.safetensors"


def _family_metadata(settings: dict[str, Any], clip_prompt_list: list[str]) -> dict[str, Any]:
    """Motion-file metadata beyond the SD-1.x defaults: the model family and the per-clip prompts."""
    extra: dict[str, Any] = {}
    if settings["model_family"] != "sd1":
        extra["model_family"] = settings["model_family"]
    if clip_prompt_list:
        extra["training_prompts"] = clip_prompt_list
    return extra


def _train_with_progress(trainer: MotionTrainer, show: bool) -> None:
    """Train to ``config.steps`` with a tqdm bar (loss, lr, ETA). Ctrl-C finishes the current step, saves
    and stops (a second Ctrl-C aborts at once)."""
    from tqdm.auto import tqdm

    stop = {"requested": False}
    previous = signal.getsignal(signal.SIGINT)

    def request_stop(signum: int, frame: Any) -> None:
        if stop["requested"]:
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        stop["requested"] = True
        log.warning("stopping after this step and saving (Ctrl-C again to abort without saving)")

    class Stop(Exception):
        pass

    bar = tqdm(total=trainer.config.steps, initial=trainer.global_step, disable=not show, unit="step",
               dynamic_ncols=True)
    start, start_step = time.time(), trainer.global_step

    def callback(t: MotionTrainer, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{t.learning_rate:.2e}")
        if stop["requested"]:
            raise Stop

    signal.signal(signal.SIGINT, request_stop)
    try:
        trainer.train(callback=callback)
    except Stop:
        pass
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    steps = trainer.global_step - start_step
    if steps and show:
        log.info("%d steps in %.1f s (%.2f s/step)", steps, time.time() - start, (time.time() - start) / steps)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lamp_model.train``; returns the exit code (2 for setup errors)."""
    try:
        settings, config = resolve_settings(argv)
    except TrainSetupError as err:
        return fail(str(err))
    logging.basicConfig(level=settings["log_level"], format="%(message)s")
    try:
        run(settings, config)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            return fail(f"no space left on the device while saving to {settings['output_dir']}; the previous save "
                        "there is intact (files are replaced only once completely written): free some space and "
                        "continue with --resume")
        return fail(describe(err))
    except (TrainSetupError, ValueError, FloatingPointError) as err:  # VideoSetError, WeightsFormatError too
        return fail(describe(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
