"""The LAMP UNet: parity with the official forward, structure counts, inflation, trainable set, options."""
from __future__ import annotations

import json

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

from lamp_model.motion_layers import GatedCausalConv
from lamp_model.unet3d import (SD1_DEFAULTS, LampUNet3D, UnsupportedConfigError, inflate_unet, motion_conv_names,
                               trainable_parameters)


@pytest.fixture(scope="module")
def official_unet(request):
    from conftest import FIXTURES
    unet = LampUNet3D(json.loads((FIXTURES / "unet" / "config.json").read_text())).eval()
    unet.load_state_dict(load_file(FIXTURES / "model.safetensors"), strict=True)
    return unet


@pytest.mark.parametrize("name", ["unet_forward", "unet_forward_oddsize"])
@pytest.mark.parametrize("first_frame_kv_only", [True, False])
def test_forward_matches_official(official_unet, fixture_dir, name, first_frame_kv_only):
    d = load_file(fixture_dir / f"{name}.safetensors")
    official_unet.set_first_frame_kv_only(first_frame_kv_only)
    with torch.no_grad():
        out = official_unet(d["sample"], d["timestep"], d["encoder_hidden_states"])
    official_unet.set_first_frame_kv_only(True)
    assert out.shape == d["out_sample"].shape
    torch.testing.assert_close(out, d["out_sample"], atol=1e-4, rtol=0)


def test_sampling_step00_forward(official_unet, fixture_dir):
    s = load_file(fixture_dir / "sampling.safetensors")
    with torch.no_grad():
        out = official_unet(torch.cat([s["init_latents"]] * 2), s["timesteps"][0],
                            torch.cat([s["uncond_embeddings"], s["cond_embeddings"]]), return_dict=True).sample
    torch.testing.assert_close(out, s["unet_out_step00"], atol=1e-4, rtol=0)


def test_sd14_counts_on_meta():
    with torch.device("meta"):
        unet2d = UNet2DConditionModel(**SD1_DEFAULTS)
    unet = inflate_unet(unet2d)
    assert len(motion_conv_names(unet)) == 66
    assert sum(p.numel() for p in unet.parameters()) == 1_101_091_358
    assert sum(p.numel() for _, p in trainable_parameters(unet)) == 253_935_834


def test_trainable_set_is_official(tiny_unet):
    names = [n for n, _ in trainable_parameters(tiny_unet)]
    assert names and all(any(s in n for s in (".conv1d.", ".conv_gate.", ".attn_temp.", ".attn1.to_q.")) for n in names)
    assert not any("norm_temp" in n or "attn2.to_q" in n or "conv2d" in n for n in names)
    expected = {n for n, _ in tiny_unet.named_parameters()
                if any(s in n for s in (".conv1d.", ".conv_gate.", ".attn_temp.", ".attn1.to_q."))}
    assert set(names) == expected


def test_inflation_copies_2d_weights_and_inits_new_layers(tiny_config):
    torch.manual_seed(1)
    unet2d = UNet2DConditionModel(**tiny_config)
    unet = inflate_unet(unet2d)
    sd2, sd3 = unet2d.state_dict(), unet.state_dict()
    for key, value in sd2.items():
        key3 = key if key in sd3 else key.rsplit(".", 1)[0] + ".conv2d." + key.rsplit(".", 1)[1]
        assert torch.equal(sd3[key3], value), key
    for key, value in sd3.items():
        if ".conv1d." in key or ".conv_gate." in key or key.endswith("attn_temp.to_out.0.weight"):
            assert not value.any(), key
        if key.endswith("norm_temp.weight"):
            assert torch.all(value == 1)
    # With the temporal layers at their initial values every frame of a static video stays the same.
    x = torch.randn(1, 4, 1, 8, 8).expand(1, 4, 3, 8, 8)
    with torch.no_grad():
        out = unet(x, 10, torch.randn(1, 5, 16))
    torch.testing.assert_close(out[:, :, 0], out[:, :, 2], atol=1e-5, rtol=0)


def test_gated_causal_conv_never_sees_future_frames():
    torch.manual_seed(0)
    conv = GatedCausalConv(3, 5, 3, padding=1)
    for p in (*conv.conv1d.parameters(), *conv.conv_gate.parameters()):
        torch.nn.init.normal_(p)
    x = torch.randn(2 * 6, 3, 4, 4)
    y = conv(x, 6).view(2, 6, 5, 4, 4)
    x2 = x.view(2, 6, 3, 4, 4).clone()
    x2[:, 4:] += 1.0
    y2 = conv(x2.view(12, 3, 4, 4), 6).view(2, 6, 5, 4, 4)
    torch.testing.assert_close(y[:, :4], y2[:, :4])
    assert not torch.allclose(y[:, 4:], y2[:, 4:])


def test_gradient_checkpointing_gives_same_gradients(tiny_unet):
    x, ctx = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 5, 16)
    grads = []
    for enabled in (False, True):
        tiny_unet.zero_grad()
        tiny_unet.enable_gradient_checkpointing(enabled)
        tiny_unet(x, 500, ctx).square().mean().backward()
        grads.append(tiny_unet.conv_in.conv1d.weight.grad.clone())
    tiny_unet.enable_gradient_checkpointing(False)
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_forward(tiny_unet, dtype):
    x, ctx = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 5, 16)
    with torch.no_grad():
        ref = tiny_unet(x, 500, ctx)
        out = tiny_unet.to(dtype)(x.to(dtype), 500, ctx.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.05


@pytest.mark.parametrize("change", [{"use_linear_projection": True}, {"addition_embed_type": "text_time"},
                                    {"down_block_types": ["CrossAttnDownBlock2D", "SimpleDownBlock"]}])
def test_non_sd1_configs_are_refused(tiny_config, change):
    with pytest.raises(UnsupportedConfigError, match="SD-1"):
        LampUNet3D({**tiny_config, **change})


def test_temporal_conv_modes(tiny_unet):
    x, ctx = torch.randn(1, 4, 4, 8, 8), torch.randn(1, 5, 16)
    outs = {}
    with torch.no_grad():
        for mode in ("causal", "centered", "off"):
            tiny_unet.set_temporal_conv_mode(mode)
            outs[mode] = tiny_unet(x, 300, ctx)
    tiny_unet.set_temporal_conv_mode("causal")
    assert not torch.allclose(outs["causal"], outs["centered"])
    assert not torch.allclose(outs["causal"], outs["off"])
    with pytest.raises(ValueError):
        tiny_unet.set_temporal_conv_mode("sideways")


def test_centered_conv_sees_next_frame():
    conv = GatedCausalConv(2, 2, 1)
    torch.nn.init.normal_(conv.conv1d.weight)
    conv.temporal_mode = "centered"
    x = torch.randn(5, 2, 3, 3)
    x2 = x.clone()
    x2[3] += 1
    y, y2 = conv(x, 5), conv(x2, 5)
    assert not torch.allclose(y[2], y2[2]) and torch.allclose(y[1], y2[1])
