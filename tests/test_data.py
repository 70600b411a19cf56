"""Video-set loading and the latent clip cache (tiny synthetic clips written at test time)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lamp_model.data import (LatentClipSet, VideoSetError, default_prompt, diffusers_vae_encoder, encode_video_set,
                             load_video_set, read_frames)


def moving_square(n: int, w: int = 48, h: int = 32) -> np.ndarray:
    """``n`` frames of a white square moving right on a dark background, uint8 [n, h, w, 3]."""
    frames = np.full((n, h, w, 3), 20, np.uint8)
    for i in range(n):
        x = (i * 3) % (w - 8)
        frames[i, 12:20, x:x + 8] = 235
    return frames


def write_video(path: Path, frames: np.ndarray, codec: str = "mpeg4", fps: int = 8) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_gif(path: Path, frames: np.ndarray) -> Path:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    return path


def write_frame_folder(path: Path, frames: np.ndarray) -> Path:
    path.mkdir()
    for i, f in enumerate(frames):  # unpadded names: natural order must put 2 before 10
        Image.fromarray(f).save(path / f"frame{i}.png")
    return path


@pytest.fixture
def video_set_dir(tmp_path: Path) -> Path:
    root = tmp_path / "square_moves_right"
    root.mkdir()
    write_video(root / "a.mp4", moving_square(12))
    write_gif(root / "b.gif", moving_square(10))
    write_frame_folder(root / "c_frames", moving_square(11))
    (root / "notes.txt").write_text("not a clip")
    (root / ".DS_Store").write_bytes(b"\0")
    return root


def test_loads_every_clip_kind_and_reports(video_set_dir):
    vs = load_video_set(video_set_dir, n_frames=4, stride=2, width=32, height=16)
    assert vs.prompt == "square moves right"  # official default: folder name, _ -> space
    assert [c.name for c in vs.clips] == ["a.mp4", "b.gif", "c_frames"]
    assert [c.total_frames for c in vs.clips] == [12, 10, 11]
    # The official sampler never reaches the last `stride` frames: they are not kept.
    assert [len(c.frames) for c in vs.clips] == [10, 8, 9]
    assert all(c.frames.shape[1:] == (16, 32, 3) and c.frames.dtype == np.uint8 for c in vs.clips)
    assert vs.skipped == [("notes.txt", vs.skipped[0][1])] and "not a video" in vs.skipped[0][1]
    text = vs.summary()
    assert "3 clip(s)" in text and "a.mp4: 12 frames" in text and "skipped notes.txt" in text


def test_frame_folder_is_read_in_natural_order(tmp_path):
    frames = moving_square(12)
    folder = write_frame_folder(tmp_path / "clip", frames)
    got = read_frames(folder, 48, 32)
    np.testing.assert_array_equal(got, frames)  # stretch to the same size: PNG round trip is exact


def test_prompt_override_and_single_file(tmp_path):
    clip = write_video(tmp_path / "man_skiing.mp4", moving_square(9))
    assert default_prompt(clip) == "man skiing"
    vs = load_video_set(clip, n_frames=4, width=16, height=16)
    assert vs.prompt == "man skiing" and len(vs.clips) == 1
    assert load_video_set(clip, n_frames=4, width=16, height=16, prompt="  a horse runs ").prompt == "a horse runs"


def test_crop_keeps_aspect_ratio(tmp_path):
    frame = np.zeros((1, 16, 48, 3), np.uint8)
    frame[:, :, 16:32] = 255  # a white middle third
    folder = write_frame_folder(tmp_path / "clip", frame)
    cropped = read_frames(folder, 16, 16, resize="center-crop")[0]
    stretched = read_frames(folder, 16, 16, resize="stretch")[0]
    assert cropped.mean() > 250  # centre crop of a 3:1 frame to 1:1 = the white third only
    assert 60 < stretched.mean() < 120  # the stretch keeps the dark sides


def test_too_short_clip_names_file(video_set_dir):
    with pytest.raises(VideoSetError) as err:
        load_video_set(video_set_dir, n_frames=5, stride=2, width=32, height=16)
    msg = str(err.value)
    assert "b.gif: 10 frames" in msg and "need at least 11" in msg
    assert "Loaded fine: a.mp4, c_frames" in msg


def test_unreadable_file_names_file(video_set_dir):
    (video_set_dir / "broken.mp4").write_bytes(b"this is not a video" * 10)
    with pytest.raises(VideoSetError, match=r"broken\.mp4: cannot be decoded"):
        load_video_set(video_set_dir, n_frames=4, width=32, height=16)
    vs = load_video_set(video_set_dir, n_frames=4, width=32, height=16, skip_bad=True)
    assert len(vs.clips) == 3 and ("broken.mp4", vs.skipped[-1][1]) in vs.skipped
    assert "cannot be decoded" in vs.skipped[-1][1]


def test_empty_and_missing_folders(tmp_path):
    empty = tmp_path / "empty_set"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(VideoSetError, match=r"holds no usable clip \(found: readme\.txt\)"):
        load_video_set(empty)
    with pytest.raises(VideoSetError, match="does not exist"):
        load_video_set(tmp_path / "nope")
    with pytest.raises(VideoSetError, match="multiples of 8"):
        load_video_set(empty, width=30)


def test_max_frames_caps_decoding(video_set_dir):
    with pytest.raises(VideoSetError, match=r"only the first 6 were read"):
        load_video_set(video_set_dir, n_frames=6, width=32, height=16, max_frames=6)


# ---------------------------------------------------------------------------------------------- latent cache
def indexed_clip(t: int) -> torch.Tensor:
    """Latents [t, 2, 2, 3] whose value is the frame index (and the column in the last channel)."""
    x = torch.arange(t, dtype=torch.float32).view(t, 1, 1, 1).expand(t, 2, 2, 3).clone()
    x[:, 1] = torch.arange(3.0)
    return x


def test_sample_takes_a_strided_window():
    clips = LatentClipSet.from_latents([indexed_clip(9)], flipped=[indexed_clip(9).flip(-1)])
    g = torch.Generator().manual_seed(0)
    starts, flips = set(), set()
    for _ in range(60):
        s = clips.sample(0, n_frames=3, stride=3, hflip=True, generator=g)  # [C, F, h, w]
        assert s.shape == (2, 3, 2, 3)
        frames = s[0, :, 0, 0]
        assert torch.equal(frames, frames[0] + torch.tensor([0.0, 3.0, 6.0]))
        starts.add(int(frames[0]))
        flips.add(int(s[1, 0, 0, 0]))  # column 0 holds 0, or 2 when mirrored
    assert starts == {0, 1, 2}  # every window that fits, nothing beyond
    assert flips == {0, 2}


def test_sample_is_reproducible_and_draws_the_posterior():
    mean, std = torch.zeros(6, 4, 2, 2), torch.full((6, 4, 2, 2), 0.5)
    clips = LatentClipSet.from_latents([mean], stds=[std])
    a = clips.sample(0, 4, 1, False, torch.Generator().manual_seed(3))
    b = clips.sample(0, 4, 1, False, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    many = torch.stack([clips.sample(0, 4, 1, False, torch.Generator().manual_seed(i)) for i in range(200)])
    assert abs(float(many.std()) - 0.5) < 0.03 and abs(float(many.mean())) < 0.03


def test_check_reports_short_clips_and_missing_flip():
    clips = LatentClipSet.from_latents([indexed_clip(4), indexed_clip(9)], names=["short", "long"])
    with pytest.raises(VideoSetError, match=r"short \(4\)"):
        clips.check(n_frames=3, stride=2, hflip=False)
    clips.check(n_frames=2, stride=3, hflip=False)
    with pytest.raises(VideoSetError, match="no mirrored latents"):
        clips.check(n_frames=2, stride=1, hflip=True)
    with pytest.raises(VideoSetError, match="different latent sizes"):
        LatentClipSet.from_latents([torch.zeros(4, 4, 2, 2), torch.zeros(4, 4, 2, 3)])


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                         up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[8, 8, 8, 8],
                         layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=32).eval()


def test_encode_video_set_caches_posterior_and_mirror(video_set_dir):
    vs = load_video_set(video_set_dir, n_frames=4, stride=1, width=32, height=16)
    vae = tiny_vae()
    calls = []
    latents = encode_video_set(vs, diffusers_vae_encoder(vae, scaling_factor=0.5), hflip=True, batch_size=4,
                               progress=lambda done, total: calls.append((done, total)))
    assert len(latents) == 3 and latents.latent_shape == (4, 2, 4)
    total = 2 * sum(len(c.frames) for c in vs.clips)
    assert calls[-1] == (total, total)
    clip = latents.clips[0]
    from lamp_model.data import frames_to_pixels

    with torch.no_grad():
        dist = vae.encode(frames_to_pixels(vs.clips[0].frames[:2])).latent_dist
        dist_flip = vae.encode(frames_to_pixels(vs.clips[0].frames[:2, :, ::-1])).latent_dist
    torch.testing.assert_close(clip.mean[:2], dist.mean * 0.5)
    torch.testing.assert_close(clip.std[:2], dist.std * 0.5)
    torch.testing.assert_close(clip.flipped_mean[:2], dist_flip.mean * 0.5)
    latents.check(4, 1, hflip=True)
