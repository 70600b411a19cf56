"""Weights: official checkpoints, full safetensors, compact motion files on SD-1.x bases, format detection."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING, convert_ldm_unet_checkpoint
from safetensors.torch import load_file, save_file

from lamp_model import weights as W
from lamp_model.unet3d import LampUNet3D, trainable_parameters

PREFIX = "model.diffusion_model."
FORWARDS = ["unet_forward", "unet_forward_oddsize"]


# ---------------------------------------------------------------------------------------------- helpers
def diffusers_to_ldm(state: dict, layers_per_block: int) -> dict:
    """Test-only inverse of diffusers' LDM->diffusers UNet converter (the engine ships none).

    Built by block arithmetic, then checked against the real converter: converting the result back must
    give exactly the same tensor objects under exactly the input names.
    """
    n = layers_per_block + 1
    top = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]
    resnet = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
              "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
    up_attn = {int(k.split(".")[1]) for k in state if k.startswith("up_blocks.") and ".attentions." in k}

    def name(key: str) -> str:
        if key in top:
            return top[key]
        p = key.split(".")
        if p[0] == "mid_block":
            kind, prefix, rest = p[1], f"middle_block.{2 * int(p[2]) if p[1] == 'resnets' else 1}", p[3:]
        elif p[2] == "downsamplers":
            return ".".join([f"input_blocks.{(int(p[1]) + 1) * n}.0.op"] + p[5:])
        elif p[2] == "upsamplers":
            b = int(p[1])
            return ".".join([f"output_blocks.{b * n + n - 1}.{2 if b in up_attn else 1}.conv"] + p[5:])
        else:
            b, i = int(p[1]), int(p[3])
            block = f"input_blocks.{1 + b * n + i}" if p[0] == "down_blocks" else f"output_blocks.{b * n + i}"
            kind, prefix, rest = p[2], f"{block}.{0 if p[2] == 'resnets' else 1}", p[4:]
        if kind == "resnets":
            rest = [resnet[rest[0]]] + rest[1:]
        return ".".join([prefix] + rest)

    ldm = {name(k): v for k, v in state.items()}
    back = convert_ldm_unet_checkpoint({PREFIX + k: v for k, v in ldm.items()}, {"layers_per_block": layers_per_block})
    assert set(back) == set(state) and all(back[k] is state[k] for k in state), "LDM inverse disagrees with diffusers"
    return ldm


@pytest.fixture(scope="module")
def fixtures():
    from conftest import FIXTURES
    return FIXTURES


@pytest.fixture(scope="module")
def full_unet(fixtures):
    return W.load_unet(fixtures / "unet")


@pytest.fixture(scope="module")
def base_2d(fixtures):
    """The fixture's 2-D SD weights (diffusers naming), rebuilt from the 3-D checkpoint with the keymap."""
    sd3 = load_file(fixtures / "model.safetensors")
    keymap = json.loads((fixtures / "inflation_keymap.json").read_text())["keymap"]
    return {src: sd3[key] for key, src in keymap.items() if src is not None}


@pytest.fixture(scope="module")
def motion_fp32(fixtures, tmp_path_factory):
    return W.convert_official(fixtures / "unet", tmp_path_factory.mktemp("motion") / "m.safetensors",
                              dtype=torch.float32, metadata={"prompt": "fixture motion"})


def run_forward(unet, fixtures, name):
    d = load_file(fixtures / f"{name}.safetensors")
    with torch.no_grad():
        out = unet(d["sample"], d["timestep"], d["encoder_hidden_states"])
    return out, d["out_sample"]


def sd_meta(config):
    with torch.device("meta"):
        return UNet2DConditionModel.from_config(config).state_dict()


def tiny_unet_32(seed=0):
    """A tiny model whose widths suit the SD-1.x default of 32 groups (so its config can be inferred)."""
    cfg = {"block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 16, "sample_size": 8,
           "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]}
    torch.manual_seed(seed)
    from conftest import randomize_motion_layers
    return randomize_motion_layers(LampUNet3D(cfg).eval(), seed)


# ---------------------------------------------------------------------------------------------- official parity
@pytest.mark.parametrize("name", FORWARDS)
@pytest.mark.parametrize("where", ["unet", "model.safetensors"])
def test_official_checkpoint_loads_and_matches_forward(fixtures, name, where):
    unet = W.load_unet(fixtures / where)
    assert not unet.training
    out, expected = run_forward(unet, fixtures, name)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("where", [".", "unet/diffusion_pytorch_model.bin"])
def test_official_checkpoint_other_paths(fixtures, full_unet, where):
    got, expected = W.load_unet(fixtures / where, dtype=torch.float64).state_dict(), full_unet.state_dict()
    assert set(got) == set(expected) and all(v.dtype == torch.float64 for v in got.values())
    assert all(torch.equal(got[k], expected[k].double()) for k in expected)


def test_ldm_inverse_round_trips_through_diffusers(base_2d):
    assert len(diffusers_to_ldm(base_2d, 2)) == len(base_2d)


@pytest.mark.parametrize("kind", ["diffusers_folder", "ldm_safetensors", "ldm_ckpt", "ldm_state_prefixed",
                                  "ldm_state_plain", "diffusers_state"])
def test_motion_file_plus_base_equals_full_model(fixtures, full_unet, base_2d, motion_fp32, tmp_path, kind):
    ldm = diffusers_to_ldm(base_2d, 2)
    extra = {"first_stage_model.encoder.conv_in.weight": torch.zeros(2, 3, 3, 3),
             "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.ones(4)}
    if kind == "diffusers_folder":
        unet2d = UNet2DConditionModel.from_config(json.loads((fixtures / "unet2d_config.json").read_text()))
        unet2d.load_state_dict(base_2d)
        unet2d.save_pretrained(tmp_path / "sd" / "unet")
        base = tmp_path / "sd"
    elif kind == "ldm_safetensors":
        base = tmp_path / "sd1.safetensors"
        save_file({**{PREFIX + k: v.contiguous() for k, v in ldm.items()}, **extra}, base)
    elif kind == "ldm_ckpt":
        base = tmp_path / "sd1.ckpt"
        torch.save({"state_dict": {**{PREFIX + k: v for k, v in ldm.items()}, **extra}, "global_step": 7}, base)
    elif kind == "ldm_state_prefixed":
        base = {**{PREFIX + k: v for k, v in ldm.items()}, **extra}
    elif kind == "ldm_state_plain":
        base = ldm
    else:
        base = base_2d
    unet = W.load_unet(motion_fp32, base=base)
    expected = full_unet.state_dict()
    got = unet.state_dict()
    assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
    out, ref = run_forward(unet, fixtures, "unet_forward_oddsize")
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


def test_load_base_unet2d_and_unet_from_parts(base_2d, motion_fp32, full_unet):
    config, state = W.load_base_unet2d(diffusers_to_ldm(base_2d, 2), dtype=torch.float16, hints={"norm_num_groups": 8})
    assert config["block_out_channels"] == [16, 32, 32, 32] and config["norm_num_groups"] == 8
    assert set(state) == set(base_2d) and all(v.dtype == torch.float16 for v in state.values())
    motion, metadata = W.read_motion(motion_fp32)
    unet = W.unet_from_parts(config, state, motion, dtype=torch.float32, metadata=metadata)
    ref = full_unet.state_dict()
    for k, v in unet.state_dict().items():  # base went through fp16, motion stayed fp32
        torch.testing.assert_close(v, ref[k], atol=0 if k in motion else 1e-2, rtol=0 if k in motion else 1e-3)


def test_sd1_single_file_config_is_shipped_config():
    config = W.sd1_config()
    ldm = diffusers_to_ldm(sd_meta(config), config["layers_per_block"])
    inferred, state = W.load_base_unet2d({PREFIX + k: v for k, v in ldm.items()}, device="meta")
    assert inferred == config
    assert len(state) == 686


def test_shipped_config_is_sd1_defaults():
    from lamp_model.unet3d import SD1_DEFAULTS
    assert W.sd1_config() == SD1_DEFAULTS


# ---------------------------------------------------------------------------------------------- full safetensors
def test_full_safetensors_without_config_is_inferred(tmp_path):
    unet = tiny_unet_32()
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, tmp_path / "full.safetensors")
    loaded = W.load_unet(tmp_path / "full.safetensors")
    assert loaded.config == {**unet.config, "sample_size": 64}  # sample_size: SD-1.x default, shapes cannot tell
    x, ctx = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, 10, ctx), unet(x, 10, ctx), atol=0, rtol=0)


def test_full_safetensors_with_metadata_config(tiny_unet, tmp_path):
    W.save_unet(tiny_unet, tmp_path / "full.safetensors")  # tiny config: 4 groups, 2 heads: not inferable
    loaded = W.load_unet(tmp_path / "full.safetensors")
    assert loaded.config == tiny_unet.config
    x, ctx = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, 10, ctx), tiny_unet(x, 10, ctx), atol=0, rtol=0)


def test_full_safetensors_of_non_sd1_widths_needs_config(fixtures, tmp_path):
    shutil.copy(fixtures / "model.safetensors", tmp_path / "model.safetensors")  # no config.json beside it
    with pytest.raises(W.WeightsFormatError, match="norm_num_groups"):
        W.load_unet(tmp_path / "model.safetensors")


# ---------------------------------------------------------------------------------------------- compact file
def test_motion_round_trip_fp32_fp16_and_metadata(tiny_unet, tmp_path):
    user = {"prompt": "a horse running", "frames": 16, "resolution": [512, 320], "steps": 300}
    expected = W.motion_state_dict(tiny_unet)
    W.save_motion(tiny_unet, tmp_path / "m32.safetensors", user, dtype=torch.float32)
    W.save_motion(tiny_unet, tmp_path / "m16.safetensors", user)
    t32, meta = W.read_motion(tmp_path / "m32.safetensors")
    t16, _ = W.read_motion(tmp_path / "m16.safetensors")
    assert set(t32) == set(t16) == set(expected)
    assert all(torch.equal(t32[k], v) for k, v in expected.items())
    assert all(t16[k].dtype == torch.float16 and torch.equal(t16[k], v.half()) for k, v in expected.items())
    assert meta["prompt"] == "a horse running" and json.loads(meta["resolution"]) == [512, 320]
    assert meta["frames"] == "16" and meta["steps"] == "300"
    assert (meta["format"], meta["format_version"], meta["base_family"]) == ("lamp_motion", "1", "sd1")
    assert W.motion_architecture(meta) == {k: tiny_unet.config[k] for k in W.ARCH_KEYS}
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_motion_file_on_tiny_base_rebuilds_model(tiny_unet, tmp_path):
    W.save_motion(tiny_unet, tmp_path / "m.safetensors", dtype=torch.float32)
    base = {k.replace(".conv2d.", "."): v for k, v in tiny_unet.state_dict().items() if not W.is_motion_key(k)}
    unet = W.load_unet(tmp_path / "m.safetensors", base=base)  # groups/heads come from the metadata
    assert all(torch.equal(v, tiny_unet.state_dict()[k]) for k, v in unet.state_dict().items())


def test_save_motion_is_atomic(tiny_unet, tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    W.save_motion(tiny_unet, path, {"prompt": "first"})

    def broken(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")
    monkeypatch.setattr(W, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        W.save_motion(tiny_unet, path, {"prompt": "second"})
    assert W.read_motion(path)[1]["prompt"] == "first"
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_sd14_compact_set_size_on_meta():
    with torch.device("meta"):
        unet = LampUNet3D(W.sd1_config())
    motion = W.motion_state_dict(unet)
    norm = {k: v for k, v in motion.items() if ".norm_temp." in k}
    assert sum(v.numel() for v in norm.values()) == 24_960
    assert sum(v.numel() for k, v in motion.items() if k not in norm) == 253_935_834
    assert set(motion) - set(norm) == {n for n, _ in trainable_parameters(unet)}


def test_convert_cli(fixtures, tmp_path, capsys):
    from lamp_model.__main__ import main
    out = tmp_path / "motion.safetensors"
    assert main(["convert", str(fixtures / "unet"), str(out), "--meta", "prompt=tiny"]) == 0
    printed = capsys.readouterr().out
    assert "388 tensors" in printed and "fp16" in printed
    tensors, meta = W.read_motion(out)
    assert len(tensors) == 388 and meta["prompt"] == "tiny" and all(t.dtype == torch.float16 for t in tensors.values())
    assert main(["convert", str(fixtures / "unet"), str(out), "--fp32"]) == 0
    assert all(t.dtype == torch.float32 for t in W.read_motion(out)[0].values())
    assert main(["convert", str(out), str(tmp_path / "again.safetensors")]) == 2  # one "error:" line, exit 2
    assert "already a LAMP motion file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- detection / errors
def test_detect_format_kinds(full_unet, base_2d):
    sd3 = full_unet.state_dict()
    assert W.detect_format(sd3) == "lamp_full"
    assert W.detect_format(W.motion_state_dict(sd3)) == "lamp_motion"
    assert W.detect_format(base_2d) == "sd1_diffusers"
    assert W.detect_format(list(diffusers_to_ldm(base_2d, 2))) == "sd1_ldm"
    assert W.detect_format({PREFIX + k: tuple(v.shape) for k, v in diffusers_to_ldm(base_2d, 2).items()}) == "sd1_ldm"


ATTN = "transformer_blocks.0.attn2.to_k.weight"
BAD = [  # (word the message must contain, key -> shape of a tiny fake file)
    ("SD-XL", {PREFIX + "label_emb.0.0.weight": (8, 16), PREFIX + "input_blocks.0.0.weight": (320, 4, 3, 3)}),
    ("SD-XL", {"add_embedding.linear_1.weight": (8, 16), "conv_in.weight": (320, 4, 3, 3)}),
    ("SD-XL", {"conv_in.weight": (32, 4, 3, 3), f"down_blocks.1.attentions.0.{ATTN}": (64, 2048)}),
    ("SD-2", {"input_blocks.0.0.weight": (32, 4, 3, 3), f"input_blocks.1.1.{ATTN}": (32, 1024)}),
    ("SD-2", {"conv_in.weight": (32, 4, 3, 3), "down_blocks.0.attentions.0.proj_in.weight": (32, 32),
              f"down_blocks.0.attentions.0.{ATTN}": (32, 768)}),
    ("AnimateDiff", {"down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight": (32, 32)}),
    ("VAE", {"encoder.conv_in.weight": (8, 3, 3, 3), "decoder.conv_out.weight": (3, 8, 3, 3),
             "quant_conv.weight": (8, 8, 1, 1)}),
    ("LoRA", {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 32),
              "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": ()}),
    ("inpainting", {"conv_in.weight": (32, 9, 3, 3), "down_blocks.0.resnets.0.conv1.weight": (32, 32, 3, 3)}),
    ("unrelated", {"backbone.layer1.weight": (8, 8)}),
]


@pytest.mark.parametrize("word,shapes", BAD, ids=[f"{w}-{i}" for i, (w, _) in enumerate(BAD)])
def test_bad_files_are_named(tmp_path, word, shapes):
    path = tmp_path / "model.safetensors"
    save_file({k: torch.zeros(s) for k, s in shapes.items()}, path)
    with pytest.raises(W.WeightsFormatError, match=word) as err:
        W.load_unet(path, base={})
    assert str(path) in str(err.value)
    with pytest.raises(W.WeightsFormatError, match=word):
        W.load_base_unet2d(path)
    with pytest.raises(W.WeightsFormatError, match=word):
        W.detect_format(shapes)


def test_damaged_files(fixtures, motion_fp32, tmp_path):
    data = motion_fp32.read_bytes()
    cases = {"truncated.safetensors": data[: len(data) // 2], "header.safetensors": data[:40],
             "empty.safetensors": b"", "garbage.safetensors": bytes(range(64)),
             "truncated.bin": (fixtures / "unet" / "diffusion_pytorch_model.bin").read_bytes()[:100_000]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(W.WeightsFormatError, match="corrupt|truncated") as err:
            W.load_unet(tmp_path / name)
        assert name in str(err.value)


def test_unsafe_pickle_is_refused(tmp_path):
    import datetime
    torch.save({"conv_in.weight": torch.zeros(1), "when": datetime.date(2024, 1, 1)}, tmp_path / "x.ckpt")
    with pytest.raises(W.WeightsFormatError, match="weights_only"):
        W.load_base_unet2d(tmp_path / "x.ckpt")


def test_missing_keys_are_named(fixtures, base_2d, motion_fp32, tmp_path):
    state = load_file(fixtures / "model.safetensors")
    gone = "down_blocks.1.resnets.0.conv1.conv1d.weight"
    del state[gone]
    save_file(state, tmp_path / "model.safetensors")
    shutil.copy(fixtures / "unet" / "config.json", tmp_path / "config.json")
    with pytest.raises(W.WeightsFormatError, match=f"missing.*{gone}"):
        W.load_unet(tmp_path / "model.safetensors")
    partial = {k: v for k, v in base_2d.items() if "mid_block.attentions" not in k}
    with pytest.raises(W.WeightsFormatError, match="missing.*mid_block.attentions"):
        W.load_unet(motion_fp32, base=partial)


def test_motion_widths_must_fit_base(base_2d, tmp_path):
    W.save_motion(tiny_unet_32(), tmp_path / "m.safetensors")
    with pytest.raises(W.WeightsFormatError, match=r"made for a different UNet: block_out_channels \[32, 64\] \(the base model has \[16, 32, 32, 32\]\)"):
        W.load_unet(tmp_path / "m.safetensors", base=base_2d)


def test_motion_file_needs_a_base_and_base_is_not_motion(motion_fp32, base_2d, tmp_path):
    with pytest.raises(W.WeightsFormatError, match="needs an SD-1.x base"):
        W.load_unet(motion_fp32)
    with pytest.raises(W.WeightsFormatError, match="not an SD-1.x base"):
        W.load_base_unet2d(motion_fp32)
    save_file({k: v.contiguous() for k, v in base_2d.items()}, tmp_path / "sd1.safetensors")
    with pytest.raises(W.WeightsFormatError, match="without LAMP motion layers"):
        W.load_unet(tmp_path / "sd1.safetensors")
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        W.load_unet(tmp_path / "nothing.safetensors")
