"""LAMP Invert Video on the native path's LAMP MODEL (LAMP Apply Motion), without ComfyUI: the MODEL's LAMP UNet
inverts the clip exactly as the LAMP_MODEL of the same motion on the same base does (fp32, tiny model)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from test_native import HostUNet
from test_nodes import StubVAE, cond, folders, lamp_model, motion_file, parts  # noqa: F401  (fixtures)

from lamp_model import weights
from lamp_model.borrowed_unet import BorrowedLampUNet, ldm_names
from nodes import host
from nodes.invert_nodes import InvertedStart, LampInvertVideo
from nodes.native import LampMotionPatch, NativeLampUNet, motion_patch

pytestmark = pytest.mark.usefixtures("restore_host_state")


class FakeMODEL:
    """A ComfyUI MODEL (ModelPatcher) stand-in: its UNet in LDM naming and ComfyUI's wrapper dict."""

    def __init__(self, ldm: dict, patch: LampMotionPatch | None) -> None:
        self.model = SimpleNamespace(diffusion_model=HostUNet(ldm), manual_cast_dtype=None,
                                     get_dtype=lambda: torch.float32)
        self.load_device = torch.device("cpu")
        self.wrappers = {"diffusion_model": {} if patch is None else {host.NATIVE_KEY: [patch.diffusion_model]}}

    def get_wrappers(self, wrapper_type: str, key: str) -> list:
        return self.wrappers.get(wrapper_type, {}).get(key, [])


@pytest.fixture
def native(folders, parts, motion_file, monkeypatch):  # noqa: F811
    """(LAMP MODEL of the motion file on the tiny base, its patch, the load_for_run calls)."""
    motion, metadata = weights.read_motion(host.motion_path(motion_file))
    config, names = ldm_names(parts.ldm, metadata)
    unet = BorrowedLampUNet(config, motion, metadata)
    patch = LampMotionPatch(unet, {k: v for k, v in names.items() if k in set(unet.base_names)})
    loads = []
    # the fake host UNet keeps its tensors flat, so the slot look-up is faked as in test_native
    monkeypatch.setattr(host, "tensor_slots", lambda module, names: (module, names))
    monkeypatch.setattr(host, "live_tensors", lambda slots, device, dtype:
                        {k: slots[0].tensor(v).to(device, dtype) for k, v in slots[1].items()})
    monkeypatch.setattr(host, "load_for_run", lambda model, shape: loads.append((model, tuple(shape))))
    return FakeMODEL(parts.ldm, patch), patch, loads


def images(frames=9, seed=0):
    return torch.rand(frames, 32, 32, 3, generator=torch.Generator().manual_seed(seed))


def invert(**kw):
    args = dict(images=images(), vae=StubVAE(), conditioning=cond(seed=7), frames=4, start=1, stride=2, steps=3,
                width=32, height=32, resize="stretch", dtype="fp32")
    args.update(kw)
    return LampInvertVideo().invert(**args)


def test_native_model_inverts_like_the_lamp_model(native, lamp_model):  # noqa: F811
    model, patch, loads = native
    want, first_want, source_want = invert(lamp_model=lamp_model)
    got, first, source = invert(model=model)
    assert isinstance(got, InvertedStart) and got.steps == 3 and got.latent.shape == (1, 4, 4, 4, 4)
    torch.testing.assert_close(got.latent, want.latent, atol=1e-5, rtol=0)
    assert (got.latent - invert(model=model, images=images(seed=1))[0].latent).abs().max() > 1e-3
    assert torch.equal(first, first_want) and torch.equal(source, source_want)
    assert loads == [(model, (4, 4, 4, 4)), (model, (4, 4, 4, 4))], "the MODEL is loaded the ComfyUI way"


def test_native_unet_is_the_patch_module_not_a_copy(native):
    model, patch, _ = native
    unet = NativeLampUNet(patch, model.model.diffusion_model)
    assert unet.lamp is patch.unet and unet.config == patch.unet.config
    assert {id(p) for p in unet.parameters()} == {id(p) for p in patch.unet.parameters()}
    assert motion_patch(model) is patch


def test_exactly_one_lamp_model_and_a_plain_model_is_refused(native, lamp_model, parts):  # noqa: F811
    model, _, _ = native
    with pytest.raises(ValueError, match=r"LAMP Invert Video: connect exactly one LAMP model: 'lamp_model' .* or "
                                         r"'model' .*none is connected"):
        invert()
    with pytest.raises(ValueError, match="connect exactly one LAMP model.*not both"):
        invert(lamp_model=lamp_model, model=model)
    plain = FakeMODEL(parts.ldm, None)
    with pytest.raises(ValueError, match="'model' is a MODEL without LAMP motion; put LAMP Apply Motion"):
        invert(model=plain)
    with pytest.raises(ValueError, match="put LAMP Apply Motion"):  # not a ModelPatcher at all
        invert(model=SimpleNamespace(model=plain.model))
    with pytest.raises(ValueError, match="'conditioning' has width 768 but this LAMP model needs 16"):
        invert(model=model, conditioning=cond(width=768))


def test_native_wrapper_reads_comfyuis_wrapper_dict():
    def first(*a):
        return None

    def second(*a):
        return None

    model = SimpleNamespace(get_wrappers=lambda kind, key: {("diffusion_model", host.NATIVE_KEY): [first, second]}
                            .get((kind, key), []))
    assert host.native_wrapper(model) is second
    assert host.native_wrapper(SimpleNamespace(get_wrappers=lambda kind, key: [])) is None
    assert host.native_wrapper(object()) is None
    assert motion_patch(model) is None, "a wrapper that is no LampMotionPatch method is not LAMP's"
