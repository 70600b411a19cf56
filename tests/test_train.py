"""Training engine: the LAMP loss, the trainable set, exact resume, atomic saves (tiny models, CPU)."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_CONFIG
from lamp_model.data import LatentClipSet
from lamp_model.train import (LOSS_LOG, LOSS_PLOT, MOTION_FILE, STATE_FILE, MotionTrainer, TrainConfig,
                              default_noise_scheduler, lamp_loss, loss_plot)
from lamp_model.unet3d import LampUNet3D, trainable_parameters

FAST = dict(n_frames=3, width=64, height=64, hflip=False, gradient_checkpointing=False, save_every=0, validate_every=0)


def fresh_unet(seed: int = 0) -> LampUNet3D:
    torch.manual_seed(seed)
    return LampUNet3D(TINY_CONFIG)


def moving_clips(n: int = 2, frames: int = 6) -> LatentClipSet:
    """Latent clips [frames, 4, 8, 8]: a random pattern shifting one column per frame (a learnable motion)."""
    g = torch.Generator().manual_seed(1)
    clips = []
    for _ in range(n):
        base = torch.randn(4, 8, 8, generator=g)
        clips.append(torch.stack([base.roll(i, dims=-1) for i in range(frames)]))
    return LatentClipSet.from_latents(clips, flipped=[c.flip(-1) for c in clips])


def embeddings() -> torch.Tensor:
    return torch.randn(1, 5, TINY_CONFIG["cross_attention_dim"], generator=torch.Generator().manual_seed(2))


def make_trainer(unet=None, output_dir=None, **overrides) -> MotionTrainer:
    cfg = TrainConfig(**{**FAST, **overrides})
    return MotionTrainer(unet or fresh_unet(), moving_clips(), embeddings(), cfg, output_dir=output_dir)


class Recorder(torch.nn.Module):
    """Wraps a UNet: records its input and optionally replaces frame 0 of its prediction."""

    def __init__(self, unet, frame0=None):
        super().__init__()
        self.unet, self.frame0, self.inputs = unet, frame0, []

    def forward(self, sample, t, ctx):
        self.inputs.append(sample.detach().clone())
        out = self.unet(sample, t, ctx)
        if self.frame0 is not None:
            out = torch.cat([self.frame0.expand_as(out[:, :, :1]), out[:, :, 1:]], dim=2)
        return out


def loss_with(model, latents, pin=True):
    return lamp_loss(model, latents, embeddings(), default_noise_scheduler(),
                     generator=torch.Generator().manual_seed(7), pin_first_frame=pin)


@torch.no_grad()
def test_frame0_prediction_does_not_enter_the_loss():
    unet = fresh_unet().eval()
    latents = moving_clips().clips[0].mean[:4].permute(1, 0, 2, 3)[None]
    plain = Recorder(unet)
    base = loss_with(plain, latents)
    # Frame 0 enters the UNet clean (pinned), the rest noised.
    assert torch.equal(plain.inputs[0][:, :, 0], latents[:, :, 0])
    assert not torch.allclose(plain.inputs[0][:, :, 1:], latents[:, :, 1:])
    perturbed = loss_with(Recorder(unet, frame0=torch.full((1, 4, 1, 8, 8), 1e3)), latents)
    assert torch.equal(base, perturbed)
    # The ablation (no pinning) noises frame 0 and puts it in the loss.
    assert not torch.equal(loss_with(Recorder(unet), latents, pin=False),
                           loss_with(Recorder(unet, frame0=torch.full((1, 4, 1, 8, 8), 1e3)), latents, pin=False))


@torch.no_grad()
def test_loss_is_the_official_formula():
    unet = fresh_unet().eval()
    latents = torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([10, 900])
    sched = default_noise_scheduler()
    got = lamp_loss(unet, latents, embeddings().expand(2, -1, -1), sched, noise=noise, timesteps=t)
    a = sched.alphas_cumprod[t].view(2, 1, 1, 1, 1)
    noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
    noisy[:, :, 0] = latents[:, :, 0]
    pred = unet(noisy, t, embeddings().expand(2, -1, -1))
    want = ((pred[:, :, 1:] - noise[:, :, 1:]) ** 2).mean()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_loss_decreases():
    trainer = make_trainer(learning_rate=2e-3, n_frames=4)
    latents = trainer.clips.clips[0].mean[:4].permute(1, 0, 2, 3)[None]

    def held_out() -> float:  # fixed noise/timesteps: a deterministic yardstick
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            return sum(float(lamp_loss(trainer.unet, latents, embeddings(), trainer.noise_scheduler, generator=g))
                       for _ in range(6)) / 6

    before = held_out()
    losses = trainer.train(30)
    after = held_out()
    assert len(losses) == 30 and trainer.global_step == 30
    assert after < 0.95 * before, (before, after)
    assert sum(losses[-10:]) < sum(losses[:10])


def test_only_the_trainable_set_changes():
    unet = fresh_unet()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    trainer = make_trainer(unet, learning_rate=1e-3)
    trainer.train(2)
    names = {n for n, _ in trainable_parameters(unet)}
    after = unet.state_dict()
    for key, value in after.items():
        if key in names:
            continue
        assert torch.equal(value, before[key]), f"{key} changed but is not trainable"
    changed = {k for k in names if not torch.equal(after[k], before[k])}
    kinds = {k.split(".")[-2] if "attn1" not in k else "attn1.to_q" for k in changed}
    assert {"conv1d", "conv_gate", "attn1.to_q"} <= kinds | {k.split(".")[-3] for k in changed}
    assert any(".attn_temp." in k for k in changed)
    assert not any("norm_temp" in k for k in names)  # frozen at its init, officially


def test_resume_is_exact(tmp_path):
    straight = make_trainer(hflip=True, learning_rate=1e-3)
    straight.train(4)

    first = make_trainer(hflip=True, learning_rate=1e-3)
    first.train(2)
    first.save(tmp_path / "state.safetensors")
    resumed = make_trainer(hflip=True, learning_rate=1e-3)  # a fresh process: same base, new trainer
    resumed.load(tmp_path / "state.safetensors")
    assert resumed.global_step == 2
    resumed.train(2)

    assert resumed.loss_history == straight.loss_history
    for (name, a), (_, b) in zip(trainable_parameters(straight.unet), trainable_parameters(resumed.unet)):
        assert torch.equal(a, b), name
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    import lamp_model.weights as weights

    trainer = make_trainer()
    trainer.train(1)
    path = trainer.save(tmp_path / "state.safetensors")
    good = path.read_bytes()
    trainer.train(1)

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(weights, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        trainer.save(path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["state.safetensors"]  # no temporary file left
    monkeypatch.undo()
    again = make_trainer()
    again.load(path)
    assert again.global_step == 1


def test_checkpoint_writes_motion_state_log_and_plot(tmp_path):
    from lamp_model.weights import load_unet, read_motion

    trainer = make_trainer(output_dir=tmp_path, save_every=2, keep_every=2, learning_rate=1e-3)
    trainer.motion_metadata["motion_prompt"] = "pattern slides right"
    trainer.train(3)
    assert (tmp_path / STATE_FILE).is_file() and (tmp_path / "motion-step000002.safetensors").is_file()
    tensors, meta = read_motion(tmp_path / MOTION_FILE)
    assert meta["motion_prompt"] == "pattern slides right" and meta["training_steps"] == "2"
    assert meta["n_frames"] == "3" and meta["width"] == "64"
    assert all(v.dtype == torch.float16 for v in tensors.values())
    log = [json.loads(line) for line in (tmp_path / LOSS_LOG).read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    from PIL import Image

    assert Image.open(tmp_path / LOSS_PLOT).size == (640, 360)
    # The motion file on the untouched base gives the trained UNet (fp16 rounding of the motion tensors).
    base = {k: v for k, v in fresh_unet().state_dict().items()}
    from lamp_model.weights import motion_state_dict

    loaded = load_unet(tmp_path / MOTION_FILE, base=_as_2d(base))
    for key, value in motion_state_dict(loaded).items():
        torch.testing.assert_close(value, tensors[key].float())
    # Resuming rewrites the log up to the saved step (step 3 was never saved).
    resumed = make_trainer(output_dir=tmp_path)
    resumed.load(tmp_path / STATE_FILE)
    assert [json.loads(line)["step"] for line in (tmp_path / LOSS_LOG).read_text().splitlines()] == [1, 2]


def _as_2d(lamp_state):
    """A LAMP UNet state dict -> the 2-D diffusers base it was built on (drop motion keys, un-wrap convs)."""
    from lamp_model.unet3d import is_motion_key

    return {k.replace(".conv2d.", "."): v for k, v in lamp_state.items() if not is_motion_key(k)}


def test_bf16_autocast_keeps_fp32_master_weights():
    unet = fresh_unet().to(torch.bfloat16)  # e.g. a half-precision base
    trainer = make_trainer(unet, mixed_precision="bf16", learning_rate=1e-3)
    loss = trainer.step()
    assert torch.isfinite(torch.tensor(loss))
    trainable = {id(p) for _, p in trainable_parameters(unet)}
    assert all(p.dtype == torch.float32 for p in unet.parameters() if id(p) in trainable)
    # Frozen weights go to the autocast dtype on CUDA only; on CPU they are up-cast to fp32.
    assert all(p.dtype == torch.float32 for p in unet.parameters() if id(p) not in trainable)


def test_half_base_without_mixed_precision_is_upcast():
    unet = fresh_unet().to(torch.float16)
    trainer = make_trainer(unet)
    trainer.step()
    assert all(p.dtype == torch.float32 for p in unet.parameters())


def test_gradient_checkpointing_gives_the_same_step():
    a, b = make_trainer(gradient_checkpointing=False), make_trainer(gradient_checkpointing=True)
    assert a.step() == pytest.approx(b.step(), rel=1e-6)
    for (name, pa), (_, pb) in zip(trainable_parameters(a.unet), trainable_parameters(b.unet)):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-7, msg=name)


def test_bad_settings_have_clear_messages(tmp_path):
    with pytest.raises(ValueError, match="mixed_precision must be"):
        TrainConfig(mixed_precision="fp8")
    with pytest.raises(ValueError, match=r"unknown training setting\(s\) \['lr'\]"):
        TrainConfig.from_dict({"lr": 1e-4})
    with pytest.raises(ValueError, match="n_frames must be >= 2"):
        TrainConfig(n_frames=1)
    with pytest.raises(ValueError, match=r"text_embeddings must be \[1, L, D\] or \[2, L, D\]"):
        MotionTrainer(fresh_unet(), moving_clips(), torch.zeros(3, 5, 16), TrainConfig(**FAST))
    from lamp_model.data import VideoSetError

    with pytest.raises(VideoSetError, match="too short"):
        make_trainer(n_frames=7)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="bitsandbytes is not installed"):
            make_trainer(use_8bit_adam=True)
    trainer = make_trainer()
    with pytest.raises(FileNotFoundError, match="no training state"):
        trainer.load(tmp_path / "missing.safetensors")
    trainer.save_motion(tmp_path / "motion.safetensors")
    with pytest.raises(ValueError, match="not a LAMP training state"):
        trainer.load(tmp_path / "motion.safetensors")


def test_nan_loss_stops_without_updating(monkeypatch):
    trainer = make_trainer()
    before = [p.clone() for _, p in trainer.trainable]
    monkeypatch.setattr("lamp_model.train.lamp_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(FloatingPointError, match="weights were not updated"):
        trainer.step()
    assert all(torch.equal(a, p) for a, (_, p) in zip(before, trainer.trainable)) and trainer.global_step == 0


def test_loss_plot_draws_curve():
    img = loss_plot([1.0, 0.8, float("nan"), 0.5, 0.45], size=(200, 120))
    assert img.size == (200, 120)
    colours = set(img.convert("RGB").tobytes()[i:i + 3] for i in range(0, 200 * 120 * 3, 3))
    assert bytes((20, 60, 160)) in colours  # the moving-average line
    assert loss_plot([]).size == (640, 360)
