"""Shared test helpers: tiny SD-1.x configs, the official fixture folder, seeded random LAMP UNets."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from lamp_model.unet3d import randomize_motion_layers  # noqa: F401  (re-exported for tests)

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "official_lamp_tiny"

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
    if not FIXTURES.is_dir():
        pytest.skip(f"official fixtures not found at {FIXTURES}")
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
