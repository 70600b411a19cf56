"""The layers LAMP adds to an SD-1.x UNet: the gated causal temporal conv and the frame-pooled GroupNorm.

Hidden states inside the LAMP UNet are kept "folded": a video batch ``(B, C, F, H, W)`` travels as
``(B*F, C, H, W)`` with frames next to each other, so every per-frame operation (the SD convs, the
spatial attention) runs on a free view; only the layers below mix frames, and they are told ``num_frames``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GatedCausalConv(nn.Module):
    """LAMP's "temporal-spatial motion learning layer" (the official ``InflatedConv3d``).

    ``out = y + sigmoid(conv_gate(y)) * conv1d_t(y)`` with ``y = conv2d(x)`` applied per frame. The
    temporal branch is a kernel-3 conv over frames at every pixel whose taps see frames ``t-2, t-1, t``
    (zero before frame 0): it never looks at a future frame ("video prediction"). The gate is one scalar
    per pixel per frame, shared by all channels. ``conv1d`` and ``conv_gate`` start at zero, so a freshly
    inflated layer equals the pretrained conv (gate 0.5 times a zero branch).

    Parameter names (``conv2d``, ``conv_gate``, ``conv1d``) equal the official checkpoints'.

    ``temporal_mode`` exists for ablations: ``"causal"`` (official), ``"centered"`` (a plain temporal
    conv with taps ``t-1, t, t+1``) or ``"off"`` (no temporal branch: the layer is the SD conv alone).
    """

    temporal_mode = "causal"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0) -> None:
        super().__init__()
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.conv_gate = nn.Conv2d(out_channels, 1, kernel_size=3, stride=1, padding=1)
        self.conv1d = nn.Conv1d(out_channels, out_channels, kernel_size=3, stride=1, padding=2)
        for p in (*self.conv_gate.parameters(), *self.conv1d.parameters()):
            nn.init.zeros_(p)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        y = self.conv2d(x)
        if self.temporal_mode == "off":
            return y
        gate = torch.sigmoid(self.conv_gate(y))
        shift = 1 if self.temporal_mode == "centered" else 0
        return torch.addcmul(y, gate, causal_temporal_conv(y, self.conv1d.weight, self.conv1d.bias, num_frames, shift))


def causal_temporal_conv(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         num_frames: int, lookahead: int = 0) -> torch.Tensor:
    """Kernel-3 causal conv over frames of folded ``y`` ``(B*F, C, H, W)``; ``weight`` is ``[C, C, 3]``.

    Tap ``k`` multiplies frame ``t - (K-1) + k + lookahead``; ``lookahead=0`` is the official causal
    conv, ``lookahead=1`` a centred (non-causal) one, used only for ablations. Frames outside the clip
    count as zero.

    Equal to the official rearrange → ``Conv1d(padding=2)`` → drop the last two outputs, but computed
    as one 1x1 conv that applies all three taps at once, followed by frame-shifted adds: no copy of the
    activations into a pixels-major layout and no Python loop over frames.
    """
    bf, c, h, w = y.shape
    b = bf // num_frames
    taps = weight.shape[-1]
    # [C_out, C_in, K] -> [K*C_out, C_in]: block k of the output holds W_k @ y. On CPU a batched matmul
    # beats oneDNN's 1x1 conv when there are many pixels per channel (the wide, shallow levels).
    stacked = weight.permute(2, 0, 1).reshape(taps * c, c)
    if h * w >= 4 * c:
        z = torch.matmul(stacked, y.reshape(bf, c, h * w))
    else:
        z = F.conv2d(y, stacked[:, :, None, None])
    z = z.view(b, num_frames, taps, c, h, w)
    out = torch.zeros_like(z[:, :, 0]) if bias is None else bias.to(z.dtype).view(1, 1, c, 1, 1).expand_as(z[:, :, 0]).clone()
    for k in range(taps):  # one shifted add per tap, never a loop over frames
        lag = taps - 1 - k - lookahead  # output frame t reads input frame t - lag
        if lag >= num_frames or -lag >= num_frames:
            continue
        if lag >= 0:
            out[:, lag:] += z[:, : num_frames - lag, k]
        else:
            out[:, :lag] += z[:, -lag:, k]
    return out.view(bf, c, h, w)


class FramePooledGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics pool over all frames of a video, as the official 5-D GroupNorm does.

    The official resnets and ``conv_norm_out`` apply ``nn.GroupNorm`` to ``(B, C, F, H, W)``, so the mean
    and variance of a group are taken over ``(C/G, F, H, W)``: every frame of a video shares them. This
    is needed to reproduce the official weights, and it makes the output depend on the video length.
    Statistics are computed in fp32 for fp16/bf16 inputs.
    """

    def forward(self, x: torch.Tensor, num_frames: int = 1) -> torch.Tensor:  # type: ignore[override]
        bf, c, h, w = x.shape
        b, g = bf // num_frames, self.num_groups
        grouped = x.view(b, num_frames, g, c // g, h * w)
        var, mean = torch.var_mean(grouped.float(), dim=(1, 3, 4), correction=0)  # (B, G) each
        # Fold normalisation and affine into one per-(sample, channel) scale and shift: one pass over x.
        scale = torch.rsqrt(var + self.eps).repeat_interleave(c // g, dim=1)  # (B, C)
        shift = -mean.repeat_interleave(c // g, dim=1) * scale
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        scale, shift = scale.to(x.dtype)[:, None, :, None], shift.to(x.dtype)[:, None, :, None]
        return torch.addcmul(shift, x.view(b, num_frames, c, h * w), scale).view(bf, c, h, w)
