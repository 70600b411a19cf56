"""fit_frames: the one resize for first frames and training clips."""
import pytest
import torch

from lamp_model.frames import fit_frames


def test_modes_keep_or_ignore_the_aspect_ratio():
    img = torch.zeros(2, 3, 20, 40)
    img[:, :, :, 10:30] = 1.0  # a white band in the middle half of a 2:1 picture
    stretch = fit_frames(img, 16, 16, "stretch")
    crop = fit_frames(img, 16, 16, "center-crop")
    pad = fit_frames(img, 16, 16, "pad")
    assert stretch.shape == crop.shape == pad.shape == (2, 3, 16, 16)
    assert crop.mean() > 0.95  # the crop keeps the (white) centre only
    assert pad[:, :, :4].max() == 0 and pad[:, :, 12:].max() == 0  # black bars above and below
    assert 0.4 < stretch.mean() < 0.6


def test_same_size_is_untouched_and_bad_mode_is_named():
    img = torch.rand(1, 3, 8, 8)
    assert torch.equal(fit_frames(img, 8, 8, "pad"), img)
    with pytest.raises(ValueError, match="stretch, center-crop, pad"):
        fit_frames(img, 4, 4, "zoom")
