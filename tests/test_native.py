"""The native path without ComfyUI: the borrowed-weights LAMP UNet, the sigma-space DDIM loop, the ControlNet
mapping and the diffusion-model wrapper, against the engine (fp32, tiny models)."""
from __future__ import annotations

import math

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from conftest import TINY_CONFIG, randomize_motion_layers
from lamp_model.borrowed_unet import BorrowedLampUNet, ldm_names
from lamp_model.noise import make_raw_noise, shared_noise
from lamp_model.sampling import sample_video
from lamp_model.sigma_sampling import official_sigmas, official_timesteps, sample_on_sigmas, timestep_of_sigma
from lamp_model.unet3d import inflate_unet
from lamp_model.weights import motion_state_dict
from nodes.control import control_residuals
from nodes.native import FIRST_FRAME_KEY, FirstFrame, LampMotionPatch, lamp_ddim_function
from test_weights import diffusers_to_ldm


class HostUNet(torch.nn.Module):
    """Stands in for ComfyUI's UNet: the 2-D SD weights as parameters under their LDM names."""

    def __init__(self, ldm: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.names = {k.replace(".", "__"): k for k in ldm}
        for k, v in ldm.items():
            self.register_parameter(k.replace(".", "__"), torch.nn.Parameter(v.clone(), requires_grad=False))

    def tensor(self, ldm_name: str) -> torch.Tensor:
        return getattr(self, ldm_name.replace(".", "__"))


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    unet2d = UNet2DConditionModel(**TINY_CONFIG).eval()
    lamp = randomize_motion_layers(inflate_unet(unet2d), seed=3)
    ldm = diffusers_to_ldm(unet2d.state_dict(), TINY_CONFIG["layers_per_block"])
    config, names = ldm_names(ldm, {"architecture": '{"attention_head_dim": 2, "norm_num_groups": 4}'})
    borrowed = BorrowedLampUNet(config, motion_state_dict(lamp))
    base = {k: ldm[names[k]] for k in borrowed.base_names}
    return unet2d, lamp, borrowed, base


def test_name_map_covers_every_base_tensor_once(parts):
    _, lamp, borrowed, base = parts
    assert set(base) | {k.replace("__", ".") for k in borrowed.motion.keys()} == set(lamp.state_dict())
    assert len(borrowed.motion) == len(motion_state_dict(lamp))


def test_borrowed_unet_gives_the_engine_numbers(parts):
    _, lamp, borrowed, base = parts
    torch.manual_seed(1)
    x, ctx = torch.randn(2, 4, 5, 8, 8), torch.randn(2, 7, 16)
    t = torch.tensor([901, 901])
    torch.testing.assert_close(borrowed(base, x, t, ctx), lamp(x, t, ctx), atol=1e-5, rtol=0)


def test_sigma_space_ddim_is_the_engine_loop(parts):
    """LAMP DDIM on sigmas (k-diffusion convention, CFG on x0) == sample_video (DDIM on timesteps, CFG on eps)."""
    _, lamp, _, _ = parts
    torch.manual_seed(2)
    first, cond, uncond = torch.randn(1, 4, 1, 8, 8), torch.randn(1, 5, 16), torch.randn(1, 5, 16)
    raw, steps, cfg = make_raw_noise(3, (1, 4, 4, 8, 8)), 12, 7.5
    want = sample_video(lamp, first, cond, uncond, raw, steps=steps, guidance_scale=cfg)
    sigmas = official_sigmas(steps)
    assert [timestep_of_sigma(s) for s in sigmas[:-1]] == official_timesteps(steps).tolist()

    def denoise(x, sigma):
        model_in = torch.cat([first, x[:, :, 1:] / math.sqrt(1 + sigma ** 2)], dim=2)
        eps_u, eps_c = lamp(torch.cat([model_in] * 2), torch.tensor(timestep_of_sigma(sigma)),
                            torch.cat([uncond, cond])).chunk(2)
        x0 = x - sigma * (eps_u + cfg * (eps_c - eps_u))
        return torch.cat([first, x0[:, :, 1:]], dim=2)

    got = sample_on_sigmas(denoise, shared_noise(raw) * math.sqrt(1 + float(sigmas[0]) ** 2), sigmas)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert torch.equal(got[:, :, 0], first[:, :, 0])


def test_official_sigmas_end_at_the_final_alpha():
    sigmas = official_sigmas(50)
    assert len(sigmas) == 51 and official_timesteps(50)[[0, -1]].tolist() == [981, 1]
    assert 0.02 < float(sigmas[-1]) < 0.04 and all(a > b for a, b in zip(sigmas, sigmas[1:]))
    with pytest.raises(ValueError, match="steps"):
        official_sigmas(0)


# ---------------------------------------------------------------------------------------------- ControlNet
def test_control_mapping_matches_diffusers_on_frame_0():
    """A one-frame video through the mapping == diffusers UNet2DConditionModel with ControlNetModel's residuals
    (zero motion layers, so one frame is the 2-D UNet)."""
    torch.manual_seed(4)
    unet2d = UNet2DConditionModel(**TINY_CONFIG).eval()
    controlnet = ControlNetModel.from_unet(unet2d, conditioning_embedding_out_channels=(8, 8)).eval()
    with torch.no_grad():
        for p in controlnet.parameters():
            p.normal_(0, 0.2)
    lamp = inflate_unet(unet2d)
    with torch.no_grad():  # the official init leaves attn_temp's output bias; zero it so one frame is the 2-D UNet
        for name, p in lamp.named_parameters():
            if "attn_temp.to_out" in name:
                p.zero_()
    x, ctx, hint = torch.randn(1, 4, 8, 8), torch.randn(1, 7, 16), torch.rand(1, 3, 16, 16)
    t = torch.tensor([501])
    down, mid = controlnet(x, t, ctx, controlnet_cond=hint, return_dict=False)
    want = unet2d(x, t, ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
    no_control = unet2d(x, t, ctx).sample
    comfy_control = {"output": list(down), "middle": [mid], "input": []}
    # one video of one frame that is *not* the pinned frame 0: put frame 0 in front and drop its output
    res, mid_res = control_residuals(comfy_control, videos=1, frames=1, add_first=True)  # [zero frame 0, x]
    res1 = [r[1:] for r in res]
    got = lamp(x[:, :, None], t, ctx, down_block_additional_residuals=res1,
               mid_block_additional_residual=mid_res[1:])[:, :, 0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got - no_control).abs().max() > 1e-3, "the control must matter in this check"
    assert torch.equal(res[0][0], torch.zeros_like(res[0][0])), "frame 0 gets no residual"


def test_control_mapping_refuses_t2i_adapters_and_foreign_layouts(parts):
    _, lamp, _, _ = parts
    with pytest.raises(ValueError, match="T2I-Adapter"):
        control_residuals({"input": [torch.zeros(2, 16, 8, 8)], "output": []}, 1, 2)
    down, mid = control_residuals({"output": [torch.zeros(2, 16, 8, 8)] * 3, "middle": [None]}, 1, 2)
    with pytest.raises(ValueError, match=r"SD-XL ControlNet does not fit.*SD-1.x \(SD-1.5\) ControlNet"):
        lamp(torch.zeros(1, 4, 2, 8, 8), 1, torch.zeros(1, 7, 16), down_block_additional_residuals=down)


# ---------------------------------------------------------------------------------------------- the wrapper
class Executor:
    def __init__(self, host_unet):
        self.class_obj = host_unet


def _patch(parts):
    unet2d, lamp, borrowed, _ = parts
    ldm = diffusers_to_ldm(unet2d.state_dict(), TINY_CONFIG["layers_per_block"])
    host_unet = HostUNet(ldm)
    config, names = ldm_names(ldm, {"architecture": '{"attention_head_dim": 2, "norm_num_groups": 4}'})
    names = {k: v for k, v in names.items() if k in set(borrowed.base_names)}
    return LampMotionPatch(borrowed, names), Executor(host_unet), lamp


@pytest.fixture
def wrapped(parts, monkeypatch):
    import nodes.host as host
    monkeypatch.setattr(host, "tensor_slots", lambda unet, names: (unet, names))
    monkeypatch.setattr(host, "live_tensors", lambda slots, device, dtype:
                        {k: slots[0].tensor(v).to(device, dtype) for k, v in slots[1].items()})
    return _patch(parts)


def _call(patch, executor, x, first, control=None, window=None, videos=2):
    options = {FIRST_FRAME_KEY: FirstFrame(first, True), "cond_or_uncond": list(range(videos))}
    if window is not None:
        options["context_window"] = window
    frames = x.shape[0] // videos
    ctx = torch.cat([torch.full((frames, 7, 16), float(i)) for i in range(videos)])
    return patch.diffusion_model(executor, x, torch.full((x.shape[0],), 601.0), ctx, None, control, options)


def test_wrapper_runs_the_engine_with_the_clean_frame_0(wrapped):
    patch, executor, lamp = wrapped
    torch.manual_seed(5)
    x, first = torch.randn(8, 4, 8, 8), torch.randn(1, 4, 8, 8)
    got = _call(patch, executor, x, first)
    video = x.view(2, 4, 4, 8, 8).clone()
    video[:, 0] = first[0]
    ctx = torch.stack([torch.full((7, 16), 0.0), torch.full((7, 16), 1.0)])
    want = lamp(video.transpose(1, 2), torch.tensor([601.0, 601.0]), ctx).transpose(1, 2).reshape(8, 4, 8, 8)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_zero_strength_control_is_bit_identical_to_none(wrapped):
    patch, executor, _ = wrapped
    torch.manual_seed(6)
    x, first = torch.randn(8, 4, 8, 8), torch.randn(1, 4, 8, 8)
    skips = [torch.randn(8, 16, 8, 8), torch.randn(8, 16, 8, 8), torch.randn(8, 16, 4, 4), torch.randn(8, 32, 4, 4)]
    control = {"output": [s * 0.0 for s in skips], "middle": [torch.randn(8, 32, 4, 4) * 0.0], "input": []}
    assert torch.equal(_call(patch, executor, x, first, control), _call(patch, executor, x, first))


def test_context_window_without_frame_0_gets_it_in_front(wrapped):
    """A window [2, 3] is run as [clean frame 0, 2, 3] and answers for its own two frames."""
    patch, executor, lamp = wrapped
    torch.manual_seed(7)
    x, first = torch.randn(2, 4, 8, 8), torch.randn(1, 4, 8, 8)
    window = type("Window", (), {"index_list": [2, 3], "dim": 0})()
    got = _call(patch, executor, x, first, window=window, videos=1)
    video = torch.cat([first, x])[None]
    want = lamp(video.transpose(1, 2), torch.tensor([601.0]), torch.zeros(1, 7, 16)).transpose(1, 2)[0, 1:]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- LAMP DDIM
class FakeKModel:
    """KSamplerX0Inpaint in miniature: the LAMP MODEL's x0 (CFG 1) with frame 0 replaced by the clean latent."""

    def __init__(self, lamp, first, noise, control_scale=0.0):
        self.lamp, self.first, self.noise = lamp, first, noise
        self.latent_image = torch.cat([first, torch.zeros_like(noise[1:])])
        self.control_scale = control_scale

    def __call__(self, x, sigma, **_):
        s = float(sigma[0])
        video = (x / math.sqrt(1 + s * s)).clone()
        video[0] = self.first[0]
        down = None
        if self.control_scale:
            frames = x.shape[0]
            shapes = [(16, 8, 8), (16, 8, 8), (16, 4, 4), (32, 4, 4)]
            raw = {"output": [torch.full((frames, *shape), self.control_scale) for shape in shapes]}
            down, _ = control_residuals(raw, 1, frames)
        eps = self.lamp(video.transpose(0, 1)[None], torch.tensor(timestep_of_sigma(s)), torch.zeros(1, 7, 16),
                        down_block_additional_residuals=down)[0].transpose(0, 1)
        out = x - s * eps
        out[0] = self.latent_image[0]
        return out


def test_lamp_ddim_sampler_function_keeps_frame_0_and_control_moves_the_rest(parts):
    _, lamp, _, _ = parts
    torch.manual_seed(8)
    first = torch.randn(1, 4, 8, 8)
    noise = shared_noise(make_raw_noise(9, (1, 4, 4, 8, 8)))[0].transpose(0, 1).contiguous()
    sigmas = official_sigmas(6)
    fn = lamp_ddim_function(adain=True)
    steps = []
    plain = fn(FakeKModel(lamp, first, noise), noise * float(sigmas[0]), sigmas, {},
               callback=lambda d: steps.append(d["i"]))
    steered = fn(FakeKModel(lamp, first, noise, control_scale=0.5), noise * float(sigmas[0]), sigmas, {})
    assert steps == list(range(6))
    assert torch.equal(plain[0], first[0]) and torch.equal(steered[0], first[0]), "frame 0 is never changed"
    assert (plain[1:] - steered[1:]).abs().amax(dim=(1, 2, 3)).min() > 1e-4, "control steers every other frame"
    want = sample_video(lamp, first.transpose(0, 1)[None], torch.zeros(1, 7, 16), None,
                        make_raw_noise(9, (1, 4, 4, 8, 8)), steps=6, guidance_scale=1.0)
    torch.testing.assert_close(plain, want[0].transpose(0, 1), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- LAMP Sampler
class FakeControl:
    """A ComfyUI ControlNet in miniature: residuals from the (k-scale) input, recorded calls."""

    shapes = [(16, 8, 8), (16, 8, 8), (16, 4, 4), (32, 4, 4)]

    def __init__(self, scale):
        self.scale, self.calls = scale, []

    def get_control(self, x, sigma, cond, batched, options):
        self.calls.append((tuple(x.shape), float(sigma[0]), batched, tuple(cond["c_crossattn"].shape)))
        level = x.mean(dim=(1, 2, 3), keepdim=True) * self.scale
        return {"output": [level.expand(x.shape[0], *s).clone() for s in self.shapes],
                "middle": [level.expand(x.shape[0], 32, 4, 4).clone()], "input": []}


def test_lamp_sampler_unet_feeds_each_prompts_controlnet_through_the_mapping(parts):
    from lamp_model.sigma_sampling import sigma_of_alpha, _alphas_cumprod
    from nodes.control import ControlledUNet

    _, lamp, _, _ = parts
    sampling = type("Sampling", (), {"sigmas": sigma_of_alpha(_alphas_cumprod()).float()})()
    torch.manual_seed(10)
    x, ctx, t = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 7, 16), torch.tensor(401)
    shared = FakeControl(0.5)
    got = ControlledUNet(lamp, shared, shared, sampling)(x, t, ctx)
    assert shared.calls == [((6, 4, 8, 8), pytest.approx(float(sampling.sigmas[401])), 2, (6, 7, 16))]
    k_in = x.transpose(1, 2).reshape(6, 4, 8, 8) * math.sqrt(1 + float(sampling.sigmas[401]) ** 2)
    down, mid = control_residuals(FakeControl(0.5).get_control(k_in, torch.ones(6), {"c_crossattn": ctx}, 2, {}), 2, 3)
    torch.testing.assert_close(got, lamp(x, t, ctx, down_block_additional_residuals=down,
                                         mid_block_additional_residual=mid), atol=1e-6, rtol=0)
    only_cond = ControlledUNet(lamp, FakeControl(0.5), None, sampling)(x, t, ctx)
    plain = lamp(x, t, ctx)
    assert torch.equal(only_cond[0], ControlledUNet(lamp, FakeControl(0.5), None, sampling)(x, t, ctx)[0])
    torch.testing.assert_close(only_cond[0], plain[0], atol=1e-6, rtol=0)  # the uncond video got no control
    assert (only_cond[1] - plain[1]).abs().max() > 1e-4
    zero = ControlledUNet(lamp, FakeControl(0.0), FakeControl(0.0), sampling)(x, t, ctx)
    assert torch.equal(zero, plain), "strength 0 is bit-identical to no ControlNet"


def test_sd_xl_controlnets_are_refused_with_the_family_needed():
    import nodes.host as host

    class ControlLora:
        control_model, previous_controlnet = None, None

    class ControlNet:
        previous_controlnet = None
        control_model = type("XLControl", (), {"num_classes": "sequential", "model_channels": 320})()

    class T2IAdapter:
        previous_controlnet = None

    for control, family in ((ControlLora(), "an SD-XL Control-LoRA"), (ControlNet(), "an SD-XL ControlNet"),
                            (T2IAdapter(), "a T2I-Adapter")):
        with pytest.raises(ValueError, match=f"carries {family}; .* needs an SD-1.5 ControlNet"):
            host.check_sd1_control(control)
    chained = ControlNet()
    chained.previous_controlnet = ControlLora()
    with pytest.raises(ValueError, match="SD-XL"):
        host.check_sd1_control(chained)
    host.check_sd1_control(None)  # no control: nothing to check

    patch = LampMotionPatch(None, {})
    guider = type("Guider", (), {"conds": {"positive": [{"control": ControlNet()}]}})()
    latent = torch.zeros(3, 4, 8, 8)
    with pytest.raises(ValueError, match="LAMP MODEL: the conditioning carries an SD-XL ControlNet"):
        patch.sampler_sample(lambda *a: None, guider, torch.ones(3), {}, None, latent, latent, None, True)


def test_sampler_run_wrapper_stashes_the_first_frame_and_puts_it_back_exactly(caplog):
    import logging

    patch = LampMotionPatch(None, {})
    latent = torch.randn(3, 4, 8, 8)
    mask = torch.ones(3, 4, 8, 8)
    mask[0] = 0
    seen = {}

    def executor(guider, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar):
        seen["first"] = extra_args["model_options"]["transformer_options"][FIRST_FRAME_KEY]
        return latent_image + 0.01  # a sampler that ends near, not at, the kept frame

    out = patch.sampler_sample(executor, object(), torch.ones(3), {}, None, latent, latent, mask, True)
    assert seen["first"].pinned and torch.equal(seen["first"].latent, latent[:1])
    assert torch.equal(out[0], latent[0]) and torch.equal(out[1:], latent[1:] + 0.01)
    with caplog.at_level(logging.WARNING, logger="ComfyUI-LAMP"):
        out = patch.sampler_sample(executor, object(), torch.ones(3), {}, None, latent, latent, None, True)
    assert "no noise mask" in caplog.text and not seen["first"].pinned
    assert torch.equal(out, latent + 0.01), "without the mask frame 0 is the sampler's"
    with pytest.raises(ValueError, match="frames >= 2"):
        patch.sampler_sample(executor, object(), torch.ones(3), {}, None, latent[:1], latent[:1], None, True)


def test_live_tensors_read_the_hosts_current_weights_with_its_lazy_patches():
    import nodes.host as host

    unet = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    unet[1].weight_function = [lambda w: w * 2]  # ComfyUI's low-VRAM LoRA patches are such functions
    names = {"a.weight": "0.weight", "a.bias": "0.bias", "b.weight": "1.weight"}
    slots = host.tensor_slots(unet, names)
    got = host.live_tensors(slots, torch.device("cpu"), torch.float64)
    assert got["a.weight"].dtype == torch.float64 and torch.equal(got["a.weight"], unet[0].weight.double())
    assert torch.equal(got["b.weight"], unet[1].weight.double() * 2)
    with torch.no_grad():
        unet[0].weight.add_(1)  # a weight patch applied in place later is seen at the next call
    assert torch.equal(host.live_tensors(slots, torch.device("cpu"), torch.float32)["a.weight"], unet[0].weight)


def test_unpinned_latent_frame_0_is_generated_like_the_others(wrapped):
    """Without LAMP First Frame's noise mask nothing is put into frame 0 and a window gets no extra frame."""
    patch, executor, lamp = wrapped
    torch.manual_seed(11)
    x, first = torch.randn(4, 4, 8, 8), torch.zeros(1, 4, 8, 8)
    options = {FIRST_FRAME_KEY: FirstFrame(first, False), "cond_or_uncond": [0]}
    got = patch.diffusion_model(executor, x, torch.full((4,), 601.0), torch.zeros(4, 7, 16), None, None, options)
    want = lamp(x.transpose(0, 1)[None], torch.tensor([601.0]), torch.zeros(1, 7, 16))[0].transpose(0, 1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    options["context_window"] = type("Window", (), {"index_list": [2, 3], "dim": 0})()
    got = patch.diffusion_model(executor, x[2:], torch.full((2,), 601.0), torch.zeros(2, 7, 16), None, None, options)
    want = lamp(x[2:].transpose(0, 1)[None], torch.tensor([601.0]), torch.zeros(1, 7, 16))[0].transpose(0, 1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="area/mask conditioning"):
        patch.diffusion_model(executor, x[:, :, :4], torch.full((4,), 601.0), torch.zeros(4, 7, 16), None, None,
                              {FIRST_FRAME_KEY: FirstFrame(first, True), "cond_or_uncond": [0]})
