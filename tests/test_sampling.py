"""The denoising loop: parity with the official LAMPPipeline (teacher-forced steps and a full 50-step run),
shared noise, the AdaIN schedule, other schedulers, callbacks and the ablation options."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lamp_model.noise import make_raw_noise, shared_noise
from lamp_model.postprocess import adain_latent
from lamp_model.sampling import (LATE_PHASE_TIMESTEP, DenoiseLoop, adain_schedule, final_adain, is_late_phase,
                                 make_scheduler, sample_video)

# diffusers' Euler/DPM set_timesteps trips a NumPy 2 deprecation inside diffusers; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def fx():
    from conftest import FIXTURES
    return load_file(FIXTURES / "sampling.safetensors")


class FakeUNet:
    """Records every call and returns a given output (or a function of the input)."""

    def __init__(self, out=None):
        self.out, self.calls = out, []

    def __call__(self, sample, timestep, encoder_hidden_states):
        self.calls.append((sample.clone(), timestep, encoder_hidden_states.clone()))
        return self.out(sample) if callable(self.out) else self.out


def zero_eps(sample):
    return torch.zeros_like(sample)


# ------------------------------------------------------------------------------------------ official parity
def test_shared_noise_matches_official(fx):
    assert torch.equal(make_raw_noise(1240, (1, 4, 6, 16, 16)), fx["raw_noise"])
    mixed = shared_noise(fx["raw_noise"], 0.2)
    assert torch.equal(mixed[:, :, 1:], fx["init_latents"][:, :, 1:])
    assert torch.equal(mixed[:, :, 0], fx["raw_noise"][:, :, 0])


def test_scheduler_tables_match_official(fx):
    sched = make_scheduler()
    sched.set_timesteps(50)
    assert torch.equal(sched.timesteps, fx["timesteps"])
    assert torch.equal(sched.alphas_cumprod, fx["alphas_cumprod"])


@pytest.mark.parametrize("step", [0, 1, 30, 31, 49])
def test_teacher_forced_step_matches_official(fx, step):
    sched = make_scheduler()
    sched.set_timesteps(50)
    unet = FakeUNet(fx[f"unet_out_step{step:02d}"])
    loop = DenoiseLoop(unet, sched, fx["cond_embeddings"], fx["uncond_embeddings"], 12.5)
    before = fx["init_latents"] if step == 0 else fx[f"trace_latents_step{step - 1:02d}"]
    after = loop.step(before, step)
    (sample, t, ctx), = unet.calls
    assert torch.equal(sample, torch.cat([before] * 2))                      # clean frame 0, CFG batch
    assert t.ndim == 0 and int(t) == int(fx["timesteps"][step])            # one 0-dim timestep for the video
    assert torch.equal(ctx, torch.cat([fx["uncond_embeddings"], fx["cond_embeddings"]]))  # uncond first
    err = (after - fx[f"trace_latents_step{step:02d}"]).abs().max().item()
    print(f"teacher-forced step {step}: max abs err {err:.3g}")
    assert err <= 1e-5
    assert torch.equal(after[:, :, 0], before[:, :, 0])


def test_final_adain_matches_official(fx):
    out = final_adain(fx["latents_before_final_adain"])
    err = (out - fx["latents_final"]).abs().max().item()
    print(f"final AdaIN: max abs err {err:.3g}")
    assert err <= 1e-5


def test_full_50_step_loop_matches_official(fx):
    """The real LAMP UNet loaded from the official fixture weights, 50 DDIM steps (about 10-15 s on one CPU core)."""
    from conftest import FIXTURES
    from lamp_model.unet3d import LampUNet3D

    unet = LampUNet3D(json.loads((FIXTURES / "unet" / "config.json").read_text())).eval()
    unet.load_state_dict(load_file(FIXTURES / "model.safetensors"), strict=True)
    steps = []
    out = sample_video(unet, fx["first_frame_latents"], fx["cond_embeddings"], fx["uncond_embeddings"],
                       fx["raw_noise"], steps=50, guidance_scale=12.5, callback=lambda i, n, x: steps.append(i))
    err = (out - fx["latents_final"]).abs().max().item()
    print(f"full 50-step loop: max abs err {err:.3g}")
    assert err <= 5e-3
    assert torch.equal(out[:, :, :1], fx["first_frame_latents"])
    assert steps == list(range(50))


# ------------------------------------------------------------------------------------------ AdaIN schedule
def test_late_phase_rule_is_official_at_50_steps():
    sched = make_scheduler()
    sched.set_timesteps(50)
    assert [is_late_phase(t) for t in sched.timesteps] == [i > 30 for i in range(50)]
    assert int(sched.timesteps[30]) > LATE_PHASE_TIMESTEP > int(sched.timesteps[31])


@pytest.mark.parametrize("late", [False, True])
def test_adain_schedule_has_official_per_frame_clone_semantics(late):
    """Literal per-frame loop of the official pipeline (clone before every frame) vs the batched schedule."""
    x = torch.randn(2, 4, 5, 6, 7, generator=torch.Generator().manual_seed(3)) * 3 + 1
    ref = x.clone()
    for f in range(1, x.shape[2]):
        old = ref.clone()
        if late:
            ref[:, :, f] = adain_latent(ref[:, :, f], ref[:, :, 0])
        if f > 1:
            ref[:, :, f] = adain_latent(old[:, :, f], old[:, :, 1])
    torch.testing.assert_close(adain_schedule(x, late), ref, atol=1e-5, rtol=0)
    assert torch.equal(adain_schedule(x, late)[:, :, 0], x[:, :, 0])


# ------------------------------------------------------------------------------------------ options
def _inputs(frames=4, b=1, h=8, w=8, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    first = torch.randn(b, 4, 1, h, w, generator=g) * 0.9 + 0.1
    cond, uncond = torch.randn(b, 77, dim, generator=g), torch.randn(b, 77, dim, generator=g)
    return first, cond, uncond, torch.randn(b, 4, frames, h, w, generator=g)


def test_callback_every_step_and_exception_stops(tiny_unet):
    first, cond, uncond, noise = _inputs()
    seen = []
    sample_video(tiny_unet, first, cond, uncond, noise, steps=3, callback=lambda i, n, x: seen.append((i, n, x.shape)))
    assert seen == [(0, 3, noise.shape), (1, 3, noise.shape), (2, 3, noise.shape)]

    class Cancelled(Exception):
        pass

    unet = FakeUNet(zero_eps)

    def cancel(i, n, x):
        if i == 1:
            raise Cancelled
    with pytest.raises(Cancelled):
        sample_video(unet, first, cond, uncond, noise, steps=5, callback=cancel)
    assert len(unet.calls) == 2


def test_zero_eps_closed_form_without_adain():
    """With ε̂ = 0 every DDIM step scales x by sqrt(ᾱ_prev/ᾱ_t): the run is x_T·sqrt(ᾱ_final/ᾱ_T)."""
    first, cond, uncond, noise = _inputs()
    out = sample_video(FakeUNet(zero_eps), first, cond, uncond, noise, steps=10, adain=False)
    sched = make_scheduler()
    sched.set_timesteps(10)
    ac = sched.alphas_cumprod
    factor = (ac[0] / ac[int(sched.timesteps[0])]).sqrt()
    torch.testing.assert_close(out[:, :, 1:], shared_noise(noise)[:, :, 1:] * factor, atol=1e-5, rtol=1e-5)
    assert torch.equal(out[:, :, :1], first)
    # adain=True: the final pass gives every frame frame 0's per-channel statistics
    out = sample_video(FakeUNet(zero_eps), first, cond, uncond, noise, steps=10)
    std = lambda x: x.flatten(-2).std(-1)  # noqa: E731
    torch.testing.assert_close(out.flatten(-2).mean(-1), first.flatten(-2).mean(-1).expand(-1, -1, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(std(out), std(first).expand(-1, -1, 4), atol=1e-5, rtol=0)


def test_pin_first_frame_false():
    first, cond, uncond, noise = _inputs()
    unet = FakeUNet(zero_eps)
    out = sample_video(unet, first, cond, uncond, noise, steps=4, adain=False, pin_first_frame=False)
    sched = make_scheduler()
    sched.set_timesteps(4)
    ac = sched.alphas_cumprod
    factor = (ac[0] / ac[int(sched.timesteps[0])]).sqrt()
    assert torch.equal(unet.calls[0][0][:1], shared_noise(noise))    # frame 0 starts from its raw noise
    torch.testing.assert_close(out, shared_noise(noise) * factor, atol=1e-5, rtol=1e-5)   # and is stepped
    # with AdaIN, the first-frame latent is the colour reference of every frame (frame 0 included)
    out = sample_video(FakeUNet(zero_eps), first, cond, uncond, noise, steps=4, pin_first_frame=False)
    torch.testing.assert_close(out.flatten(-2).mean(-1), first.flatten(-2).mean(-1).expand(-1, -1, 4), atol=1e-5, rtol=0)
    # without a first frame, frames 1.. follow the generated frame 0
    out = sample_video(FakeUNet(zero_eps), None, cond, uncond, noise, steps=4, pin_first_frame=False)
    torch.testing.assert_close(out.flatten(-2).mean(-1), out[:, :, :1].flatten(-2).mean(-1).expand(-1, -1, 4),
                               atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="first_frame_latent is required"):
        sample_video(FakeUNet(zero_eps), None, cond, uncond, noise, steps=2)


@pytest.mark.parametrize("name", ["dpmpp_2m", "euler"])
def test_other_schedulers_keep_frame0_clean_and_pinned(tiny_unet, name):
    first, cond, uncond, noise = _inputs(frames=4, h=8, w=8)
    calls = FakeUNet(lambda x: tiny_unet(x, calls.calls[-1][1], calls.calls[-1][2]))
    out = sample_video(calls, first, cond, uncond, noise, steps=4, scheduler=name)
    assert len(calls.calls) == 4
    for sample, _, _ in calls.calls:                                   # the UNet always sees the clean frame 0
        assert torch.equal(sample[:, :, :1], torch.cat([first] * 2))
    assert torch.equal(out[:, :, :1], first) and torch.isfinite(out).all()
    if name == "euler":  # init_noise_sigma scales frames 1.. only; scale_model_input undoes it at the first step
        torch.testing.assert_close(calls.calls[0][0][:1, :, 1:], shared_noise(noise)[:, :, 1:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "euler"])
def test_oracle_unet_recovers_target_with_every_scheduler(name):
    """A UNet that returns the exact noise of a known clean video x0 (computed from the VP-space model input)
    must lead every scheduler to x0: checks scale_model_input (VP input for the UNet) and the frames-1.. stepping."""
    first, cond, uncond, noise = _inputs(frames=4)
    x0 = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    ac = make_scheduler().alphas_cumprod

    def oracle(sample):
        a = ac[int(round(float(unet.calls[-1][1])))]
        return (sample - a.sqrt() * torch.cat([x0] * 2)) / (1 - a).sqrt()
    unet = FakeUNet(oracle)
    out = sample_video(unet, first, cond, uncond, noise, steps=10, scheduler=name, adain=False)
    if name == "ddim":  # DDIM keeps the initial implied noise and ends at ᾱ[0] (set_alpha_to_one=False)
        a_start = ac[int(unet.calls[0][1])]
        eps = (shared_noise(noise) - a_start.sqrt() * x0) / (1 - a_start).sqrt()
        expected = ac[0].sqrt() * x0 + (1 - ac[0]).sqrt() * eps
    else:
        expected = x0
    torch.testing.assert_close(out[:, :, 1:], expected[:, :, 1:], atol=1e-4, rtol=1e-4)
    assert torch.equal(out[:, :, :1], first)


def test_euler_late_adain_reference_is_in_sample_space():
    """Late-phase AdaIN maps frame 0 by 1/c_in = sqrt(σ_next² + 1) for Euler, and by 1 for DDIM."""
    first, cond, uncond, _ = _inputs()
    for name in ("ddim", "euler"):
        sched = make_scheduler(name)
        sched.set_timesteps(10)
        loop = DenoiseLoop(FakeUNet(zero_eps), sched, cond, uncond, 7.5)
        expected = [1.0] * 10 if name == "ddim" else (sched.sigmas[1:] ** 2 + 1).sqrt().tolist()
        got = []
        for i in range(10):
            sched.scale_model_input(torch.zeros(1), sched.timesteps[i])
            sched._step_index = i + 1  # as after the scheduler step of iteration i
            got.append(loop._frame0_scale(i))
        assert got == pytest.approx(expected, rel=1e-6)


def test_scheduler_instance_is_copied_not_mutated():
    from diffusers import DDIMScheduler
    mine = DDIMScheduler.from_config(make_scheduler().config)
    first, cond, uncond, noise = _inputs()
    a = sample_video(FakeUNet(zero_eps), first, cond, uncond, noise, steps=5, scheduler=mine)
    b = sample_video(FakeUNet(zero_eps), first, cond, uncond, noise, steps=5)
    assert mine.num_inference_steps is None and torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler("k_lms_turbo")


def test_guidance_le_1_runs_cond_only_and_batches_broadcast():
    first, cond, uncond, noise = _inputs(b=2)
    unet = FakeUNet(zero_eps)
    sample_video(unet, first, cond[:1], None, noise, steps=2, guidance_scale=1.0)
    sample, _, ctx = unet.calls[0]
    assert sample.shape[0] == 2 and torch.equal(ctx, cond[:1].expand(2, -1, -1))
    unet = FakeUNet(zero_eps)
    sample_video(unet, first, cond, uncond[:, :20], noise, steps=1)  # different token counts: two passes
    assert [c[2].shape[1] for c in unet.calls] == [20, 77]


def test_unet_dtype_and_fp32_latents():
    class HalfUNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros((), dtype=torch.float16))
            self.dtypes = []

        def forward(self, sample, timestep, encoder_hidden_states):
            self.dtypes.append((sample.dtype, encoder_hidden_states.dtype, torch.is_grad_enabled()))
            return sample * self.w

    first, cond, uncond, noise = _inputs()
    unet = HalfUNet()
    out = sample_video(unet, first, cond, uncond, noise, steps=2)
    assert unet.dtypes == [(torch.float16, torch.float16, False)] * 2
    assert out.dtype == torch.float32 and torch.equal(out[:, :, :1], first)


def test_bad_inputs_give_clear_errors():
    first, cond, uncond, noise = _inputs()
    unet = FakeUNet(zero_eps)
    with pytest.raises(ValueError, match="noise must be raw video noise"):
        sample_video(unet, first, cond, uncond, noise[:, :, 0])
    with pytest.raises(ValueError, match="first_frame_latent must be one frame"):
        sample_video(unet, first[..., :4], cond, uncond, noise)
    with pytest.raises(ValueError, match="steps must be"):
        sample_video(unet, first, cond, uncond, noise, steps=0)
    with pytest.raises(ValueError, match="alpha"):
        sample_video(unet, first, cond, uncond, noise, shared_noise_alpha=1.5)
    with pytest.raises(ValueError, match="uncond"):
        sample_video(unet, first, cond, None, noise, steps=1)
    assert not unet.calls
