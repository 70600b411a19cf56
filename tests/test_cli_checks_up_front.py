"""The edit / evaluate-videos / paper-eval commands refuse a bad ``--device``, ``--out``, guidance, fps or first
frame with one ``error:`` line and exit 2 *before* any model is loaded or any clip decoded (found in review:
these used to give a torch traceback, or fail only after the inversion / the whole generation)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from lamp_model.checks import compute_device
from test_nodes import folders, lamp_model, motion_file, parts  # noqa: F401  (fixtures)


def _unusable_device() -> str:
    return "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"


@pytest.mark.parametrize("name, message", [
    ("banana", "--device 'banana' is not a device; use auto, cpu, cuda or cuda:N"),
    ("meta", "--device meta holds no data"),
    (_unusable_device(), "this device cannot be used here"),
])
def test_compute_device_refuses(name, message):
    with pytest.raises(ValueError, match=message):
        compute_device(name)


def test_compute_device_accepts():
    assert compute_device("cpu") == torch.device("cpu")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert compute_device(None).type == compute_device("auto").type == compute_device(" AUTO ").type == want


def _one_error_line(capsys) -> str:
    text = capsys.readouterr().err
    assert "Traceback" not in text
    lines = [line for line in text.strip().splitlines() if line.startswith("error")]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


@pytest.fixture
def nothing_loads(monkeypatch):
    """Any model load or clip decode fails the test: the refusals must come first."""
    import lamp_model.data  # every module imported before patching, so that the patches are undone exactly
    import lamp_model.evaluate_videos
    import lamp_model.metrics
    import lamp_model.paper_eval
    import lamp_model.train_cli

    def forbidden(*a, **k):
        raise AssertionError("work started before the bad input was refused")

    for module, name in ((lamp_model.data, "read_frames"), (lamp_model.train_cli, "load_vae"),
                         (lamp_model.train_cli, "make_text_encoder"), (lamp_model.metrics, "load_clip"),
                         (lamp_model.evaluate_videos, "load_clip"), (lamp_model.paper_eval, "load_clip")):
        monkeypatch.setattr(module, name, forbidden)


@pytest.fixture
def paths(tmp_path):
    from PIL import Image

    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded in these cases")
    first = tmp_path / "edited.png"
    Image.new("RGB", (64, 48)).save(first)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    sdxl = tmp_path / "sdxl.safetensors"  # the header of an SD-XL checkpoint: 2048-wide context, label_emb
    save_file({"model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(4, 2048),
               "model.diffusion_model.label_emb.0.0.weight": torch.zeros(4, 2816)}, str(sdxl))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(bytes(range(256)) * 4)
    return {"tmp": tmp_path, "video": video, "first": first, "unwritable": blocker / "out", "sdxl": sdxl,
            "corrupt": corrupt}


EDIT = ["edit", "--motion", "{tmp}/m.safetensors", "--base", "{tmp}/sd", "--video", "{video}", "--first-frame",
        "{first}", "--prompt", "p", "--width", "64", "--height", "48", "--out", "{tmp}/out"]
EVAL = ["evaluate-videos", "{tmp}", "--clip", "{tmp}/clip"]
PAPER = ["paper-eval", "--motions", "{tmp}", "--base", "{tmp}/sd", "--first-frames", "{tmp}", "--clip", "{tmp}/clip",
         "--out", "{tmp}/pe"]

ROWS = [
    (EDIT + ["--device", "banana"], "--device 'banana' is not a device"),
    (EDIT + ["--device", _unusable_device()], "cannot be used here"),
    (EDIT + ["--guidance-scale", "-1"], "--guidance-scale must be >= 0.0, got -1.0"),
    (EDIT + ["--guidance-scale", "nan"], "--guidance-scale must be a finite number"),
    (EDIT + ["--fps", "0"], "--fps must be > 0.0, got 0.0"),
    (EDIT + ["--first-frame", "{tmp}/missing.png"], "--first-frame not found"),
    (EDIT + ["--first-frame", "{video}"], "--first-frame {video}: cannot be read"),
    (EDIT + ["--out", "{unwritable}"], "--out '{unwritable}' cannot be written"),
    (EDIT + ["--base", "{sdxl}"], "this is an SD-XL UNet"),
    (EDIT + ["--base", "{corrupt}"], "is neither a safetensors file nor a PyTorch checkpoint"),
    (EDIT + ["--name", "../escaped"], "--name must be a plain file name stem"),
    (EDIT + ["--name", "sub/x"], "--name must be a plain file name stem"),
    (EVAL + ["--device", "banana"], "--device 'banana' is not a device"),
    (EVAL + ["--device", _unusable_device()], "cannot be used here"),
    (EVAL + ["--out", "{unwritable}"], "--out '{unwritable}' cannot be written"),
    (PAPER + ["--device", "banana"], "--device 'banana' is not a device"),
    (PAPER + ["--out", "{unwritable}"], "--out '{unwritable}' cannot be written"),
    (PAPER + ["--steps", "0"], "--steps must be in [1, 1000], got 0"),
    (PAPER + ["--base", "{sdxl}"], "this is an SD-XL UNet"),
    (PAPER + ["--guidance-scale", "-2"], "--guidance-scale must be >= 0.0, got -2.0"),
]


@pytest.mark.parametrize("argv, message", ROWS, ids=[" ".join(r[0][:1] + r[0][-2:]) for r in ROWS])
def test_refused_before_any_work(argv, message, paths, nothing_loads, capsys):
    from lamp_model.__main__ import main

    names = {k: str(v) for k, v in paths.items()}
    assert main([a.format(**names) for a in argv]) == 2
    assert message.format(**names) in _one_error_line(capsys)


@pytest.mark.parametrize("fps", [0, -3, float("nan"), "8"])
@pytest.mark.parametrize("ext", ["mp4", "gif"])
def test_write_video_refuses_a_bad_frame_rate(tmp_path, fps, ext):
    from lamp_model.video_io import write_video

    with pytest.raises(ValueError, match="fps must be a positive number"):
        write_video(torch.zeros(2, 8, 8, 3), tmp_path / f"v.{ext}", fps=fps)
    assert not (tmp_path / f"v.{ext}").exists()


@pytest.mark.usefixtures("restore_host_state")
def test_invert_node_nan_advice_fits_the_dtype(lamp_model, monkeypatch):  # noqa: F811
    """The NaN message names the precision actually used (an fp32 CPU run is not told to leave fp16)."""
    import lamp_model.inversion as inversion
    from test_editing import invert, source_images

    monkeypatch.setattr(inversion, "ddim_invert", lambda unet, latents, *a, **k: torch.full_like(latents, float("nan")))
    with pytest.raises(FloatingPointError, match="already float32 on cpu, so this is not a precision problem"):
        invert(lamp_model, source_images(), dtype="fp32")


def test_paper_eval_names_only_its_own_text_flags(tmp_path):
    """paper-eval has no --text-embeddings, so its message must not advise it (train and edit do have it)."""
    from lamp_model.paper_eval import _text_encoder
    from lamp_model.train_cli import TrainSetupError, text_encoder_from_folder

    with pytest.raises(ValueError, match="--text-encoder") as err:
        _text_encoder(tmp_path, None, torch.device("cpu"))
    assert "--text-embeddings" not in str(err.value)
    with pytest.raises(TrainSetupError, match="or pass --text-embeddings"):
        text_encoder_from_folder(tmp_path, torch.device("cpu"))


def test_paper_eval_refuses_a_repeated_seed(tmp_path):
    from lamp_model.paper_eval import PaperEvalError, plan

    with pytest.raises(PaperEvalError, match="--seeds 0 1 0 repeats a seed"):
        plan(tmp_path, tmp_path, [0, 1, 0])


def test_evaluate_videos_names_prompt_keys_that_match_no_video(tmp_path, capsys):
    from PIL import Image

    from lamp_model.evaluate_videos import load_videos

    clip = tmp_path / "horse_run" / "a_horse_runs"
    clip.mkdir(parents=True)
    for k in range(2):
        Image.new("RGB", (8, 8), (40 * k, 0, 0)).save(clip / f"{k:03d}.png")
    videos = load_videos(tmp_path, {"horse_run/a_horse_runs": "a horse runs fast", "a_hrose_runs": "typo"})
    assert [v.prompt for v in videos] == ["a horse runs fast"]
    err = capsys.readouterr().err
    assert "1 --prompts key(s) match no video and are not used: a_hrose_runs" in err
    load_videos(tmp_path, {"a_horse_runs": "by name"})
    assert "match no video" not in capsys.readouterr().err


def test_damaged_vae_and_embedding_files_are_one_clear_error(paths):
    """--vae and --text-embeddings files go through the weights reader (were a raw SafetensorError traceback)."""
    from lamp_model.train_cli import load_vae, text_embeddings_from_file
    from lamp_model.weights import WeightsFormatError

    for read in (lambda: load_vae(paths["tmp"], str(paths["corrupt"])),
                 lambda: text_embeddings_from_file(paths["corrupt"])):
        with pytest.raises(WeightsFormatError, match="neither a safetensors file nor a PyTorch checkpoint"):
            read()
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_vae(paths["tmp"], str(paths["tmp"] / "missing.safetensors"))


def test_a_clip_file_is_told_to_be_a_folder(paths):
    from lamp_model.metrics import MetricsError, load_clip

    with pytest.raises(MetricsError, match="is a file; the CLIP must be a folder"):
        load_clip(paths["sdxl"])


def test_tiny_eval_errors_are_one_line(paths, capsys):
    from lamp_model.tiny_eval import main

    assert main([str(paths["unwritable"])]) == 2
    assert f"OUT '{paths['unwritable']}' cannot be written" in _one_error_line(capsys)
    with pytest.raises(SystemExit) as stop:
        main([])
    assert stop.value.code == 2 and "the following arguments are required: out" in _one_error_line(capsys)


@pytest.mark.parametrize("argv, message", [
    (["--motion", "{tmp}/missing.safetensors"], "--motion {tmp}/missing.safetensors: no such file"),
    (["--motion", "{corrupt}"], "is neither a safetensors file nor a PyTorch checkpoint"),
    (["--steps", "0"], "--steps must be in [1, 1000], got 0"),
    (["--guidance", "5", "-1"], "--guidance must be >= 0.0, got -1.0"),
    (["--out", "{unwritable}"], "--out '{unwritable}' cannot be written"),
])
def test_toy_editing_errors_are_one_line(argv, message, paths, capsys):
    """The toy editing proof's command (minutes of tuning) refuses bad input first, in one line."""
    from lamp_model.toy.editing import main

    names = {k: str(v) for k, v in paths.items()}
    out = [] if "--out" in argv else ["--out", str(paths["tmp"] / "toy_edit")]
    assert main([a.format(**names) for a in argv] + out) == 2
    assert message.format(**names) in _one_error_line(capsys)
