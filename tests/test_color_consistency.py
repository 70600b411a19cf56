"""Colour consistency over static pixels (not in the paper): masked AdaIN and masked histogram matching keep a
change of size that the official whole-frame transfers undo, still correct a global colour drift, fall back to
the whole frame when the mask is tiny, and leave the official default untouched."""
from __future__ import annotations

import pytest
import torch

from lamp_model.postprocess import adain_latent, color_match, match_histogram, static_mask
from lamp_model.sampling import adain_schedule, final_adain, sample_video

SIZE, BG, OBJ = 32, 0.2, 0.9
COLOUR = torch.tensor([1.0, 0.6, 0.3])  # per-channel object contrast


def scene(half: int, seed: int = 0, plain: bool = False) -> torch.Tensor:
    """``[3, 32, 32]`` in 0..1: a square of half-side ``half`` centred on a background, both textured unless
    ``plain`` (the same texture for every ``half``, so only the object's extent differs)."""
    g = torch.Generator().manual_seed(seed)
    img = torch.full((3, SIZE, SIZE), BG)
    c = SIZE // 2
    img[:, c - half:c + half, c - half:c + half] = BG + (OBJ - BG) * COLOUR[:, None, None]
    return img + (0 if plain else 0.04) * torch.rand(3, SIZE, SIZE, generator=g)


def soft_area(img: torch.Tensor) -> float:
    """Object area in pixels, read through frame 0's levels: Σ clamp((x − bg) / (object − bg), 0, 1) on channel 0."""
    return float(((img[0] - BG - 0.02) / (OBJ - BG - 0.02)).clamp(0, 1).sum())


def hard_area(img: torch.Tensor) -> int:
    """Pixels of channel 0 above the midpoint between background and object."""
    return int((img[0] > (BG + OBJ) / 2).sum())


def test_static_mask_leaves_out_what_moved():
    small, big = scene(4), scene(6)
    mask = static_mask(big[None], small[None])[0, 0]
    ring = (hard_area(big) - hard_area(small))
    assert mask.dtype == torch.bool and mask.sum() >= SIZE * SIZE // 2
    assert not mask[10:22, 10:22][big[0, 10:22, 10:22] != small[0, 10:22, 10:22]].any()  # the ring that grew
    assert int(mask.sum()) == SIZE * SIZE - ring                                          # everything else


def test_official_adain_undoes_growth_static_keeps_it():
    small, big = scene(4), scene(8)                      # the object's area x4
    target = soft_area(big)
    official = adain_latent(big[None], small[None])[0]
    static = adain_latent(big[None], small[None], static_mask(big[None], small[None]))[0]
    print(f"soft area: frame 0 {soft_area(small):.0f}, grown {target:.0f}, official AdaIN "
          f"{soft_area(official):.0f}, static {soft_area(static):.0f}")
    assert soft_area(official) < 0.8 * target
    assert soft_area(static) == pytest.approx(target, rel=0.03)


def test_official_histogram_undoes_growth_static_keeps_it():
    small, big = scene(4), scene(8)
    official = match_histogram(big[None], small)[0]
    static = color_match(torch.stack([small, big]), static=True)[1]
    print(f"area: frame 0 {hard_area(small)}, grown {hard_area(big)}, official histogram {hard_area(official)}, "
          f"static {hard_area(static)}")
    assert hard_area(official) < 0.5 * hard_area(big)
    assert hard_area(static) == pytest.approx(hard_area(big), rel=0.03)


def test_static_histogram_keeps_levels_the_static_pixels_lack():
    """The grown object's soft edge has levels that neither the background nor the unchanged inner object hold;
    a bare CDF lookup on the static pixels would send them all to the background's level."""
    small, big = scene(4), scene(8)
    edge = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    edge[7:25, 7:25], edge[8:24, 8:24] = True, False  # a ring 1 px wide between the object and the background
    big[:, edge] = (BG + 0.5 * (OBJ - BG) * COLOUR)[:, None] + 0.04 * torch.rand(3, int(edge.sum()))
    out = color_match(torch.stack([small, big]), static=True)[1]
    assert int(edge.sum()) > 50
    torch.testing.assert_close(out[:, edge], big[:, edge], atol=0.03, rtol=0)


@pytest.mark.parametrize("mode", ["adain", "histogram", "both"])
def test_static_still_corrects_a_global_colour_shift(mode):
    """A colour cast (per-channel offset) is read off the static pixels and removed from the object too. (A
    change of the object's contrast against a near-flat background is not visible in static pixels: the
    variance floor then keeps the scale at about 1.)"""
    small = scene(4)
    drifted = (scene(8) + torch.tensor([0.08, -0.05, 0.04])[:, None, None]).clamp(0, 1)
    out = color_match(torch.stack([small, drifted]), mode=mode, static=True)[1]
    bg = torch.ones(SIZE, SIZE, dtype=torch.bool)
    bg[8:24, 8:24] = False
    obj = scene(8)[:, 8:24, 8:24]
    err_before = (drifted[:, 8:24, 8:24] - obj).abs().mean().item()
    err_bg, err_obj = (out - small)[:, bg].abs().mean().item(), (out[:, 8:24, 8:24] - obj).abs().mean().item()
    print(f"{mode}: object error {err_before:.3f} -> {err_obj:.3f}, background error -> {err_bg:.3f}")
    assert err_bg < 0.01 and err_obj < 0.35 * err_before
    assert hard_area(out) == pytest.approx(hard_area(scene(8)), rel=0.03)


def test_static_adain_on_a_plain_background_keeps_the_object():
    """The reference's static pixels are one flat level; the frame's carry a little noise. Without the variance
    floor the std ratio (noise over ~0) would flatten the whole frame."""
    ref = scene(4, plain=True)
    noisy = scene(8, plain=True) + 0.01 * torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    out = adain_latent(noisy[None], ref[None], static_mask(noisy[None], ref[None]))[0]
    assert soft_area(out) == pytest.approx(soft_area(noisy), rel=0.05)


def test_tiny_mask_falls_back_to_the_whole_frame():
    small, big = scene(4), scene(8)
    tiny = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.bool)
    tiny[..., 0, :3] = True
    whole = torch.ones_like(tiny)
    out = adain_latent(big[None], small[None], tiny)
    assert torch.isfinite(out).all() and torch.equal(out, adain_latent(big[None], small[None], whole))
    empty = torch.zeros(1, SIZE, SIZE, dtype=torch.bool)
    assert torch.equal(match_histogram(big[None], small, empty), match_histogram(big[None], small))
    with pytest.raises(ValueError, match="frames' size"):
        match_histogram(big[None], small[:, :16, :16], empty)


def test_masked_cdf_ends_at_exactly_one():
    """Otherwise the top level of a frame can miss the reference's last level and map to 255."""
    from lamp_model.postprocess import _cdf

    g = torch.Generator().manual_seed(3)
    levels, weights = torch.randint(0, 256, (64, 999), generator=g), torch.rand(64, 999, generator=g) < 0.37
    assert torch.equal(_cdf(levels, weights.float())[:, -1], torch.ones(64, dtype=torch.float64))


def test_sampling_color_consistency_modes():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 5, 8, 8, generator=g)
    assert torch.equal(adain_schedule(x, True, static=False), adain_schedule(x, True))
    static = adain_schedule(x, True, static=True)
    assert torch.equal(static[:, :, 0], x[:, :, 0]) and not torch.allclose(static, adain_schedule(x, True))
    assert not torch.allclose(final_adain(x, static=True), final_adain(x))

    def zero(sample, t, encoder_hidden_states):
        return torch.zeros_like(sample)
    first, cond, noise = x[:, :, :1], torch.randn(2, 3, 16, generator=g), torch.randn(2, 4, 4, 8, 8, generator=g)
    run = {mode: sample_video(zero, first, cond, None, noise, steps=3, guidance_scale=1.0, color_consistency=mode)
           for mode in ("official", "static", "none")}
    assert torch.equal(run["official"], sample_video(zero, first, cond, None, noise, steps=3, guidance_scale=1.0))
    assert torch.equal(run["none"], sample_video(zero, first, cond, None, noise, steps=3, guidance_scale=1.0,
                                                 adain=False))
    assert not torch.allclose(run["static"], run["official"]) and not torch.allclose(run["static"], run["none"])
    with pytest.raises(ValueError, match="color_consistency"):
        sample_video(zero, first, cond, None, noise, steps=3, guidance_scale=1.0, color_consistency="stati")


def test_toy_grow_keeps_its_growth_with_static_colour_consistency():
    """The shipped toy 'grow' motion, two unseen first frames, 8 DDIM steps: the official colour consistency
    (AdaIN + histogram over the whole frame) keeps the area near frame 0's; over static pixels it grows."""
    import numpy as np

    from lamp_model.toy import stage3, tracking, world
    from lamp_model.toy.models import WEIGHTS_DIR, load_text_encoder

    scenes = world.unseen_first_frames("grow", 2, seed=7)
    unet, text = stage3.load_motion_unet("grow", WEIGHTS_DIR), load_text_encoder(WEIGHTS_DIR)
    ratios = {}
    for mode in ("official", "static"):
        video = stage3.animate(unet, text, world.render(scenes), [s.caption for s in scenes],
                               options=stage3.SamplingOptions(steps=8, color_consistency=mode))
        ratios[mode] = [tracking.motion_amount(tracking.track(v, s.shape), "grow") for v, s in zip(video, scenes)]
    assert np.median(ratios["static"]) >= 1.8 > max(ratios["official"]), ratios
