"""Toy motions as data (``lamp_model/toy/motions.py``): the shipped four are unchanged bit for bit, the
tracker's criterion follows the spec, the ``--motion`` parser and its errors, and a new motion trained and
sampled from the CLI end to end."""
from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest
import torch

from lamp_model.toy import codec, motions, tracking, world

SHIPPED = ["right", "down", "grow", "rotate"]

#: sha256 (first 16 hex digits) of the float32 bytes of, per shipped motion, (a) the 8 training clips of
#: the 8-clip split stacked ``[8, 16, 3, 32, 32]`` and (b) ``world.render(world.animate(s, motion))`` for the
#: 12 first frames ``world.unseen_first_frames(motion, 12, n_train=8)`` stacked (stage 2 trains on
#: ``world.TRAINING_CLIPS`` = 16 clips now; the 8-clip split is kept as the reference of the renderer).
#: Computed with the code BEFORE motions became specs (commit 390790e, where world.py had the
#: ``if motion == ...`` chains) by the same expressions as :func:`_clip_hashes`; earlier weights were
#: trained on those clips. The first frames (b) of grow and rotate changed on purpose later: evaluation
#: first frames of a motion without translation are now spread over every position where it fits
#: (``start_scene(spread=True)``), no longer within 2 px of the centre.
REFERENCE_CLIPS = {
    "right": ("537751df6ee9ad8d", "b768bef25d49ea5b"),
    "down": ("f0f1c3376a5f0679", "edcd661fc24ebf84"),
    "grow": ("af2d2f70de386e5b", "e4b1ff57ab4daf88"),
    "rotate": ("cbe3438dee04f01e", "87eebbb454c0d16b"),
}
#: Tracker verdicts of commit 390790e's ``tracking.motion_ok`` (the if-chain) on the 240 videos x 4
#: criteria of :func:`_verdict_grid` (motion amounts scaled 0.45..1.55 with sideways drift 0..4 px), as
#: the sha256 prefix of the '0'/'1' string, and how many of the 240 passed.
REFERENCE_VERDICTS = ("c45eeb948f78b2d2", 122)


def _hash(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]


def _clip_hashes(motion: str) -> tuple[str, str]:
    train = _hash(torch.stack([c.frames for c in world.training_clips(motion, 8)]))
    scenes = world.unseen_first_frames(motion, 12, n_train=8)
    return train, _hash(torch.stack([world.render(world.animate(s, motion)) for s in scenes]))


def _verdict_grid() -> str:
    bits = []
    for motion in SHIPPED:
        for clip in world.training_clips(motion, 8)[:4]:
            s0 = clip.scenes[0]
            for f in (0.45, 0.55, 1.0, 1.45, 1.55):
                for side in (0.0, 2.5, 4.0):
                    scenes = [replace(s, **{k: getattr(s0, k) + f * (getattr(s, k) - getattr(s0, k))
                                            for k in ("cx", "size", "angle")},
                                      cy=s0.cy + f * (s.cy - s0.cy) + side * t / 15) for t, s in enumerate(clip.scenes)]
                    tr = tracking.track(codec.decode(codec.encode(world.render(scenes))), s0.shape)
                    bits.append("".join("1" if tracking.motion_ok(tr, k) else "0" for k in SHIPPED))
    return "".join(bits)


@pytest.mark.parametrize("motion", SHIPPED)
def test_shipped_motions_render_bit_identical_clips(motion):
    assert _clip_hashes(motion) == REFERENCE_CLIPS[motion]


def test_shipped_criteria_give_the_same_verdicts():
    bits = _verdict_grid()
    assert (hashlib.sha256(bits.encode()).hexdigest()[:16], bits.count("1")) == REFERENCE_VERDICTS


def test_shipped_criteria_in_words_are_unchanged():
    assert [tracking.criterion(m) for m in SHIPPED] == [
        "x shift 6..18 px, |y shift| <= 3 px, no frame-to-frame jump over 3.2 px",
        "y shift 6..18 px, |x shift| <= 3 px, no frame-to-frame jump over 3.2 px",
        "area ratio 1.8..5.8, drift <= 3 px, no frame-to-frame jump over 2 px / area x1.37",
        "clockwise turn 45..135 deg, drift <= 3 px, no frame-to-frame jump over 2 px / 24 deg"]


# ------------------------------------------------------------------------------------------ parser
def test_parser_reads_every_form(tmp_path):
    assert motions.parse_motion("right") is motions.SHIPPED["right"]
    assert motions.parse_motion("translate:dx=12") is motions.SHIPPED["right"]  # same motion = shipped one
    left = motions.parse_motion("translate:dx=-12,dy=0")
    assert (left.dx, left.dy, left.name) == (-12.0, 0.0, "translate_dx-12_dy0")
    assert motions.parse_motion(left.text) == left
    assert motions.parse_motion("scale:0.6").scale == 0.6
    combo = motions.parse_motion("translate:dx=8 + rotate:45 + ease:in-out")
    assert (combo.dx, combo.rotate, combo.ease) == (8.0, 45.0, "in-out")
    yaml_file = tmp_path / "zigzag.yaml"
    yaml_file.write_text("name: slide-up\ndy: -10\nrotate: -30\n")
    spec = motions.parse_motion(str(yaml_file))
    assert (spec.name, spec.dy, spec.rotate) == ("slide-up", -10.0, -30.0)
    yaml_file.write_text("name: right\ndx: -12\n")  # would overwrite the shipped motion file
    with pytest.raises(ValueError, match="belongs to a shipped motion"):
        motions.parse_motion(str(yaml_file))


@pytest.mark.parametrize("text, bad", [
    ("sideways", "sideways"), ("translate:dz=3", "translate:dz=3"), ("scale:big", "scale:big"),
    ("rotate:90+rotate:10", "rotate:10"), ("right+rotate:45", "right"), ("ease:bouncy", "ease:bouncy"),
    ("scale:1", None), ("scale:9", None), ("translate:dx=30", None), ("missing.yaml", None),
])
def test_parser_errors_are_one_line_and_name_the_bad_part(text, bad):
    with pytest.raises(ValueError) as err:
        world.motion_spec(text)
    message = str(err.value)
    assert "\n" not in message and text in message
    if bad is not None:
        assert repr(bad) in message and "translate:dx=PX,dy=PX" in message


def test_cli_rejects_a_bad_motion_in_one_line(capsys):
    from lamp_model.toy import demo, evaluate, stage2

    for main in (stage2.main, evaluate.main, demo.main):
        with pytest.raises(SystemExit) as code:
            main(["--motion" if main is not evaluate.main else "--motions", "translate:dq=3"])
        err = capsys.readouterr().err.strip()
        assert code.value.code == 2 and len(err.splitlines()) == 1 and "'translate:dq=3'" in err


# ------------------------------------------------------------------------------------------ new motions
NEW = ["translate:dx=-12,dy=0", "translate:dx=-8,dy=-8", "scale:0.6", "scale:1.5", "rotate:-90",
       "translate:dx=8+rotate:45", "translate:dy=10+ease:in-out"]


@pytest.mark.parametrize("text", NEW)
def test_new_motions_fit_and_pass_their_own_criterion(text):
    """Ground-truth clips of a new spec stay inside the canvas, pass the spec's derived criterion, and a
    still video (frame 0 repeated) fails it."""
    spec = world.motion_spec(text)
    clips = world.training_clips(spec, n=4)
    assert len(clips) == 4 and all(c.frames.shape == (16, 3, 32, 32) for c in clips)
    if spec.rotates:
        assert all(c.scenes[0].shape != "circle" for c in clips)
    for clip in clips:
        for s in clip.scenes:  # whole object inside
            reach = s.size * 1.55
            assert reach - 0.6 <= s.cx <= world.SIZE - reach + 0.6 and reach - 0.6 <= s.cy <= world.SIZE - reach + 0.6
        video = codec.decode(codec.encode(clip.frames))
        assert tracking.motion_ok(tracking.track(video, clip.scenes[0].shape), spec), (text, clip.caption)
        still = video[:1].expand(16, -1, -1, -1)
        assert not tracking.motion_ok(tracking.track(still, clip.scenes[0].shape), spec)


def test_criterion_follows_direction_and_ease_changes_the_path_not_the_end():
    left = world.motion_spec("translate:dx=-12")
    clip = world.training_clips("right", n=1)[0]
    tr = tracking.track(codec.decode(codec.encode(clip.frames)), clip.scenes[0].shape)
    assert tracking.motion_ok(tr, "right") and not tracking.motion_ok(tr, left)
    assert tracking.motion_amount(tr, left) == pytest.approx(-tracking.motion_amount(tr, "right"))
    scene = clip.scenes[0]
    eased = world.animate(scene, "translate:dx=12+ease:in")
    assert eased[-1].cx == pytest.approx(scene.cx + 12) and eased[4].cx - scene.cx < 12 * 4 / 15 / 2


def test_new_motion_uses_its_own_streams():
    a = world.training_clips("translate:dx=-12", n=2)
    b = world.training_clips("translate:dx=-12", n=2)
    assert all(torch.equal(x.frames, y.frames) for x, y in zip(a, b))
    assert motions.stream_of(world.motion_spec("translate:dx=-12")) >= 1000


@pytest.mark.slow
def test_new_motion_trained_and_sampled_from_the_cli(tmp_path, capsys):
    """The documented one command (stage 2 with a spec; here 2 steps on a tiny base), then demo and
    evaluate with the same spec; before training, demo and evaluate say which command trains it."""
    from lamp_model.toy import demo, evaluate, stage1, stage2
    from lamp_model.toy.models import save_base
    from test_toy import TINY_TOY_UNET

    unet2d, te = stage1.train_base(steps=2, n_stills=8, batch=4, config=TINY_TOY_UNET, log=lambda *_: None)
    save_base(tmp_path, unet2d, te, {"steps": 2})
    spec = "translate:dx=-12,dy=0"
    common = ["--weights", str(tmp_path), "--steps", "2"]
    assert demo.main(["--motion", spec, "--out", str(tmp_path / "demo"), *common]) == 2
    err = capsys.readouterr().err
    assert "stage2 --motion 'translate:dx=-12,dy=0'" in err and len(err.strip().splitlines()) == 1
    assert evaluate.main(["--motions", spec, "--variants", "full", "--n", "2", *common]) == 2
    assert "stage2 --motion 'translate:dx=-12,dy=0'" in capsys.readouterr().err

    assert stage2.main(["--motion", spec, "--steps", "2", "--base", str(tmp_path)]) == 0
    assert (tmp_path / "motion_translate_dx-12_dy0.safetensors").is_file()
    assert "stage 2 [translate_dx-12_dy0]: 2 steps" in capsys.readouterr().out
    assert demo.main(["--motion", spec, "--out", str(tmp_path / "demo"), *common]) == 0
    out = capsys.readouterr().out
    assert "px to the left" in out and (tmp_path / "demo" / "translate_dx-12_dy0_a_blue_triangle.gif").is_file()
    assert evaluate.main(["--motions", spec, "--variants", "full", "ground_truth", "--n", "2", *common,
                          "--work", str(tmp_path / "work")]) == 0
    out = capsys.readouterr().out
    assert "translate_dx-12_dy0 acc." in out and "shift along (-12, 0) 6..18 px" in out


@pytest.mark.parametrize("motion", SHIPPED)
def test_an_object_that_flickers_into_place_fails(motion):
    """Continuity: frames whose object jumps to random places between the true first and last frames do
    not pass, although the last frame is exactly where the motion ends (the untrained model's floor)."""
    scenes = list(world.animate(world.unseen_first_frames(motion, 1)[0], motion))
    rng = np.random.default_rng(0)
    for t in (4, 9):  # two frames elsewhere, where a flickering object lands
        s = scenes[t]
        scenes[t] = replace(s, cx=float(np.clip(s.cx + rng.choice([-1, 1]) * 6, 9, 23)),
                            cy=float(np.clip(s.cy + rng.choice([-1, 1]) * 6, 9, 23)))
    smooth = codec.decode(codec.encode(world.render(world.animate(scenes[0], motion))))
    jumpy = codec.decode(codec.encode(world.render(scenes)))
    assert tracking.motion_ok(tracking.track(smooth, scenes[0].shape), motion)
    assert not tracking.motion_ok(tracking.track(jumpy, scenes[0].shape), motion)


@pytest.mark.parametrize("motion", ["grow", "rotate"])
def test_evaluation_first_frames_lie_on_both_sides_of_the_centre(motion):
    scenes = world.unseen_first_frames(motion, 24)
    for axis in ("cx", "cy"):
        offsets = np.array([getattr(s, axis) - world.SIZE / 2 for s in scenes])
        assert (offsets < -1).any() and (offsets > 1).any()
    for s in scenes:  # and the motion still fits: the object at its largest stays inside
        reach = s.size * world.motion_spec(motion).scale * 1.55
        assert reach <= s.cx <= world.SIZE - reach and reach <= s.cy <= world.SIZE - reach
