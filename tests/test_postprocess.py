"""Latent AdaIN and pixel histogram matching against the official fixtures; colour-match options."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lamp_model.postprocess import adain_latent, color_match, match_histogram


@pytest.fixture(scope="module")
def fx():
    from conftest import FIXTURES
    return load_file(FIXTURES / "postprocess.safetensors")


def _video_hwc(video):  # fixture layout (1, 3, F, H, W) -> [F, H, W, 3]
    return video[0].permute(1, 2, 3, 0)


# ------------------------------------------------------------------------------------------ AdaIN
def test_adain_matches_official(fx):
    out = adain_latent(fx["adain_content"], fx["adain_style"])
    err = (out - fx["adain_out"]).abs().max().item()
    print(f"AdaIN: max abs err {err:.3g}")
    assert err <= 1e-5
    assert out[1, 2].std().item() == pytest.approx(1e-4, rel=1e-2)       # constant style channel: std = sqrt(eps)
    assert torch.allclose(out[0, 3], fx["adain_style"][0, 3].mean().expand(16, 16), atol=1e-6)  # constant content


def test_adain_fp16_input_is_computed_in_fp32(fx):
    c, s = fx["adain_content"].half(), fx["adain_style"].half()
    out = adain_latent(c, s)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()     # naive fp16 gives 0/0 on constant channels
    assert torch.equal(out, adain_latent(c.float(), s.float()).half())


def test_adain_video_broadcasts_one_reference_frame():
    g = torch.Generator().manual_seed(0)
    x, ref = torch.randn(2, 4, 3, 5, 6, generator=g) * 2 + 1, torch.randn(2, 4, 7, 8, generator=g)
    out = adain_latent(x, ref)
    for f in range(3):
        torch.testing.assert_close(out[:, :, f], adain_latent(x[:, :, f], ref), atol=1e-6, rtol=0)
    torch.testing.assert_close(adain_latent(x, ref[:, :, None]), out, atol=0, rtol=0)
    with pytest.raises(ValueError, match="does not fit"):
        adain_latent(x, ref[:, :3])


# ------------------------------------------------------------------------------------------ histograms
@pytest.mark.parametrize("layout", ["hwc", "chw"])
def test_histogram_matching_matches_official_exactly(fx, layout):
    video, expected = _video_hwc(fx["hist_video_in"]), _video_hwc(fx["hist_video_out"])
    if layout == "chw":
        video, expected = video.permute(0, 3, 1, 2), expected.permute(0, 3, 1, 2)
    out = torch.cat([video[:1], match_histogram(video[1:], video[0])])
    mismatches = int((out != expected).sum())
    print(f"histogram matching ({layout}): {mismatches} mismatching values of {out.numel()}")
    assert mismatches == 0 and out.dtype == expected.dtype and out.shape == expected.shape


def _numpy_reference(frame, ref):
    """The documented algorithm, one frame at a time in NumPy (density histograms, float64 cumsum)."""
    import numpy as np
    f8, r8 = (frame.numpy() * 255.0).astype(np.uint8), (ref.numpy() * 255.0).astype(np.uint8)
    out = np.empty(f8.shape, np.float64)
    for ch in range(3):
        kw = dict(bins=256, range=(0, 256), density=True)
        cdf_f, cdf_r = np.cumsum(np.histogram(f8[..., ch], **kw)[0]), np.cumsum(np.histogram(r8[..., ch], **kw)[0])
        out[..., ch] = np.clip(np.searchsorted(cdf_r, cdf_f, side="left"), 0, 255)[f8[..., ch]] / 255.0
    return torch.from_numpy(out).float()


def test_histogram_matching_equals_numpy_reference_with_cdf_rounding():
    """Random frames, and a two-level reference whose CDF hits 1.0 exactly: where a frame's float CDF sums to
    slightly above 1, no reference level reaches it and the official lookup clips to 255. Kept as official."""
    g = torch.Generator().manual_seed(4)
    frames = torch.rand(4, 24, 32, 3, generator=g) ** torch.tensor([0.5, 1.0, 2.0])
    two_level = torch.full((24, 32, 3), 0.5)
    two_level[:12] = 0.25
    for ref in (torch.rand(17, 13, 3, generator=g), two_level):
        out = match_histogram(frames, ref)
        expected = torch.stack([_numpy_reference(f, ref) for f in frames])
        assert torch.equal(out, expected)
    assert 255 in (out * 255).round().unique().tolist()                   # the quirk is exercised


def test_histogram_matching_properties():
    g = torch.Generator().manual_seed(1)
    frames, ref = torch.rand(3, 10, 12, 3, generator=g) ** 2, torch.rand(9, 11, 3, generator=g)
    out = match_histogram(frames, ref)
    assert torch.equal(out, (out * 255).round() / 255)                    # quantised to k/255
    assert torch.equal(match_histogram(frames[1:2], ref), out[1:2])       # frames are independent (batched)
    out64 = match_histogram(frames.double(), ref.double())
    assert out64.dtype == torch.float64 and torch.equal((out64 * 255).round(), (out * 255).round())
    with pytest.raises(ValueError, match="reference must be one frame"):
        match_histogram(frames, ref.permute(2, 0, 1))
    with pytest.raises(ValueError, match="expected frames"):
        match_histogram(frames[0], ref)


# ------------------------------------------------------------------------------------------ colour match
def test_color_match_modes(fx):
    video, expected = _video_hwc(fx["hist_video_in"]), _video_hwc(fx["hist_video_out"])
    assert torch.equal(color_match(video), expected)                      # default: histogram to frame 0
    assert torch.equal(color_match(video, strength=0.0), video)
    half = color_match(video, strength=0.5)
    torch.testing.assert_close(half, (video + expected) / 2, atol=1e-6, rtol=0)

    ada = color_match(video, mode="adain")
    assert torch.equal(ada[0], video[0])
    ref_mean = video[0].mean((0, 1))
    torch.testing.assert_close(ada[1].mean((0, 1)), ref_mean, atol=2e-3, rtol=0)  # frame 1 hardly clamps
    both = color_match(video, mode="both")
    assert torch.equal(both[1:], (both[1:] * 255).round() / 255) and both.shape == video.shape

    ref = torch.rand(20, 30, 3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(color_match(video, ref=ref), match_histogram(video, ref))  # explicit ref: all frames
    with pytest.raises(ValueError, match="mode"):
        color_match(video, mode="lab")
