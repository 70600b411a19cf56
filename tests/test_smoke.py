"""The smoke command (whole pipeline on a tiny random model) and the video writers."""
from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from PIL import Image

from lamp_model.video_io import frame_durations_ms, to_uint8, write_strip, write_video


def _gif_frames(path):
    with Image.open(path) as im:
        durations = []
        for k in range(im.n_frames):
            im.seek(k)
            durations.append(im.info["duration"])
        return durations, im.info.get("loop"), im.size


def _mp4_frames(path):
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        return frames, container.streams.video[0].average_rate


def test_smoke_command_writes_readable_files(tmp_path, capsys):
    from lamp_model.__main__ import main
    assert main(["smoke", "--out", str(tmp_path), "--frames", "4", "--steps", "2"]) == 0
    printed = capsys.readouterr().out
    gif, mp4, strip = tmp_path / "lamp_smoke.gif", tmp_path / "lamp_smoke.mp4", tmp_path / "lamp_smoke_strip.png"
    assert all(p.stat().st_size > 0 and str(p) in printed for p in (gif, mp4, strip))
    durations, loop, size = _gif_frames(gif)
    assert len(durations) == 4 and loop == 0 and size == (128, 128)
    frames, rate = _mp4_frames(mp4)
    assert len(frames) == 4 and frames[0].shape == (128, 128, 3) and rate == 8
    assert Image.open(strip).size == (4 * 128, 128)


def test_gif_and_webp_timing_and_frames(tmp_path):
    frames = torch.rand(6, 9, 11, 3, generator=torch.Generator().manual_seed(0))
    durations, loop, size = _gif_frames(write_video(frames, tmp_path / "a.gif", fps=8))
    assert durations == [130, 120, 130, 120, 130, 120] and loop == 0 and size == (11, 9)
    assert frame_durations_ms(3, 30) == [33, 34, 33]
    with Image.open(write_video(to_uint8(frames), tmp_path / "sub" / "a.webp", fps=12)) as im:
        assert im.n_frames == 6 and im.size == (11, 9)


def test_mp4_pads_odd_sizes(tmp_path):
    frames = np.zeros((3, 9, 11, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(3)[:, None, None] * 100
    decoded, rate = _mp4_frames(write_video(frames, tmp_path / "odd.mp4", fps=24))
    assert len(decoded) == 3 and decoded[0].shape == (10, 12, 3) and rate == 24
    assert abs(int(decoded[2][4, 5, 0]) - 200) < 8                       # colours survive the encode


def test_video_io_errors_and_strip(tmp_path):
    with pytest.raises(ValueError, match="use one of"):
        write_video(torch.zeros(2, 4, 4, 3), tmp_path / "x.avi")
    with pytest.raises(ValueError, match=r"\[F, H, W, 3\]"):
        write_video(torch.zeros(2, 3, 4, 4), tmp_path / "x.gif")
    assert to_uint8(torch.tensor([[[[0.0, 0.5, 1.2]]]])).tolist() == [[[[0, 128, 255]]]]
    strip = write_strip(torch.rand(20, 5, 6, 3), tmp_path / "s.png", max_frames=4)
    assert Image.open(strip).size == (4 * 6, 5)
