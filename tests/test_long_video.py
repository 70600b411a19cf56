"""Long videos (lamp_model.long_video): plans, the seams of both strategies, the content lock, colour
references, progress and cancel, and equality with sample_video for short videos."""
from __future__ import annotations

import pytest
import torch

from lamp_model.attention import FirstFrameBank
from lamp_model.long_video import match_histogram_long, plan_long_video, sample_long_video
from lamp_model.noise import make_raw_noise, shared_noise
from lamp_model.postprocess import match_histogram
from lamp_model.sampling import make_scheduler, sample_video

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H = W = 8
SEG = 4  # tiny segments keep the tests fast; the engine default is 16


class Recorder(torch.nn.Module):
    """Wraps a UNet and keeps a copy of every input it is called with."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.inputs = unet, []

    def set_frame0_bank(self, bank):
        self.unet.set_frame0_bank(bank)

    def forward(self, sample, timestep, encoder_hidden_states):
        self.inputs.append(sample.detach().clone())
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states)


def _inputs(frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    first = torch.randn(1, 4, 1, H, W, generator=g)
    cond, uncond = torch.randn(1, 77, 16, generator=g), torch.randn(1, 77, 16, generator=g)
    return first, cond, uncond, make_raw_noise(seed + 1, (1, 4, frames, H, W))


# ---------------------------------------------------------------------------------------------- plans
def test_segment_plan_shares_the_pinned_frame():
    plan = plan_long_video(64, "segments", overlap=1)
    assert plan.spans == ((0, 16), (15, 31), (30, 46), (45, 61), (60, 64))
    assert plan.seams == (15, 30, 45, 60) and plan.total_steps(50) == 250
    assert plan_long_video(64, "segments").spans == ((0, 16), (12, 28), (24, 40), (36, 52), (48, 64))  # default 4
    assert plan_long_video(16, "segments").single and plan_long_video(2, "windows").single


def test_window_plan_covers_every_frame_with_the_given_overlap():
    for frames, overlap in ((64, 4), (64, 8), (48, 0), (128, 14), (17, 4)):
        plan = plan_long_video(frames, "windows", overlap=overlap)
        assert all(stop - start == 15 for start, stop in plan.spans)
        covered = sorted({f for start, stop in plan.spans for f in range(start, stop)})
        assert covered == list(range(1, frames))
        assert all(a[1] - b[0] >= overlap for a, b in zip(plan.spans, plan.spans[1:]))
        assert plan.total_steps(50) == 50


@pytest.mark.parametrize("kwargs, words", [
    ({"strategy": "context"}, "segments, windows"), ({"overlap": 0}, "1..15"), ({"overlap": 16}, "1..15"),
    ({"strategy": "windows", "overlap": 15}, "0..14"), ({"segment_frames": 2}, "at least 3"),
])
def test_plan_refuses_bad_options_by_name(kwargs, words):
    with pytest.raises(ValueError, match=words.replace(".", r"\.")):
        plan_long_video(64, **kwargs)


# ---------------------------------------------------------------------------------------------- seams
def test_each_segment_starts_from_the_previous_segments_last_frame(tiny_unet):
    first, cond, uncond, noise = _inputs(10)
    rec = Recorder(tiny_unet)
    video = sample_long_video(rec, first, cond, uncond, noise, steps=3, segment_frames=SEG, overlap=1,
                              content_lock=False)
    plan = plan_long_video(10, "segments", SEG, 1)
    assert plan.spans == ((0, 4), (3, 7), (6, 10))
    assert torch.equal(video[:, :, :1], first)
    assert len(rec.inputs) == 3 * len(plan.spans)
    for j, (start, stop) in enumerate(plan.spans):
        for x in rec.inputs[3 * j:3 * j + 3]:
            assert x.shape[2] == stop - start  # one segment at a time
            pinned = x[:1, :, :1]
            assert torch.equal(pinned, video[:, :, start:start + 1])  # clean, exact, at every step
            if j > 0:
                assert start == plan.spans[j - 1][1] - 1  # ... which is the previous segment's last frame
    assert torch.isfinite(video).all() and video.shape == (1, 4, 10, H, W)


def test_every_window_holds_the_clean_frame_zero(tiny_unet):
    first, cond, uncond, noise = _inputs(12)
    rec = Recorder(tiny_unet)
    video = sample_long_video(rec, first, cond, uncond, noise, steps=2, strategy="windows", segment_frames=SEG,
                              overlap=1)
    plan = plan_long_video(12, "windows", SEG, 1)
    assert len(rec.inputs) == 2 * len(plan.spans) and len(plan.spans) >= 4
    for x in rec.inputs:
        assert x.shape[2] == SEG
        assert torch.equal(x[:1, :, :1], first) and torch.equal(x[1:, :, :1], first)  # uncond and cond halves
    assert torch.equal(video[:, :, :1], first)


def test_overlap_frames_are_imposed_at_the_step_noise_level(tiny_unet):
    first, cond, uncond, noise = _inputs(7)
    rec = Recorder(tiny_unet)
    video = sample_long_video(rec, first, cond, uncond, noise, steps=2, segment_frames=SEG, overlap=2,
                              adain=False, content_lock=False)
    plan = plan_long_video(7, "segments", SEG, 2)
    assert plan.spans == ((0, 4), (2, 6), (4, 7))
    sched = make_scheduler()
    sched.set_timesteps(2)
    mixed = shared_noise(noise, 0.2)
    x = rec.inputs[2][:1]  # segment 2, step 0: frame 1 of the segment is video frame 3, known
    expected = sched.add_noise(video[:, :, 3:4], mixed[:, :, 3:4], sched.timesteps[:1])
    torch.testing.assert_close(x[:, :, 1:2], expected, rtol=0, atol=1e-6)
    assert torch.equal(x[:, :, :1], video[:, :, 2:3])


@pytest.mark.parametrize("strategy", ["segments", "windows"])
def test_short_videos_are_exactly_sample_video(tiny_unet, strategy):
    first, cond, uncond, noise = _inputs(4)
    ref = sample_video(tiny_unet, first, cond, uncond, noise, steps=3)
    out = sample_long_video(tiny_unet, first, cond, uncond, noise, steps=3, strategy=strategy, segment_frames=SEG)
    assert torch.equal(out, ref)


def test_first_segment_is_an_ordinary_lamp_run(tiny_unet):
    """Segment 1 sees exactly what sample_video would see for its frames (GroupNorm pools over the segment)."""
    first, cond, uncond, noise = _inputs(10)
    ref = sample_video(tiny_unet, first, cond, uncond, noise[:, :, :SEG], steps=3)
    out = sample_long_video(tiny_unet, first, cond, uncond, noise, steps=3, segment_frames=SEG)
    assert torch.equal(out[:, :, :SEG], ref)


@pytest.mark.parametrize("scheduler", ["euler", "dpmpp_2m"])
def test_other_schedulers_with_overlap(tiny_unet, scheduler):
    first, cond, uncond, noise = _inputs(8)
    out = sample_long_video(tiny_unet, first, cond, uncond, noise, steps=3, scheduler=scheduler,
                            segment_frames=SEG, overlap=2)
    assert torch.isfinite(out).all() and torch.equal(out[:, :, :1], first)


# ---------------------------------------------------------------------------------------------- content lock
def test_frame0_bank_reads_the_recorded_frame(tiny_unet):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 4, H, W, generator=g)
    other = x.clone()
    other[:, :, :1] = torch.randn(1, 4, 1, H, W, generator=g)
    ctx = torch.randn(1, 77, 16, generator=g)
    plain = tiny_unet(x, 500, ctx)
    bank = FirstFrameBank()
    tiny_unet.set_frame0_bank(bank)
    try:
        assert torch.equal(tiny_unet(x, 500, ctx), plain)  # recording does not change the pass
        bank.mode = "read"
        assert torch.equal(tiny_unet(x, 500, ctx), plain)  # reading its own recording is the plain pass
        tiny_unet.set_frame0_bank(None)
        changed = tiny_unet(other, 500, ctx)
        tiny_unet.set_frame0_bank(bank)
        locked = tiny_unet(other, 500, ctx)  # frame-0 attention reads x's frame 0
        assert not torch.allclose(locked, changed) and not torch.allclose(locked, plain)
        with pytest.raises(RuntimeError, match="record a pass first"):
            tiny_unet(torch.randn(1, 4, 4, 2 * H, W, generator=g), 500, ctx)
    finally:
        tiny_unet.set_frame0_bank(None)
    assert all(b.frame0_bank is None for b in tiny_unet.modules() if hasattr(b, "first_frame_kv_only"))


def test_content_lock_records_the_original_frame_one(tiny_unet):
    first, cond, uncond, noise = _inputs(10)
    rec = Recorder(tiny_unet)
    locked = sample_long_video(rec, first, cond, uncond, noise, steps=2, segment_frames=SEG, overlap=1,
                               content_lock=True)
    # segment 1: one pass per step; segments 2, 3: a recording pass (frame 0 = frame one) + the real pass
    assert len(rec.inputs) == 2 + 2 * 2 * 2
    for j in range(2):
        record, real = rec.inputs[2 + 4 * j], rec.inputs[3 + 4 * j]
        assert torch.equal(record[:1, :, :1], first) and torch.equal(record[:, :, 1:], real[:, :, 1:])
        assert torch.equal(real[:1, :, :1], locked[:, :, 3 + 3 * j:4 + 3 * j])
    free = sample_long_video(tiny_unet, first, cond, uncond, noise, steps=2, segment_frames=SEG, overlap=1,
                             content_lock=False)
    assert torch.equal(free[:, :, :SEG], locked[:, :, :SEG]) and not torch.allclose(free, locked)


def test_content_lock_needs_a_lamp_unet():
    first, cond, uncond, noise = _inputs(7)
    with pytest.raises(ValueError, match="content_lock needs the LAMP UNet"):
        sample_long_video(lambda x, t, encoder_hidden_states: torch.zeros_like(x), first, cond, uncond, noise,
                          steps=1, segment_frames=SEG, content_lock=True)


# ---------------------------------------------------------------------------------------------- colour
def _stats(x):
    flat = x.flatten(-2)
    return flat.mean(-1), flat.std(-1)


def test_colour_reference_original_vs_segment(tiny_unet):
    first, cond, uncond, noise = _inputs(10)
    plan = plan_long_video(10, "segments", SEG, 1)
    orig = sample_long_video(tiny_unet, first, cond, uncond, noise, steps=2, segment_frames=SEG, overlap=1,
                             color_reference="original")
    seg = sample_long_video(tiny_unet, first, cond, uncond, noise, steps=2, segment_frames=SEG, overlap=1,
                            color_reference="segment")
    m0, s0 = _stats(first[:, :, 0])
    for f in range(1, 10):
        m, s = _stats(orig[:, :, f])
        torch.testing.assert_close(m, m0, atol=1e-4, rtol=0)
        torch.testing.assert_close(s, s0, atol=1e-4, rtol=1e-4)
    start = plan.spans[2][0]
    ms, ss = _stats(seg[:, :, start])
    torch.testing.assert_close(_stats(seg[:, :, start + 1])[0], ms, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="color_reference"):
        sample_long_video(tiny_unet, first, cond, uncond, noise, steps=1, segment_frames=SEG, color_reference="x")


def test_histogram_matching_of_long_videos():
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(10, 6, 6, 3, generator=g) * torch.linspace(0.3, 1, 10)[:, None, None, None]
    plan = plan_long_video(10, "segments", SEG, 1)
    orig = match_histogram_long(frames, plan, "original")
    assert torch.equal(orig, torch.cat([frames[:1], match_histogram(frames[1:], frames[0])]))
    seg = match_histogram_long(frames, plan, "segment")
    assert torch.equal(seg[:4], orig[:4])
    assert torch.equal(seg[4:7], match_histogram(frames[4:7], seg[3]))  # segment 2 matched to its first frame
    with pytest.raises(ValueError, match="frames but the plan"):
        match_histogram_long(frames[:5], plan)


# ---------------------------------------------------------------------------------------------- progress
@pytest.mark.parametrize("strategy, total", [("segments", 9), ("windows", 3)])
def test_progress_counts_all_steps_and_cancel_stops(tiny_unet, strategy, total):
    first, cond, uncond, noise = _inputs(10)
    seen = []
    sample_long_video(tiny_unet, first, cond, uncond, noise, steps=3, strategy=strategy, segment_frames=SEG,
                      overlap=1, callback=lambda i, n, lat: seen.append((i, n)))
    assert seen == [(i, total) for i in range(total)]


class Cancelled(Exception):
    pass


@pytest.mark.parametrize("strategy, at, calls", [("segments", 4, 5), ("windows", 1, 2 * 4)])
def test_cancel_between_steps(tiny_unet, strategy, at, calls):
    first, cond, uncond, noise = _inputs(10)

    def cancel(i, n, lat):
        if i == at:
            raise Cancelled

    rec = Recorder(tiny_unet)
    with pytest.raises(Cancelled):
        sample_long_video(rec, first, cond, uncond, noise, steps=3, strategy=strategy, segment_frames=SEG,
                          overlap=1, content_lock=False, callback=cancel)
    assert len(rec.inputs) == calls  # segments: after segment 2's 2nd step; windows: after step 2 (4 windows)
