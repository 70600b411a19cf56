"""The LAMP UNet computed on SD-1.x weights that another host owns (ComfyUI's MODEL, for the native path).

A host such as ComfyUI already holds the SD-1.x UNet (in LDM naming), patches it (LoRAs), moves it between
devices and offloads it under memory pressure. :class:`BorrowedLampUNet` runs the engine's own
:class:`~lamp_model.unet3d.LampUNet3D` on those tensors through :func:`torch.func.functional_call`: the module is
a skeleton on the meta device, the base weights are looked up in the host's parameters at every call (so the
host's LoRA patches and device moves apply and nothing is held twice), and only the motion tensors (the
``conv1d``/``conv_gate``/``attn_temp``/``norm_temp`` layers and the tuned ``attn1.to_q``) belong to this object.
Every LAMP concept is therefore computed by the same code as in the LAMP Sampler, bit for bit the same
arithmetic.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from . import weights
from .unet3d import LampUNet3D, lamp_key, motion_conv_names


def ldm_names(ldm_state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None,
              source: str = "host UNet") -> tuple[dict[str, Any], dict[str, str]]:
    """Config and name map of a 2-D SD-1.x UNet in LDM naming (prefix removed, e.g. a ComfyUI
    ``diffusion_model.state_dict()``): ``(diffusers config, {LAMP name: LDM name})``.

    The names come from diffusers' own LDM->diffusers converter, matched by tensor identity (it only renames
    SD-1.x tensors), so no second rename table exists. What shapes cannot tell (head count, groups) comes from
    a motion file's ``metadata`` or the SD-1.x defaults. Raises :class:`~lamp_model.weights.WeightsFormatError`
    for a UNet that is not SD-1.x-shaped.
    """
    state = dict(ldm_state)
    if weights.detect_format(state, source) != "sd1_ldm":
        raise weights.WeightsFormatError(f"{source}: not an SD-1.x UNet in LDM naming.")
    converted = weights._ldm_to_diffusers(state, source)
    by_id = {id(v): k for k, v in state.items()}
    arch = weights.motion_architecture(metadata)
    config = weights.infer_config(converted, {k: arch[k] for k in weights.HINT_KEYS if k in arch}, source)
    with torch.device("meta"):
        convs = set(motion_conv_names(LampUNet3D(config)))
    return config, {lamp_key(k, convs): by_id[id(v)] for k, v in converted.items()}


class BorrowedLampUNet(nn.Module):
    """LAMP UNet = skeleton (meta device) + own motion tensors + borrowed base tensors at each call.

    ``config``: the 2-D SD-1.x config of the host UNet (see :func:`ldm_names`); ``motion``: a motion state dict
    (LAMP names, e.g. from :func:`~lamp_model.weights.read_motion`); ``metadata``: the motion file's, for the fit
    check. The motion tensors are registered as parameters (dots replaced) so that a host can move this module
    with its model; :meth:`forward` takes the base tensors by LAMP name.
    """

    def __init__(self, config: Mapping[str, Any], motion: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, str] | None = None) -> None:
        super().__init__()
        weights.check_motion_fits(config, motion, metadata)
        with torch.device("meta"):
            skeleton = LampUNet3D(dict(config)).eval()
        expected = {k: v.shape for k, v in skeleton.state_dict().items()}
        wrong = [k for k, v in motion.items() if k not in expected or expected[k] != v.shape]
        if wrong:
            raise weights.WeightsFormatError(f"motion file does not fit the base model: {len(wrong)} tensors have "
                                             f"no place or the wrong shape, e.g. {wrong[:3]}.")
        self.__dict__["skeleton"] = skeleton  # not a submodule: it has no real tensors to move
        self.motion = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(v.detach().clone(), requires_grad=False)
                                        for k, v in motion.items()})
        self.base_names = [k for k in expected if k not in motion]

    @property
    def config(self) -> dict[str, Any]:
        return self.skeleton.config

    def motion_tensors(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The motion tensors under their LAMP names on ``device`` in ``dtype`` (no copy when already there)."""
        return {k.replace("__", "."): p.to(device=device, dtype=dtype) for k, p in self.motion.items()}

    def forward(self, base: Mapping[str, torch.Tensor], sample: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor,
                down_block_additional_residuals: Sequence[torch.Tensor | None] | None = None,
                mid_block_additional_residual: torch.Tensor | None = None) -> torch.Tensor:
        """The LAMP UNet's noise prediction ``[B,C,F,h,w]`` with the base tensors ``base`` (LAMP names, already
        on the sample's device in the compute dtype); the motion tensors are cast to match."""
        missing = [k for k in self.base_names if k not in base]
        if missing:
            raise ValueError(f"LAMP: the host UNet lacks {len(missing)} SD-1.x tensors, e.g. {missing[:3]}.")
        dtype = base[self.base_names[0]].dtype
        params = {**{k: base[k] for k in self.base_names}, **self.motion_tensors(sample.device, dtype)}
        return functional_call(self.skeleton, params, (sample, timestep, encoder_hidden_states),
                               {"down_block_additional_residuals": down_block_additional_residuals,
                                "mid_block_additional_residual": mid_block_additional_residual}, strict=True)
