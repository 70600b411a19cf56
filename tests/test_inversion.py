"""DDIM inversion: parity with the official ``ddim_inversion`` (fixture), determinism, callbacks, bad inputs."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lamp_model import ddim_invert
from lamp_model.inversion import inverse_scheduler


@pytest.fixture(scope="module")
def fx():
    from conftest import FIXTURES
    path = FIXTURES / "inversion.safetensors"
    if not path.is_file():
        pytest.skip(f"inversion fixture not found at {path}")
    return load_file(path)


@pytest.fixture(scope="module")
def official_unet():
    """The tiny official model, read from its official ``unet/`` folder (the .bin checkpoint)."""
    from conftest import FIXTURES
    from lamp_model import load_unet
    if not (FIXTURES / "unet").is_dir():
        pytest.skip(f"official fixtures not found at {FIXTURES}")
    return load_unet(FIXTURES / "unet").eval()


class ReplayUNet:
    """Returns the fixture's captured ε for each step (teacher forcing) and records the inputs."""

    def __init__(self, outputs: dict[int, torch.Tensor]):
        self.outputs, self.calls = outputs, []

    def __call__(self, sample, timestep, encoder_hidden_states):
        self.calls.append((sample.clone(), timestep.clone(), encoder_hidden_states.clone()))
        return self.outputs[int(timestep)]


def test_schedule_matches_official(fx):
    sched = inverse_scheduler(50)
    assert torch.equal(sched.timesteps, fx["timesteps_int64"])
    assert torch.equal(sched.alphas_cumprod, fx["alphas_cumprod"])
    assert float(sched.initial_alpha_cumprod) == pytest.approx(float(fx["alpha_cumprod_from"][0]), abs=0)
    assert torch.equal(sched.alphas_cumprod[fx["timesteps_int64"]], fx["alpha_cumprod_to"])


@pytest.mark.parametrize("step", [0, 1, 2, 25, 48, 49])
def test_teacher_forced_step_matches_official(fx, step):
    """From the official latent i and its captured ε, one of our steps gives the official latent i+1."""
    t = int(fx["timesteps_int64"][step])
    sched = inverse_scheduler(50)
    out = sched.step(fx[f"unet_out_step{step:02d}"], fx["timesteps_int64"][step], fx["inverted_steps"][step])
    assert (out.prev_sample - fx["inverted_steps"][step + 1]).abs().max() <= 1e-5, t


def test_full_inversion_matches_official(fx, official_unet):
    steps = ddim_invert(official_unet, fx["x0"], fx["context"], steps=50, return_all=True)
    assert steps.shape == fx["inverted_steps"].shape
    assert torch.equal(steps[0], fx["x0"])
    assert (steps - fx["inverted_steps"]).abs().max() <= 1e-4
    final = ddim_invert(official_unet, fx["x0"], fx["context"])
    assert (final - fx["inverted_final"]).abs().max() <= 1e-4
    assert torch.equal(final, steps[-1])


def test_unet_sees_official_inputs(fx):
    """Timesteps ascending as 0-dim tensors, the context at every step, the current latent, one pass (no CFG)."""
    outputs = {int(t): torch.zeros_like(fx["x0"]) for t in fx["timesteps_int64"]}
    unet = ReplayUNet(outputs)
    ddim_invert(unet, fx["x0"], fx["context"], steps=50)
    assert len(unet.calls) == 50
    assert [int(c[1]) for c in unet.calls] == fx["timesteps_int64"].tolist()
    assert all(c[1].ndim == 0 for c in unet.calls)
    assert all(torch.equal(c[2], fx["context"]) and c[0].shape == fx["x0"].shape for c in unet.calls)
    assert torch.equal(unet.calls[0][0], fx["x0"])


def test_deterministic_and_callback(tiny_unet):
    g = torch.Generator().manual_seed(0)
    x0 = 0.5 * torch.randn(1, 4, 4, 8, 8, generator=g)
    ctx = torch.randn(1, 5, 16, generator=g)
    seen = []
    a = ddim_invert(tiny_unet, x0, ctx, steps=6, callback=lambda i, n, x: seen.append((i, n, x)))
    b = ddim_invert(tiny_unet, x0, ctx, steps=6)
    assert torch.equal(a, b)
    assert [(i, n) for i, n, _ in seen] == [(i, 6) for i in range(6)]
    assert torch.equal(seen[-1][2], a)
    assert not torch.equal(a, x0)


def test_batch_and_shared_context(tiny_unet):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 4, 3, 8, 8, generator=g)
    ctx = torch.randn(1, 5, 16, generator=g)
    both = ddim_invert(tiny_unet, x0, ctx, steps=3)
    one = ddim_invert(tiny_unet, x0[1:], ctx, steps=3)
    assert (both[1:] - one).abs().max() < 1e-5


def test_callback_can_stop():
    class Stop(Exception):
        pass

    def cb(i, n, x):
        if i == 1:
            raise Stop

    with pytest.raises(Stop):
        ddim_invert(lambda x, t, encoder_hidden_states: torch.zeros_like(x), torch.zeros(1, 4, 2, 8, 8),
                    torch.zeros(1, 3, 8), steps=5, callback=cb)


def test_bad_inputs_are_named(tiny_unet, tiny_config):
    from diffusers import UNet2DConditionModel
    ctx = torch.zeros(1, 5, 16)
    with pytest.raises(ValueError, match=r"clip \[B, 4, F, h, w\]"):
        ddim_invert(tiny_unet, torch.zeros(4, 4, 8, 8), ctx)
    with pytest.raises(ValueError, match="steps must be an integer"):
        ddim_invert(tiny_unet, torch.zeros(1, 4, 2, 8, 8), ctx, steps=0)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        ddim_invert(tiny_unet, torch.zeros(1, 4, 2, 8, 8), torch.zeros(5, 16))
    with pytest.raises(ValueError, match="cross-attention takes 16"):
        ddim_invert(tiny_unet, torch.zeros(1, 4, 2, 8, 8), torch.zeros(1, 5, 768))
    with pytest.raises(ValueError, match="takes 4"):
        ddim_invert(tiny_unet, torch.zeros(1, 8, 2, 8, 8), ctx)
    with pytest.raises(ValueError, match="2-D image UNet"):
        ddim_invert(UNet2DConditionModel(**tiny_config), torch.zeros(1, 4, 2, 8, 8), ctx)
