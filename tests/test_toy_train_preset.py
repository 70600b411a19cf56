"""Training the toy world through the generic command: clips rendered to a folder
(``python -m lamp_model.toy.clips``), ``python -m lamp_model train --preset toy`` on them (same losses as toy
stage 2), and the motion file it writes sampled by ``python -m lamp_model demo --motion-file``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lamp_model.data import prompt_from_filename, read_frames
from lamp_model.toy import clips, demo, stage2, world
from lamp_model.toy.models import BASE_FILE, WEIGHTS_DIR
from lamp_model.toy.stage3 import load_motion_unet
from lamp_model.train_cli import main as train_main
from lamp_model.train_cli import resolve_settings
from lamp_model.weights import read_motion

MOTION = "translate:dx=-12,dy=0"


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clips") / "left"
    assert clips.main(["--motion", MOTION, "--out", str(out), "--n", "2"]) == 0
    return out


def _copy(folder: Path, to: Path, rename: dict[str, str] | None = None) -> Path:
    to.mkdir()
    for f in folder.iterdir():
        (to / (rename or {}).get(f.name, f.name)).write_bytes(f.read_bytes())
    return to


def _train(videos: Path, out: Path, *extra: str) -> int:
    return train_main(["--preset", "toy", "--videos", str(videos), "--output-dir", str(out), "--steps", "2",
                       "--n-frames", "4", "--save-every", "0", "--log-level", "WARNING", *extra])


# ------------------------------------------------------------------------------------------ clip renderer
@pytest.mark.parametrize("fmt", ["gif", "png"])
def test_rendered_clips_read_back_losslessly_with_their_captions(tmp_path, clip_folder, fmt):
    folder = clip_folder if fmt == "gif" else tmp_path / "png"
    if fmt == "png":
        assert clips.main(["--motion", MOTION, "--out", str(folder), "--n", "2", "--format", "png"]) == 0
    expected = world.training_clips(MOTION, 2)
    names = sorted(p.name for p in folder.iterdir())
    assert names == clips.clip_names(expected, fmt) and names[0].startswith("00_a_")
    for name, clip in zip(names, expected):
        assert prompt_from_filename(name) == clip.caption
        back = torch.from_numpy(read_frames(folder / name, None, None)).permute(0, 3, 1, 2).float() / 255
        assert back.shape == (world.FRAMES + 1, 3, world.SIZE, world.SIZE)
        assert (back[:world.FRAMES] - clip.frames).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit rounding only
        assert (back[-1] - back[-2]).abs().max() > 0.05  # the extra frame moves on: not a held copy


def test_clip_renderer_refuses_a_folder_with_other_files(tmp_path, capsys):
    (tmp_path / "holiday.mp4").write_bytes(b"x")
    assert clips.main(["--motion", MOTION, "--out", str(tmp_path), "--n", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holiday.mp4" in err and len(err.splitlines()) == 1


def test_prompt_from_filename():
    assert prompt_from_filename("03_a_horse_running.mp4") == "a horse running"
    assert prompt_from_filename("00_an_orange_bar") == "an orange bar"  # a folder of frames
    assert prompt_from_filename("clip.gif") == "clip" and prompt_from_filename("07.gif") == ""


# ------------------------------------------------------------------------------------------ the preset
def test_toy_preset_defaults_are_stage_2s(tmp_path):
    given = ["--preset", "toy", "--videos", str(tmp_path), "--output-dir", str(tmp_path / "run")]
    settings, config = resolve_settings(given)
    assert settings["model_family"] == "toy" and settings["prompt_from_filenames"] is True
    assert Path(settings["base"]) == WEIGHTS_DIR / BASE_FILE
    assert {k: getattr(config, k) for k in stage2.toy_train_settings()} == stage2.toy_train_settings()
    assert config.steps == stage2.DEFAULT_STEPS and config.lr_warmup_steps == stage2.DEFAULT_STEPS // 20
    assert config.seed == 0 and config.mixed_precision == "no"
    _, config = resolve_settings(given + ["--steps", "60"])
    assert config.lr_warmup_steps == 3  # the warm-up follows the steps, as in stage 2
    _, config = resolve_settings(given + ["--steps", "60", "--lr-warmup-steps", "7"])
    assert config.lr_warmup_steps == 7
    settings, _ = resolve_settings(["--base", "b", "--videos", "v", "--output-dir", "o"])
    assert settings["model_family"] == "sd1" and settings["prompt_from_filenames"] is False


def test_preset_trains_like_stage_2_and_the_demo_samples_the_result(tmp_path, clip_folder, capsys):
    out = tmp_path / "runs" / "left"
    assert _train(clip_folder, out) == 0
    losses = [json.loads(line)["loss"] for line in (out / "loss.jsonl").read_text().splitlines()]
    reference = stage2.train_motion(MOTION, steps=2, frames=4, n_clips=2, log=lambda *a: None).loss_history
    assert losses == pytest.approx(reference, rel=2e-2)  # same clips, prompts, settings; files are 8-bit
    _, meta = read_motion(out / "motion.safetensors")
    assert json.loads(meta["training_prompts"]) == [c.caption for c in world.training_clips(MOTION, 2)]
    assert meta["model_family"] == "toy" and meta["training_steps"] == "2"
    load_motion_unet(out / "motion.safetensors")
    capsys.readouterr()
    assert demo.main(["--motion", MOTION, "--motion-file", str(out / "motion.safetensors"), "--prompt",
                      "a blue square", "--steps", "2", "--out", str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out
    assert "tracked motion" in printed and "translate_dx-12_dy0" in printed
    assert (tmp_path / "demo" / "translate_dx-12_dy0_a_blue_square.gif").is_file()
    # the generic path's file does not record a spec: without --motion the demo asks for it
    assert demo.main(["--motion-file", str(out / "motion.safetensors"), "--out", str(tmp_path / "demo")]) == 2
    assert "give it with --motion" in capsys.readouterr().err


def test_demo_reads_the_motion_of_a_stage_2_file(tmp_path, capsys):
    """A stage-2 motion file records its spec, so ``--motion-file`` alone places and checks the right motion."""
    assert demo.main(["--motion-file", str(stage2.motion_file("down")), "--steps", "2",
                      "--out", str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out
    assert "tracked motion" in printed and "match 'down':" in printed.replace("matches", "match")


# ------------------------------------------------------------------------------------------ bad inputs
def test_unknown_toy_word_in_a_file_name_is_one_clear_error(tmp_path, clip_folder, capsys):
    first = sorted(p.name for p in clip_folder.iterdir())[0]
    videos = _copy(clip_folder, tmp_path / "left", {first: "00_a_purple_circle.gif"})
    assert _train(videos, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "00_a_purple_circle.gif" in err and "'purple'" in err
    assert not (tmp_path / "run" / "motion.safetensors").exists()


def test_clip_name_without_a_prompt_and_conflicting_prompts_are_clear_errors(tmp_path, clip_folder, capsys):
    first = sorted(p.name for p in clip_folder.iterdir())[0]
    videos = _copy(clip_folder, tmp_path / "left", {first: "00.gif"})
    assert _train(videos, tmp_path / "run") == 2
    assert "00.gif: its name gives no prompt" in capsys.readouterr().err
    assert _train(clip_folder, tmp_path / "run", "--prompt", "a red circle") == 2
    assert "--no-prompt-from-filenames" in capsys.readouterr().err
    assert _train(clip_folder, tmp_path / "run", "--validation-image", "x.png") == 2
    assert "--validation-prompt" in capsys.readouterr().err
    assert _train(clip_folder, tmp_path / "run", "--vae", "some_vae") == 2
    assert "--vae does not apply to the toy model family" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()  # refused up front, before the clips are looked at or decoded
    assert _train(tmp_path / "empty", tmp_path / "run", "--vae", "some_vae") == 2
    assert "--vae does not apply to the toy model family" in capsys.readouterr().err


def test_demo_motion_file_must_exist(tmp_path, capsys):
    assert demo.main(["--motion", MOTION, "--motion-file", str(tmp_path / "nope.safetensors"),
                      "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--motion-file" in err
