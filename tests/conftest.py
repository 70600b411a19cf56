"""Shared test helpers: tiny SD-1.x configs, the official fixture folder, seeded random LAMP UNets."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from lamp_model.unet3d import randomize_motion_layers  # noqa: F401  (re-exported for tests)
# No silent skips: a skip outside the opt-in ComfyUI tests fails the run.
from skip_guard import pytest_runtest_logreport, pytest_sessionfinish, pytest_terminal_summary  # noqa: F401

#: Numbers and tiny weights from the official LAMP code (see tests/fixtures/official_lamp_tiny/README.md).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official_lamp_tiny"


def _derive_fixture_files() -> None:
    """Write the fixture files the repository leaves out because they are derivable: ``model.safetensors`` is
    the official ``unet/diffusion_pytorch_model.bin`` state dict, re-saved (weights_only load, atomic write)."""
    target = FIXTURES / "model.safetensors"
    if target.is_file():
        return
    from lamp_model.weights import atomic_save
    state = torch.load(FIXTURES / "unet" / "diffusion_pytorch_model.bin", map_location="cpu", weights_only=True)
    atomic_save({k: v.contiguous() for k, v in state.items()}, target, metadata={})


_derive_fixture_files()


#: A tiny SD-1.x-shaped 2-D UNet config (diffusers keys). 16/32 channels, 4 groups, 2 heads.
TINY_CONFIG = {
    "sample_size": 8, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [16, 32], "layers_per_block": 1, "attention_head_dim": 2,
    "cross_attention_dim": 16, "norm_num_groups": 4,
}


@pytest.fixture
def tiny_config() -> dict:
    return copy.deepcopy(TINY_CONFIG)


@pytest.fixture
def fixture_dir() -> Path:
    return FIXTURES


@pytest.fixture
def tiny_unet(tiny_config):
    from lamp_model.unet3d import LampUNet3D
    torch.manual_seed(0)
    return randomize_motion_layers(LampUNet3D(tiny_config).eval())


@pytest.fixture
def restore_host_state():
    """Leave nodes.host as found: fallback folders and any pending simulated Cancel."""
    from nodes import host
    saved = dict(host._fallback_dirs)
    yield
    host._fallback_dirs.clear()
    host._fallback_dirs.update(saved)
    host.simulate_cancel(-1)
