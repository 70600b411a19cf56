"""The official fixture set lives in the repository, and a run fails when a test skips that is not opt-in."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import FIXTURES

TESTS = Path(__file__).resolve().parent


def test_fixture_set_is_inside_the_repository():
    root = TESTS.parent
    assert FIXTURES.is_relative_to(root) and (FIXTURES / "README.md").is_file()
    for name in ("unet/config.json", "unet/diffusion_pytorch_model.bin", "unet_forward.safetensors",
                 "sampling.safetensors", "postprocess.safetensors", "inversion.safetensors"):
        assert (FIXTURES / name).is_file(), name


def test_derived_model_safetensors_equals_the_official_bin():
    derived = load_file(FIXTURES / "model.safetensors")
    official = torch.load(FIXTURES / "unet" / "diffusion_pytorch_model.bin", map_location="cpu", weights_only=True)
    assert set(derived) == set(official) and len(official) == 1056
    assert all(torch.equal(derived[k], official[k]) for k in official)


def test_derived_file_is_not_committed():
    tracked = subprocess.run(["git", "ls-files", str(FIXTURES / "model.safetensors")], cwd=TESTS.parent,
                             capture_output=True, text=True)
    if tracked.returncode != 0:  # not a git checkout (e.g. an sdist): nothing to check
        return
    assert tracked.stdout.strip() == ""


SKIP_CASES = [  # (test file body, COMFYUI_DIR, expected exit code, text the output must contain)
    ("def test_a():\n    pytest.skip('fixture missing')\n", None, 1, "test_probe.py::test_a: Skipped: fixture missing"),
    ("@pytest.mark.skipif(True, reason='no lib')\ndef test_a():\n    pass\n", None, 1, "unexpected skips"),
    ("@pytest.mark.integration\ndef test_a():\n    pytest.skip('COMFYUI_DIR not set')\n", None, 0, "1 skipped"),
    ("@pytest.mark.integration\ndef test_a():\n    pytest.skip('no ComfyUI python')\n", "/somewhere", 1,
     "unexpected skips"),
    ("@pytest.mark.xfail(reason='known')\ndef test_a():\n    assert False\n", None, 0, "1 xfailed"),
    ("def test_a():\n    assert False\n", None, 1, "1 failed"),
    ("X = 1\n", None, 5, "no tests ran"),
]


@pytest.mark.parametrize("body,comfyui_dir,rc,text", SKIP_CASES)
def test_skip_guard(tmp_path, body, comfyui_dir, rc, text):
    (tmp_path / "conftest.py").write_text("from skip_guard import *  # noqa: F401,F403\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    integration: opt-in\n")
    (tmp_path / "test_probe.py").write_text("import pytest\n\n" + textwrap.dedent(body))
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_DIR"}
    env["PYTHONPATH"] = str(TESTS)
    if comfyui_dir:
        env["COMFYUI_DIR"] = comfyui_dir
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == rc, run.stdout + run.stderr
    assert text in run.stdout
