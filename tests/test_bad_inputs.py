"""Bad input is refused before work starts, with a message naming the problem and the fix.

One table per surface (training config, engine API, command lines, nodes); one row per case with the text
the message must contain. The command-line rows also check that the answer is ONE ``error:`` line with exit
code 2, and the training rows that nothing was decoded before the refusal.
"""
from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import TINY_CONFIG
from test_nodes import StubVAE, folders, lamp_model, make_model, motion_file, parts  # noqa: F401 (fixtures)
from test_sampling import FakeUNet, _inputs, zero_eps
from test_train_cli import common, run_inputs, tiny_sd  # noqa: F401 (fixtures)
from test_train_nodes import init, world  # noqa: F401 (fixtures)

from lamp_model import checks
from lamp_model.postprocess import adain_latent, match_histogram
from lamp_model.sampling import sample_video
from lamp_model.train import TrainConfig
from lamp_model.train_cli import TrainSetupError, resolve_settings

NAN = float("nan")


# ============================================================================================ training config
TRAIN_CONFIG_CASES = [  # (settings, text the ValueError must contain)
    ({"steps": 0}, "steps must be >= 1, got 0"),
    ({"steps": -5}, "steps must be >= 1, got -5"),
    ({"steps": "many"}, "steps must be a whole number, got 'many'"),
    ({"steps": 10.5}, "steps must be a whole number, got 10.5"),
    ({"save_every": -1}, "save_every must be >= 0, got -1"),
    ({"keep_every": -2}, "keep_every must be >= 0"),
    ({"validate_every": -1}, "validate_every must be >= 0"),
    ({"learning_rate": 0}, "learning_rate must be > 0.0, got 0.0; official 3e-5"),
    ({"learning_rate": -1e-4}, "learning_rate must be > 0.0"),
    ({"learning_rate": NAN}, "learning_rate must be a finite number"),
    ({"learning_rate": "fast"}, "learning_rate must be a finite number, got 'fast'"),
    ({"lr_scheduler": "cosin"}, "lr_scheduler must be one of linear, cosine"),
    ({"use_8bit_adam": True}, "bitsandbytes is not installed"),
    ({"hflip": "maybe"}, "hflip must be true or false, got 'maybe'"),
    ({"hflip": 2}, "hflip must be true or false, got 2"),
    ({"gradient_checkpointing": None}, "gradient_checkpointing must be true or false"),
    ({"n_frames": 1}, "n_frames must be >= 2, got 1; frame 0 is the condition"),
    ({"n_frames": "sixteen"}, "n_frames must be a whole number"),
    ({"stride": 0}, "stride must be >= 1"),
    ({"width": 0}, "width must be >= 8"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"seed": -1}, "seed must be >= 0"),
    ({"lr_warmup_steps": -1}, "lr_warmup_steps must be >= 0"),
    ({"max_clip_frames": 4}, "max_clip_frames 4 is fewer than one training clip needs (16"),
    ({"mixed_precision": "fp8"}, "mixed_precision must be one of no, fp16, bf16"),
    ({"resize": "squash"}, "resize must be one of"),
    ({"adam_beta2": 1.0}, "adam_beta2 must be below 1"),
    ({"adam_beta1": -0.1}, "adam_beta1 must be >= 0.0"),
    ({"adam_epsilon": 0}, "adam_epsilon must be > 0.0"),
    ({"weight_decay": -0.01}, "weight_decay must be >= 0.0"),
    ({"max_grad_norm": 0}, "max_grad_norm must be > 0.0"),
    ({"max_grad_norm": math.inf}, "max_grad_norm must be a finite number"),
]


@pytest.mark.parametrize("settings,message", TRAIN_CONFIG_CASES, ids=[str(c[0]) for c in TRAIN_CONFIG_CASES])
def test_train_config_refuses(settings, message, monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else 1)
    with pytest.raises(ValueError) as err:
        TrainConfig(**settings)
    assert message in str(err.value)


PARSED_CASES = [  # (settings, field, value after parsing): strict but not pedantic
    ({"hflip": "false"}, "hflip", False), ({"hflip": "No"}, "hflip", False), ({"hflip": "true"}, "hflip", True),
    ({"hflip": 0}, "hflip", False), ({"learning_rate": "1e-4"}, "learning_rate", 1e-4),
    ({"learning_rate": 1}, "learning_rate", 1.0), ({"steps": "1000"}, "steps", 1000), ({"steps": 1000.0}, "steps", 1000),
    ({"max_clip_frames": None}, "max_clip_frames", None),
]


@pytest.mark.parametrize("settings,field,value", PARSED_CASES)
def test_train_config_parses(settings, field, value):
    got = getattr(TrainConfig(**settings), field)
    assert got == value and type(got) is type(value)


def test_unknown_setting_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown training setting\(s\) \['lr'\]; valid: \['adam_beta1'"):
        TrainConfig.from_dict({"lr": 1e-4})


YAML_CASES = [  # (YAML text, text the TrainSetupError must contain, or None = accepted)
    ('hflip: "false"', None),
    ("learning_rate: 1e-4", None),
    ("steps: many", "steps must be a whole number, got 'many'"),
    ("lr: 1.0e-4", "unknown setting(s) ['lr']; valid: ["),
    ("validation_steps: 0", "validation_steps must be in [1, 1000], got 0"),
    ("guidance_scale: -1", "guidance_scale must be >= 0.0"),
    ("skip_bad_clips: perhaps", "skip_bad_clips must be true or false"),
    ("- a list", "must be a mapping of settings"),
    ("save_every: -5", "save_every must be >= 0"),
]


@pytest.mark.parametrize("text,message", YAML_CASES)
def test_yaml_settings(tmp_path, text, message):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text + "\nbase: b\nvideos: v\noutput_dir: o\n" if not text.startswith("-") else text)
    if message is None:
        _, config = resolve_settings(["--config", str(cfg)])
        assert config.hflip is False or config.learning_rate == 1e-4
        return
    with pytest.raises(TrainSetupError) as err:
        resolve_settings(["--config", str(cfg)])
    assert message in str(err.value)


# ============================================================================================ engine API
class ConfigUNet(FakeUNet):
    """A fake UNet that declares its input channels and text-context width like a LampUNet3D."""

    config = {"in_channels": 4, "cross_attention_dim": 16}


def _sv(**change):
    first, cond, uncond, noise = _inputs(b=2)
    args = dict(first_frame_latent=first, cond=cond, uncond=uncond, noise=noise, steps=2)
    args.update(change)
    return lambda unet: sample_video(unet, **args)


def _with(tensor, index=None, value=NAN):
    """A copy of ``tensor`` with ``value`` at ``index`` (default: its first element)."""
    out = tensor.clone()
    if index is None:
        out.view(-1)[0] = value
    else:
        out[index] = value
    return out


_F, _C, _U, _N = _inputs(b=2)
SAMPLE_VIDEO_CASES = [  # (sample_video arguments changed from good ones, ValueError text)
    ({"guidance_scale": -1.0}, "guidance_scale must be >= 0.0, got -1.0"),
    ({"guidance_scale": NAN}, "guidance_scale must be a finite number"),
    ({"guidance_scale": math.inf}, "guidance_scale must be a finite number"),
    ({"steps": 0}, "steps must be an integer in 1..1000, got 0"),
    ({"steps": 2.5}, "steps must be an integer in 1..1000, got 2.5"),
    ({"shared_noise_alpha": 1.5}, "shared_noise_alpha must be in [0.0, 1.0], got 1.5"),
    ({"shared_noise_alpha": NAN}, "shared_noise_alpha must be a finite number"),
    ({"noise": _N[:, :, 0]}, "noise must be raw video noise [B, 4, F, h, w] with F >= 2 frames, got (2, 4, 8, 8)"),
    ({"noise": _N[:, :3]}, "this UNet takes 4-channel latents"),
    ({"noise": _N[:, :, :1]}, "with F >= 2 frames, got (2, 4, 1, 8, 8)"),
    ({"noise": _with(_N)}, "noise holds"),
    ({"first_frame_latent": _with(_F, (0, 0, 0, 0, 0), math.inf)}, "first_frame_latent holds 1 NaN/inf value(s)"),
    ({"first_frame_latent": _F[..., :4]}, "first_frame_latent must be one frame [B, 4, 1, 8, 8]"),
    ({"first_frame_latent": _F[0, :, 0]}, "first_frame_latent must be one frame"),
    ({"cond": torch.zeros(2, 77, 32)}, "this UNet's text context is 16 wide"),
    ({"cond": _C[0]}, "cond must be text embeddings [B, tokens, 16], got (77, 16)"),
    ({"cond": _with(_C, (0, 0, 0), math.inf)}, "cond holds 1 NaN/inf"),
    ({"uncond": _with(_U)}, "uncond holds 1 NaN/inf"),
    ({"uncond": None, "guidance_scale": 7.0}, "needs negative (uncond) embeddings"),
    ({"cond": torch.zeros(3, 77, 16)}, "with B = 1 or 2, got (3, 77, 16)"),
]


@pytest.mark.parametrize("change,message", SAMPLE_VIDEO_CASES, ids=[str(i) for i in range(len(SAMPLE_VIDEO_CASES))])
def test_sample_video_refuses(change, message):
    unet = ConfigUNet(zero_eps)
    with pytest.raises(ValueError) as err:
        _sv(**change)(unet)
    assert message in str(err.value)
    assert not unet.calls  # refused before the first UNet call


def test_nan_during_sampling_names_the_step_and_fitting_advice():
    calls = []

    def eps(sample):  # fine for the first step, NaN from the second on
        calls.append(1)
        return torch.zeros_like(sample) if len(calls) == 1 else torch.full_like(sample, NAN)

    with pytest.raises(FloatingPointError) as err:
        _sv(steps=3)(ConfigUNet(eps))
    text = str(err.value)
    assert "NaN/inf at step 2 of 3" in text and "float32 on cpu" in text and "not a precision problem" in text
    assert "fp16" not in text


NAN_ADVICE_CASES = [  # (device, dtype, advice text)
    ("cpu", torch.float32, "already float32 on cpu, so this is not a precision problem"),
    ("cuda", torch.float16, "fp16 overflowed on cuda: compute in bf16 or fp32"),
    ("mps", torch.bfloat16, "bf16 on mps: try fp32"),
]


@pytest.mark.parametrize("device,dtype,text", NAN_ADVICE_CASES)
def test_nan_advice_fits_device_and_dtype(device, dtype, text):
    assert text in checks.nan_advice(device, dtype)


_X = torch.randn(1, 4, 8, 8)
POSTPROCESS_CASES = [  # (call, ValueError text)
    (lambda: adain_latent(_X[0], _X[0]), "adain_latent expects x [B, C, H, W] or [B, C, F, H, W], got (4, 8, 8)"),
    (lambda: adain_latent(_X, _X[:, :3]), "reference shape (1, 3, 8, 8) does not fit x (1, 4, 8, 8)"),
    (lambda: adain_latent(_with(_X), _X), "adain_latent x holds 1 NaN/inf"),
    (lambda: adain_latent(_X, _with(_X, (0, 0, 0, 0), -math.inf)), "adain_latent ref holds 1 NaN/inf"),
    (lambda: match_histogram(torch.rand(2, 8, 8), torch.rand(8, 8, 3)), "expected frames [F, H, W, 3]"),
    (lambda: match_histogram(torch.rand(2, 8, 8, 3), torch.rand(3, 8, 8)), "reference must be one frame"),
    (lambda: match_histogram(_with(torch.rand(2, 8, 8, 3)), torch.rand(8, 8, 3)), "match_histogram frames holds 1"),
    (lambda: match_histogram(torch.rand(2, 8, 8, 3), _with(torch.rand(8, 8, 3))), "match_histogram ref holds 1"),
]


@pytest.mark.parametrize("call,message", POSTPROCESS_CASES, ids=[c[1][:30] for c in POSTPROCESS_CASES])
def test_postprocess_refuses(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)


@pytest.fixture(scope="module")
def lamp_unet():
    from lamp_model.unet3d import LampUNet3D, randomize_motion_layers

    torch.manual_seed(0)
    return randomize_motion_layers(LampUNet3D(TINY_CONFIG).eval())


def _poison(state, key_part):
    key = next(k for k in state if key_part in k)
    state = dict(state)
    state[key] = _with(state[key].float()).to(state[key].dtype)
    return state, key


def _weights_case(kind, lamp_unet, tmp_path):
    """Build the file(s) of one weights case and return the call that must fail."""
    from diffusers import UNet2DConditionModel

    from lamp_model import weights as W

    if kind == "full":
        W.save_unet(lamp_unet, tmp_path / "full.safetensors")
        state, key = _poison(dict(__import__("safetensors.torch").torch.load_file(tmp_path / "full.safetensors")),
                             "conv1d.weight")
        save_file(state, tmp_path / "full.safetensors", metadata={"format": "lamp_full",
                                                                   "architecture": json.dumps(lamp_unet.config)})
        return (lambda: W.load_unet(tmp_path / "full.safetensors")), key
    if kind == "motion":
        W.save_motion(lamp_unet, tmp_path / "m.safetensors")
        from safetensors import safe_open

        with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
            meta = f.metadata()
        state, key = _poison(__import__("safetensors.torch").torch.load_file(tmp_path / "m.safetensors"), "attn_temp")
        save_file(state, tmp_path / "m.safetensors", metadata=meta)
        return (lambda: W.read_motion(tmp_path / "m.safetensors")), key
    if kind == "base":
        W.save_motion(lamp_unet, tmp_path / "m.safetensors")
        torch.manual_seed(0)
        base, key = _poison(UNet2DConditionModel(**TINY_CONFIG).state_dict(), "conv_in.weight")
        return (lambda: W.load_unet(tmp_path / "m.safetensors", base=base)), key
    if kind == "save_nan":
        bad = __import__("copy").deepcopy(lamp_unet)
        name = next(n for n, _ in bad.named_parameters() if "conv1d" in n)
        with torch.no_grad():
            dict(bad.named_parameters())[name].view(-1)[0] = NAN
        return (lambda: W.save_motion(bad, tmp_path / "never.safetensors")), name
    if kind == "save_plain":
        return (lambda: W.save_motion(torch.nn.Linear(2, 2), tmp_path / "never.safetensors")), "no LAMP motion layers"
    raise AssertionError(kind)


WEIGHTS_CASES = [  # (case, text besides the tensor name)
    ("full", "holds NaN/inf values"),
    ("motion", "holds NaN/inf values"),
    ("base", "holds NaN/inf values"),
    ("save_nan", "holds NaN/inf values"),
    ("save_plain", "give a LAMP UNet"),
]


@pytest.mark.parametrize("kind,message", WEIGHTS_CASES)
def test_weights_refuse_nonfinite_and_wrong_models(kind, message, lamp_unet, tmp_path):
    call, named = _weights_case(kind, lamp_unet, tmp_path)
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value) and named in str(err.value)
    assert not (tmp_path / "never.safetensors").exists()


DATA_CASES = [  # (load_video_set arguments, VideoSetError text)
    ({"n_frames": 1}, "n_frames=1: LAMP trains on at least 2 frames"),
    ({"stride": 0}, "stride=0: must be 1 or more"),
    ({"width": 30}, "training size 30x32: width and height must be positive multiples of 8"),
    ({"root": "missing"}, "does not exist. Give a folder of 8-16 clips"),
    ({"root": "empty"}, "holds no usable clip"),
]


@pytest.mark.parametrize("change,message", DATA_CASES, ids=[c[1][:25] for c in DATA_CASES])
def test_data_loading_refuses(change, message, tmp_path):
    from lamp_model.data import VideoSetError, load_video_set

    (tmp_path / "empty").mkdir()
    args = {"n_frames": 4, "stride": 1, "width": 32, "height": 32, **change}
    root = tmp_path / args.pop("root", "empty")
    with pytest.raises(VideoSetError) as err:
        load_video_set(root, **args)
    assert message in str(err.value)


def test_trainer_refuses_embeddings_of_another_width(lamp_unet):
    from lamp_model.data import LatentClipSet
    from lamp_model.train import MotionTrainer

    clips = LatentClipSet.from_latents([torch.randn(4, 4, 8, 8)])
    with pytest.raises(ValueError, match="text_embeddings are 32 wide but the UNet's text context is 16 wide"):
        MotionTrainer(lamp_unet, clips, torch.zeros(1, 5, 32), TrainConfig(n_frames=3, hflip=False, save_every=0))


# ============================================================================================ command lines
def _files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "notes.txt").write_text("not a picture")
    Image.new("RGB", (8, 8), "red").save(tmp_path / "red.png")
    return {"txt": tmp_path / "notes.txt", "png": tmp_path / "red.png", "under_file": tmp_path / "notes.txt" / "out"}


def _sd_family_file(path: Path, family: str) -> Path:
    """A single-file checkpoint whose header looks like an SD-XL or SD-2 UNet (tiny tensors where possible)."""
    p = "model.diffusion_model."
    tensors = {p + "input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}
    if family == "sdxl":
        tensors[p + "label_emb.0.0.weight"] = torch.zeros(4, 4)
    else:
        tensors[p + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] = torch.zeros(8, 1024)
    save_file(tensors, path)
    return path


CLI_CASES = [  # (argv with {placeholders}, text of the one error line)
    (["smoke", "--frames", "1"], "--frames must be >= 2, got 1"),
    (["smoke", "--steps", "0"], "--steps must be in [1, 1000], got 0"),
    (["smoke", "--frames", "x"], "argument --frames: invalid int value: 'x'"),
    (["smoke", "--bogus"], "unrecognized arguments: --bogus"),
    (["smoke", "--out", "{under_file}"], "--out '{under_file}' cannot be written"),
    (["demo", "--steps", "0"], "--steps must be in [1, 1000], got 0"),
    (["demo", "--guidance", "-1"], "--guidance must be >= 0.0, got -1.0"),
    (["demo", "--guidance", "nan"], "--guidance must be a finite number"),
    (["demo", "--image", "{txt}"], "--image {txt}: not a readable picture"),
    (["demo", "--image", "{tmp}/missing.png"], "--image {tmp}/missing.png: file not found"),
    (["demo", "--motion", "sideways"], "argument --motion: 'sideways' is not a component; valid forms: right"),
    (["demo", "--prompt", "a purple dragon"], "colour"),
    (["demo", "--out", "{under_file}"], "--out '{under_file}' cannot be written"),
    (["convert", "{tmp}/nothing", "{tmp}/m.safetensors"], "not found"),
    (["convert", "{tmp}", "{tmp}/m.safetensors", "--meta", "novalue"], "--meta needs KEY=VALUE"),
    (["convert", "{png}", "{tmp}/m.safetensors"], "red.png"),
    (["nonsense"], "unknown command 'nonsense'"),
]


def test_read_only_out_is_one_error_line(tmp_path, capsys, monkeypatch):
    """A folder the user may not write (simulated: the tests run as root, which may write anywhere)."""
    import tempfile

    from lamp_model.__main__ import main

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    assert main(["smoke", "--out", str(tmp_path / "ro")]) == 2
    assert f"--out '{tmp_path / 'ro'}' cannot be written (Permission denied)" in _one_error_line(capsys)


def _fill(args, tmp_path, files):
    names = {"tmp": str(tmp_path), **{k: str(v) for k, v in files.items()}}
    return [a.format(**names) for a in args]


def _one_error_line(capsys, progress: bool = False) -> str:
    """The single ``error:`` line on stderr (``progress``: after a progress bar, which also writes there)."""
    text = capsys.readouterr().err
    lines = text.strip().splitlines()
    assert "Traceback" not in text
    if progress:
        lines = [line for line in lines if line.startswith("error")]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize("argv,message", CLI_CASES, ids=[" ".join(c[0])[:40] for c in CLI_CASES])
def test_cli_errors_are_one_line(argv, message, tmp_path, capsys):
    from lamp_model.__main__ import main

    files = _files(tmp_path)
    try:
        rc = main(_fill(argv, tmp_path, files))
    except SystemExit as stop:  # argparse exits
        rc = stop.code
    assert rc == 2
    assert _fill([message], tmp_path, files)[0] in _one_error_line(capsys)


TRAIN_CLI_CASES = [  # (extra argv, text of the one error line): all refused before any clip is decoded
    (["--steps", "0"], "steps must be >= 1, got 0"),
    (["--steps", "many"], "argument --steps: invalid int value: 'many'"),
    (["--learning-rate", "0"], "learning_rate must be > 0.0"),
    (["--lr-scheduler", "cosin"], "lr_scheduler must be one of"),
    (["--output-dir", "{under_file}"], "--output-dir '{under_file}' cannot be written"),
    (["--resume", "{txt}"], "is not a LAMP training state (not even a safetensors file)"),
    (["--resume", "{emb}"], "is not a LAMP training state (a motion file cannot be resumed exactly"),
    (["--resume"], "no training state at"),
    (["--text-embeddings", "{wide_emb}"], "has shape [5, 32], but the base UNet needs [tokens, 16] (its text "
                                          "context width)"),
    (["--base", "{sdxl}"], "this is an SD-XL UNet"),
    (["--base", "{sd2}"], "this is an SD-2.x UNet"),
    (["--base", "{emb}"], "not a UNet"),
    (["--validation-image", "{txt}"], "--validation-image {txt}: not a readable picture"),
    (["--validation-steps", "0"], "validation_steps must be in [1, 1000]"),
]


@pytest.mark.parametrize("extra,message", TRAIN_CLI_CASES, ids=[" ".join(c[0])[:40] for c in TRAIN_CLI_CASES])
def test_train_cli_refuses_before_decoding(extra, message, run_inputs, tmp_path, capsys, monkeypatch):
    from lamp_model import data
    from lamp_model.train_cli import main

    def never(*a, **k):
        raise AssertionError("a clip was decoded before the bad setting was refused")

    monkeypatch.setattr(data, "load_video_set", never)
    files = _files(tmp_path)
    wide = tmp_path / "wide.safetensors"
    save_file({"square moves right": torch.zeros(5, 32), "": torch.zeros(5, 32)}, wide)
    files.update(wide_emb=wide, emb=run_inputs["emb"], sdxl=_sd_family_file(tmp_path / "xl.safetensors", "sdxl"),
                 sd2=_sd_family_file(tmp_path / "sd2.safetensors", "sd2"))
    try:
        rc = main(common(run_inputs) + _fill(extra, tmp_path, files))
    except SystemExit as stop:  # argparse exits
        rc = stop.code
    assert rc == 2
    assert _fill([message], tmp_path, files)[0] in _one_error_line(capsys)


def test_full_disk_during_training_is_one_line_and_the_last_save_survives(run_inputs, capsys, monkeypatch):
    from lamp_model import train
    from lamp_model.train_cli import main
    from lamp_model.weights import read_motion

    real, saves = train.atomic_save, []

    def full_after_first_checkpoint(tensors, path, metadata):
        saves.append(Path(path).name)
        if saves.count("train_state.safetensors") > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(tensors, path, metadata)

    monkeypatch.setattr(train, "atomic_save", full_after_first_checkpoint)
    assert main(common(run_inputs) + ["--steps", "2", "--save-every", "1"]) == 2
    line = _one_error_line(capsys, progress=True)
    assert "no space left on the device" in line and "the previous save there is intact" in line
    _, meta = read_motion(run_inputs["out"] / "motion.safetensors")
    assert meta["training_steps"] == "1"
    assert not [p for p in run_inputs["out"].iterdir() if p.name.endswith(".tmp")]


# ============================================================================================ nodes
def _node_case(kind, folders, parts, tmp_path):  # noqa: F811 (fixtures)
    from nodes.color_match import LampColorMatch
    from nodes.first_frame import LampFirstFrame
    from nodes.loader_nodes import LampLoadMotion, LampLoadOfficialCheckpoint

    image = torch.rand(1, 64, 64, 3)
    if kind == "ff_both_sizes":
        return lambda: LampFirstFrame().encode(image, StubVAE(), 100, 70, 16)
    if kind == "ff_nan_image":
        return lambda: LampFirstFrame().encode(_with(image), StubVAE(), 64, 64, 16)
    if kind == "ff_nan_vae":
        class NanVAE(StubVAE):
            def encode(self, pixels):
                return torch.full_like(super().encode(pixels), NAN)
        return lambda: LampFirstFrame().encode(image, NanVAE(), 64, 64, 16)
    if kind == "cm_nan_images":
        return lambda: LampColorMatch().match(_with(torch.rand(3, 8, 8, 3)))
    if kind == "cm_inf_reference":
        return lambda: LampColorMatch().match(torch.rand(3, 8, 8, 3), reference=_with(image, None, math.inf))
    model = make_model(parts.ldm)
    if kind == "lm_empty_model":
        model.model.diffusion_model = torch.nn.Module()  # what a failed checkpoint load leaves
        return lambda: LampLoadMotion().load(model, "horse_run.safetensors")
    if kind == "lm_flattened":
        from lamp_model import weights as W
        motion, meta = W.read_motion(folders.lamp / "horse_run.safetensors")
        key = next(k for k in motion if k.endswith("conv1.conv1d.weight"))
        motion[key] = motion[key].flatten()
        save_file(motion, folders.lamp / "flat.safetensors", metadata=meta)
        return lambda: LampLoadMotion().load(model, "flat.safetensors")
    if kind == "lm_poisoned":
        from lamp_model import weights as W
        motion, meta = W.read_motion(folders.lamp / "horse_run.safetensors")
        motion, _ = _poison(motion, "attn_temp")
        save_file(motion, folders.lamp / "nan.safetensors", metadata=meta)
        return lambda: LampLoadMotion().load(model, "nan.safetensors")
    if kind == "lm_escape":
        save_file({"x": torch.zeros(1)}, folders.lamp.parent / "outside.safetensors")
        return lambda: LampLoadMotion().load(model, "../outside.safetensors")
    if kind == "official_given_motion":
        return lambda: LampLoadOfficialCheckpoint().load("horse_run.safetensors")
    raise AssertionError(kind)


NODE_CASES = [  # (case, exception type, text the message must contain)
    ("ff_both_sizes", ValueError, "width 100 (use 96 or 104) and height 70 (use 64 or 72) are not a multiple of 8"),
    ("ff_nan_image", ValueError, "LAMP First Frame: 'image' holds 1 NaN/inf value(s)"),
    ("ff_nan_vae", ValueError, "the VAE returned NaN/inf latents"),
    ("cm_nan_images", ValueError, "LAMP Color Match: 'images' holds 1 NaN/inf value(s)"),
    ("cm_inf_reference", ValueError, "LAMP Color Match: 'reference' holds 1 NaN/inf value(s)"),
    ("lm_empty_model", ValueError, "LAMP Load Motion: the MODEL holds no UNet weights"),
    ("lm_flattened", ValueError, "tensors have the wrong shape"),
    ("lm_poisoned", ValueError, "holds NaN/inf values"),
    ("lm_escape", FileNotFoundError, "'../outside.safetensors' not found"),
    ("official_given_motion", ValueError, "is a compact LAMP motion file, which needs an SD-1.x model under it: use "
                                          "LAMP Load Motion"),
]


@pytest.mark.parametrize("kind,error,message", NODE_CASES, ids=[c[0] for c in NODE_CASES])
def test_nodes_refuse(kind, error, message, folders, parts, motion_file, tmp_path):  # noqa: F811 (fixtures)
    with pytest.raises(error) as err:
        _node_case(kind, folders, parts, tmp_path)()
    text = str(err.value)
    assert message in text
    assert text.count("does not fit") <= 1 and "[6912" not in text  # no doubled or nonsense layout text


def test_layout_mismatch_says_does_not_fit_once(folders, parts, motion_file):  # noqa: F811 (fixtures)
    from diffusers import UNet2DConditionModel

    from lamp_model.unet3d import inflate_unet
    from lamp_model.weights import save_motion
    from nodes.loader_nodes import LampLoadMotion

    torch.manual_seed(0)
    wide = inflate_unet(UNet2DConditionModel(**{**TINY_CONFIG, "block_out_channels": [32, 64]}))
    save_motion(wide, folders.lamp / "wide.safetensors")
    with pytest.raises(ValueError) as err:
        LampLoadMotion().load(make_model(parts.ldm), "wide.safetensors")
    text = str(err.value)
    assert text.count("does not fit") == 1 and "made for a different UNet: block_out_channels [32, 64] (the base " \
        "model has [16, 32])" in text


def test_sampler_nan_message_names_the_dtype_actually_used(lamp_model, monkeypatch):  # noqa: F811
    import lamp_model.sampling as sampling
    from test_nodes import cond, first_frame_latent

    from nodes.sampler import LampSampler
    from nodes.shared_noise import LampSharedNoise

    monkeypatch.setattr(sampling.DenoiseLoop, "_predict_noise", lambda self, x, t: torch.full_like(x, NAN))
    with pytest.raises(FloatingPointError) as err:
        LampSampler().sample(lamp_model, cond(), cond(seed=1), first_frame_latent(), LampSharedNoise().make(0, 0.2)[0],
                             steps=2, dtype="fp32")
    assert "float32 on cpu" in str(err.value) and "fp16 on this GPU" not in str(err.value)


def test_train_init_refuses_a_clip_of_another_width_before_encoding(world, monkeypatch):  # noqa: F811
    from lamp_model import data

    class WideCLIP:
        def tokenize(self, text):
            return text

        def encode_from_tokens(self, tokens):
            return torch.zeros(1, 77, 2048)

    monkeypatch.setattr(data, "encode_video_set", lambda *a, **k: pytest.fail("frames were encoded"))
    world.clip = WideCLIP()
    with pytest.raises(ValueError, match="the CLIP gives 2048-wide embeddings but the MODEL needs 16"):
        init(world)


def test_first_frame_batch_warning_reaches_the_node():
    from nodes.first_frame import LampFirstFrame

    out = LampFirstFrame().encode(torch.rand(5, 64, 64, 3), StubVAE(), 64, 64, 4)
    assert out["ui"]["lamp_warning"] == ["First Frame got a batch of 5 images and uses only the first one as frame one "
                                         "(the others are ignored); pick one image, e.g. with ImageFromBatch."]
    assert out["result"][0]["samples"].shape == (4, 4, 8, 8)
    assert isinstance(LampFirstFrame().encode(torch.rand(1, 64, 64, 3), StubVAE(), 64, 64, 4), tuple)


# ============================================================================================ nothing left behind
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_starting_a_run_removes_only_stale_temp_files_of_our_pattern(tmp_path, caplog, lamp_unet):
    from lamp_model.data import LatentClipSet
    from lamp_model.train import MotionTrainer

    stale = tmp_path / f".motion.safetensors.{_dead_pid()}.0123abcd.tmp"
    live = tmp_path / f".train_state.safetensors.{os.getppid()}.89abcdef.tmp"  # its writer still runs
    other = [tmp_path / ".motion.safetensors.tmp", tmp_path / "notes.12.0123abcd.tmp", tmp_path / "motion.safetensors"]
    for path in [stale, live, *other]:
        path.write_bytes(b"x" * 10)
    clips = LatentClipSet.from_latents([torch.randn(4, 4, 8, 8)])
    with caplog.at_level("INFO"):
        MotionTrainer(lamp_unet, clips, torch.zeros(1, 5, 16), TrainConfig(n_frames=3, hflip=False, save_every=0),
                      output_dir=tmp_path)
    assert not stale.exists() and live.exists() and all(p.exists() for p in other)
    assert f"removed {stale}" in caplog.text


def test_loss_log_keeps_every_field_across_resume(tmp_path, lamp_unet):
    import copy

    from lamp_model.data import LatentClipSet
    from lamp_model.train import MotionTrainer

    clips = LatentClipSet.from_latents([torch.randn(4, 4, 8, 8)])
    cfg = TrainConfig(n_frames=3, hflip=False, save_every=2, gradient_checkpointing=False, learning_rate=1e-3)
    first = MotionTrainer(copy.deepcopy(lamp_unet), clips, torch.zeros(1, 5, 16), cfg, output_dir=tmp_path)
    first.train(3)  # saved at step 2; step 3 is logged but not saved
    again = MotionTrainer(copy.deepcopy(lamp_unet), clips, torch.zeros(1, 5, 16), cfg, output_dir=tmp_path)
    again.load(tmp_path / "train_state.safetensors")
    records = [json.loads(x) for x in (tmp_path / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all({"loss", "lr", "grad_norm", "time"} <= set(r) for r in records)
    again.train(1)
    records = [json.loads(x) for x in (tmp_path / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and "grad_norm" in records[-1]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_users_umask(tmp_path, lamp_unet, umask, mode):
    from lamp_model.weights import save_motion

    old = os.umask(umask)
    try:
        path = save_motion(lamp_unet, tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
