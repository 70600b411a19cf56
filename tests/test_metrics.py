"""The paper's CLIP metrics (lamp_model.metrics), the evaluate-videos CLI and the paper-eval runner, on a tiny
random transformers CLIP (built from a config in code, tokenizer written by the test; nothing downloaded)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lamp_model import metrics as M
from lamp_model.tiny_eval import write_all, write_tiny_clip
from lamp_model.video_io import write_video


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny_clip", seed=0)


@pytest.fixture(scope="module")
def clip(clip_dir) -> M.ClipBundle:
    return M.load_clip(clip_dir)


def video(seed: int, n: int = 8, h: int = 40, w: int = 56) -> torch.Tensor:
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))


def unit(*values: float) -> torch.Tensor:
    v = torch.tensor(values, dtype=torch.float32)
    return v / v.norm()


# ---------------------------------------------------------------------------------------------- known answers
def test_consistency_known_answers():
    same = unit(1, 2, 3).repeat(5, 1)
    assert M.consistency_from_features(same, 100.0) == pytest.approx(100.0)
    orthogonal = torch.eye(4)
    assert M.consistency_from_features(orthogonal, 100.0) == pytest.approx(0.0, abs=1e-6)
    # all pairs i > j, not only neighbours: features a, a, b with <a, b> = 0 -> mean of (1, 0, 0) = 1/3
    a, b = unit(1, 0), unit(0, 1)
    assert M.consistency_from_features(torch.stack([a, a, b]), 30.0) == pytest.approx(10.0)


def test_alignment_is_the_mean_over_frames():
    feats = torch.stack([unit(1, 0), unit(0, 1), unit(1, 1)])
    text = unit(1, 0)
    assert M.alignment_from_features(feats, text, 100.0) == pytest.approx(100 * (1 + 0 + math.sqrt(0.5)) / 3)


@pytest.mark.parametrize("n_frames, official", [(8, 25.0), (16, 100.0)])
def test_diversity_16_frame_quirk(n_frames, official):
    """Official: v = sum of frame features / 16 -> identical 8-frame videos give s * (8/16)^2 = s/4."""
    u = unit(3, 4)
    videos = [u.repeat(n_frames, 1) for _ in range(3)]
    assert M.diversity_from_features(videos, 100.0) == pytest.approx(official)
    assert M.diversity_from_features(videos, 100.0, official_quirks=False) == pytest.approx(100.0)
    # corrected variant: the mean is re-normalised, so unequal frames still give a unit vector
    mixed = [torch.stack([unit(1, 0), unit(0, 1)]), unit(1, 1).repeat(2, 1)]
    assert M.diversity_from_features(mixed, 10.0, official_quirks=False) == pytest.approx(10.0)
    # official: v1 = (1, 1)/16, v2 = sqrt(2)·(1, 1)/16 -> 10·2·sqrt(2)/256
    assert M.diversity_from_features(mixed, 10.0) == pytest.approx(10.0 * 2 * math.sqrt(2) / 256)


def test_diversity_orthogonal_videos_is_zero():
    videos = [torch.eye(3)[i].repeat(16, 1) for i in range(3)]
    assert M.diversity_from_features(videos, 100.0) == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------- the real model
def official_preprocess(img: Image.Image, size: int, crop: int) -> torch.Tensor:
    """The recipe of OpenAI CLIP's preprocess, written out: short side -> size (bicubic), centre crop with
    torchvision's rounding, /255, CLIP mean/std."""
    w, h = img.size
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    img = img.resize(new, Image.BICUBIC)
    top, left = int(round((new[1] - crop) / 2.0)), int(round((new[0] - crop) / 2.0))
    img = img.crop((left, top, left + crop, top + crop))
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    return (x - mean) / std


@pytest.mark.parametrize("height, width", [(40, 44), (47, 32), (33, 80)])
def test_preprocessing_matches_clip_recipe_on_non_square_images(clip, height, width):
    """(40, 44): resized to 32x35, the crop offset 1.5 rounds to 2 (torchvision) — transformers alone floors it."""
    arr = (np.random.default_rng(height).uniform(0, 255, (2, height, width, 3))).astype(np.uint8)
    got = M.preprocess(clip, arr)
    assert got.shape == (2, 3, 32, 32)
    for k in range(2):
        want = official_preprocess(Image.fromarray(arr[k]), 32, 32)
        torch.testing.assert_close(got[k], want, atol=1e-5, rtol=0)


def test_uint8_conversion_as_the_official_helpers():
    f = torch.full((2, 4, 4, 3), 0.5)
    f[1] = 0.999
    assert M.to_uint8_frames(f)[:, 0, 0, 0].tolist() == [127, 254]          # truncation (official)
    assert M.to_uint8_frames(f, official_quirks=False)[:, 0, 0, 0].tolist() == [128, 255]  # rounding
    dark = np.zeros((2, 4, 4, 3), np.uint8)
    dark[0, 0, 0] = 1        # max <= 1: the official helper multiplies this uint8 frame by 255
    dark[1, 0, 0] = 2
    dark[1, 1, 1] = 1
    out = M.to_uint8_frames(dark)
    assert out[0, 0, 0, 0] == 255 and out[1, 0, 0, 0] == 2 and out[1, 1, 1, 0] == 1
    assert M.to_uint8_frames(dark, official_quirks=False)[0, 0, 0, 0] == 1


def reference_scores(clip: M.ClipBundle, frames: torch.Tensor, prompt: str) -> tuple[float, float, torch.Tensor]:
    """The official helpers' loops (one frame at a time, pairs in Python), with the recipe above."""
    scale = clip.model.logit_scale.exp()
    feats = []
    for img in frames:
        arr = (img * 255.0).numpy().astype(np.uint8)
        pixels = official_preprocess(Image.fromarray(arr), 32, 32)[None]
        with torch.no_grad():
            f = clip.model.get_image_features(pixel_values=pixels)
        f = getattr(f, "pooler_output", f)
        feats.append(f / f.norm(dim=1, keepdim=True).to(torch.float32))
    ids = clip.tokenizer([prompt], return_tensors="pt").input_ids
    with torch.no_grad():
        t = clip.model.get_text_features(input_ids=ids)
    t = getattr(t, "pooler_output", t)
    t = t / t.norm(dim=1, keepdim=True)
    align = sum(float(scale * (t * f).sum()) for f in feats) / len(feats)
    total, count = 0.0, 0
    for i in range(len(feats)):
        for j in range(i):
            total += float(scale * (feats[i] * feats[j]).sum())
            count += 1
    return align, total / count, torch.cat(feats)


def test_api_equals_the_official_loops(clip):
    frames = video(1)
    align, consistency, feats = reference_scores(clip, frames, "a horse runs on the grass")
    assert M.text_alignment(clip, frames, "a horse runs on the grass") == pytest.approx(align, rel=1e-5, abs=1e-5)
    assert M.frame_consistency(clip, frames) == pytest.approx(consistency, rel=1e-5)
    other = video(2)
    _, _, feats2 = reference_scores(clip, other, "x")
    want = float(clip.model.logit_scale.exp() * ((feats.sum(0) / 16.0) * (feats2.sum(0) / 16.0)).sum())
    assert M.diversity(clip, [frames, other]) == pytest.approx(want, rel=1e-5)


def test_identical_frames_and_uint8_input(clip):
    frames = video(3)[:1].repeat(6, 1, 1, 1)
    assert M.frame_consistency(clip, frames) == pytest.approx(clip.logit_scale, rel=1e-5)
    assert clip.logit_scale == pytest.approx(100.0, rel=1e-5)  # the tiny CLIP keeps CLIP's released scale
    as_uint8 = torch.from_numpy(M.to_uint8_frames(video(4)))
    assert M.text_alignment(clip, as_uint8, "fireworks") == pytest.approx(M.text_alignment(clip, video(4), "fireworks"))
    # a list of frames is a video too
    assert M.frame_consistency(clip, list(video(4))) == pytest.approx(M.frame_consistency(clip, video(4)))


def test_corrected_variant_differs_for_8_frames(clip):
    videos = [video(5), video(6), video(7)]
    official, corrected = M.diversity(clip, videos), M.diversity(clip, videos, official_quirks=False)
    assert corrected > 3 * official  # official /16 on 8 frames: about a quarter of the corrected value
    assert official == pytest.approx(corrected / 4, rel=0.05)


def test_batching_and_prompts_matter(clip):
    frames = video(8, n=20)
    full = M.image_features(clip, frames)
    torch.testing.assert_close(M.image_features(clip, frames, batch_size=3), full, atol=1e-5, rtol=0)
    assert M.text_alignment(clip, frames, "a horse") != pytest.approx(M.text_alignment(clip, frames, "fireworks at night"))


# ---------------------------------------------------------------------------------------------- bad inputs
def test_missing_clip_folder_and_folder_without_tokenizer(tmp_path, clip_dir):
    with pytest.raises(M.MetricsError, match="does not exist"):
        M.load_clip(tmp_path / "nowhere")
    broken = tmp_path / "no_tok"
    shutil.copytree(clip_dir, broken)
    for name in ("vocab.json", "merges.txt", "tokenizer.json"):
        (broken / name).unlink(missing_ok=True)
    with pytest.raises(M.MetricsError, match="no tokenizer"):
        M.load_clip(broken)
    vision_only = tmp_path / "vision"
    shutil.copytree(clip_dir, vision_only)
    cfg = json.loads((vision_only / "config.json").read_text())
    cfg["model_type"] = "clip_vision_model"
    (vision_only / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(M.MetricsError, match="not a full CLIP"):
        M.load_clip(vision_only)
    (tmp_path / "empty").mkdir()
    with pytest.raises(M.MetricsError, match="no config.json"):
        M.load_clip(tmp_path / "empty")


def test_bad_frames_and_videos(clip):
    with pytest.raises(M.MetricsError, match="at least 2 videos"):
        M.diversity(clip, [video(1)])
    with pytest.raises(M.MetricsError, match="LIST of videos"):
        M.diversity(clip, video(1))
    with pytest.raises(M.MetricsError, match="differ in size"):
        M.frame_consistency(clip, [torch.rand(32, 32, 3), torch.rand(40, 32, 3)])
    with pytest.raises(M.MetricsError, match="at least 2 frames"):
        M.frame_consistency(clip, video(1, n=1))
    with pytest.raises(M.MetricsError, match="0..1"):
        M.frame_consistency(clip, video(1) * 255)
    with pytest.raises(M.MetricsError, match=r"\[F, H, W, 3\]"):
        M.text_alignment(clip, torch.rand(4, 3, 32, 32), "a horse")
    with pytest.raises(M.MetricsError, match="non-empty prompt"):
        M.text_alignment(clip, video(1), " ")


# ---------------------------------------------------------------------------------------------- evaluate-videos
def test_evaluate_videos_cli(tmp_path, clip, clip_dir, capsys):
    from lamp_model.data import read_frames
    from lamp_model.evaluate_videos import main

    root = tmp_path / "videos"
    horse = [M.to_uint8_frames(video(k, n=6, h=32, w=48), official_quirks=False) for k in range(3)]
    folder = root / "horse_run" / "a_horse_runs_on_the_grass"  # a frame folder (lossless)
    folder.mkdir(parents=True)
    for i, frame in enumerate(horse[0]):
        Image.fromarray(frame).save(folder / f"{i}.png")
    write_video(horse[1], root / "horse_run" / "a_red_horse_runs_in_the_sky.webp")
    write_video(horse[2], root / "horse_run" / "clip3.gif")
    write_video(video(9, n=6, h=32, w=48), root / "firework" / "fireworks_in_winter.mp4")
    write_video(video(10, n=6, h=32, w=48), root / "firework" / "fireworks_over_the_mountains.mp4")
    (root / "firework" / "notes.txt").write_text("not a video")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"horse_run/clip3": "a horse runs in the universe"}))
    out = tmp_path / "report"
    assert main([str(root), "--clip", str(clip_dir), "--prompts", str(prompts), "--out", str(out),
                 "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "| horse_run | 3 |" in table and "| firework | 2 |" in table and "**overall** | 5" in table
    report = json.loads((out / "metrics.json").read_text())
    assert (out / "metrics.md").read_text().strip() == M.format_table(report)
    by_name = {v["name"]: v for v in report["videos"]}
    assert by_name["clip3"]["prompt"] == "a horse runs in the universe"
    assert by_name["fireworks_in_winter"]["prompt"] == "fireworks in winter"
    # the frame folder is lossless: its scores equal the API on the original frames
    first = by_name["a_horse_runs_on_the_grass"]
    assert first["alignment"] == pytest.approx(M.text_alignment(clip, torch.from_numpy(horse[0]),
                                                                "a horse runs on the grass"), rel=1e-6)
    decoded = [read_frames(p, None, None) for p in (folder, root / "horse_run" / "a_red_horse_runs_in_the_sky.webp",
                                                    root / "horse_run" / "clip3.gif")]
    assert report["motions"]["horse_run"]["diversity"] == pytest.approx(M.diversity(clip, decoded), rel=1e-6)
    assert report["overall"]["alignment"] == pytest.approx(np.mean([v["alignment"] for v in report["videos"]]))
    assert report["overall"]["diversity"] == pytest.approx(
        np.mean([report["motions"][m]["diversity"] for m in ("horse_run", "firework")]))


def test_evaluate_videos_errors(tmp_path, clip_dir, capsys, monkeypatch):
    from lamp_model.evaluate_videos import main

    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--clip", str(clip_dir)]) == 2
    assert "holds no videos" in capsys.readouterr().err
    monkeypatch.delenv("LAMP_CLIP", raising=False)
    assert main([str(tmp_path / "empty")]) == 2
    assert "no CLIP given" in capsys.readouterr().err
    frames = tmp_path / "one" / "clip"
    frames.mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(frames / "0.png")
    Image.new("RGB", (40, 32)).save(frames / "1.png")
    assert main([str(tmp_path / "one"), "--clip", str(clip_dir)]) == 2
    assert "differ in size" in capsys.readouterr().err
    # one video: alignment and consistency, no diversity
    monkeypatch.setenv("LAMP_CLIP", str(clip_dir))
    write_video(video(1, h=32, w=32), tmp_path / "single" / "a_horse.gif")
    assert main([str(tmp_path / "single")]) == 0
    assert "| single | 1 |" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- paper-eval
def test_paper_eval_end_to_end(tmp_path, capsys):
    from lamp_model.evaluate_videos import main as evaluate_main
    from lamp_model.paper_eval import main

    paths = write_all(tmp_path / "models", {"horse_run": ["a horse runs on the grass", "a horse runs on the Mars"],
                                            "firework": ["fireworks in winter"]})
    (paths["first_frames"] / "rain").mkdir()  # first frames without a motion: ignored
    out = tmp_path / "eval"
    args = ["--motions", str(paths["motions"]), "--base", str(paths["base"]), "--first-frames",
            str(paths["first_frames"]), "--clip", str(paths["clip"]), "--out", str(out), "--width", "64",
            "--height", "48", "--frames", "4", "--steps", "2", "--device", "cpu", "--seeds", "0", "1"]
    assert main(args) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["motions"]["horse_run"]["videos"] == 4 and report["motions"]["firework"]["videos"] == 2
    assert report["protocol"]["steps"] == 2 and report["protocol"]["seeds"] == [0, 1]
    assert report["official_quirks"] is True
    gifs = sorted(p.name for p in (out / "videos" / "horse_run").iterdir())
    assert gifs == ["a_horse_runs_on_the_Mars_seed0.gif", "a_horse_runs_on_the_Mars_seed1.gif",
                    "a_horse_runs_on_the_grass_seed0.gif", "a_horse_runs_on_the_grass_seed1.gif"]
    prompts = json.loads((out / "prompts.json").read_text())
    assert prompts["horse_run/a_horse_runs_on_the_Mars_seed1"] == "a horse runs on the Mars"
    with Image.open(out / "videos" / "horse_run" / gifs[0]) as im:
        assert im.size == (64, 48)
    scale = report["logit_scale"]
    for row in report["videos"]:
        assert row["frames"] == 4 and -scale <= row["alignment"] <= scale and row["consistency"] <= scale + 1e-3
    # seeds give different videos: two seeds of one prompt are not the same video
    v = {r["name"]: r for r in report["videos"]}
    assert v["a_horse_runs_on_the_grass_seed0"]["consistency"] != v["a_horse_runs_on_the_grass_seed1"]["consistency"]
    # the written GIFs re-score with evaluate-videos (close, not equal: GIF palettes)
    assert evaluate_main([str(out / "videos"), "--clip", str(paths["clip"]), "--prompts",
                          str(out / "prompts.json"), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["overall"]["videos"] == 6
    assert again["overall"]["consistency"] == pytest.approx(report["overall"]["consistency"], abs=2.0)
    capsys.readouterr()
    # a motion without first frames is refused by name
    assert main(args[:-3] + ["--motion", "rain"]) == 2
    assert "rain" in capsys.readouterr().err
