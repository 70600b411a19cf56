"""LAMP's attention: frame-0 self-attention, text cross-attention and temporal attention.

All three run through PyTorch's ``scaled_dot_product_attention`` (flash / memory-efficient kernels where
available), never materialising the score matrix. Module and parameter names (``attn1``, ``attn2``,
``ff``, ``attn_temp``, ``norm1..3``, ``norm_temp``, ``to_q/to_k/to_v/to_out.0``) equal the official
checkpoints'.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from einops import rearrange
from torch import nn


class Attention(nn.Module):
    """Multi-head attention of ``queries`` ``(G, M, C)`` over ``context`` ``(G, L, D)``.

    The caller chooses the grouping ``G``: that is how frame-0 attention avoids computing keys and values
    for every frame (see :class:`LampTransformerBlock`).
    """

    def __init__(self, query_dim: int, heads: int, dim_head: int, context_dim: int | None = None,
                 out_bias: bool = True) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, bias=out_bias), nn.Dropout(0.0)])

    def forward(self, queries: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = queries if context is None else context
        g, m, _ = queries.shape
        q = self.to_q(queries).view(g, m, self.heads, -1).transpose(1, 2)
        k = self.to_k(context).view(g, context.shape[1], self.heads, -1).transpose(1, 2)
        v = self.to_v(context).view(g, context.shape[1], self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out[0](out.transpose(1, 2).reshape(g, m, -1))


class LampTransformerBlock(nn.Module):
    """SD's transformer block with LAMP's two changes.

    1. ``attn1``: every frame's queries attend to the keys/values of frame 0 only. Because those keys
       and values are the same for all frames, the frames' queries are folded into one long query
       sequence per video and keys/values are computed for frame 0 alone (the official code computes
       them for every frame and then gathers frame 0; the result is identical). Set
       ``first_frame_kv_only = False`` to compute them the official way (for benchmarks).
    2. ``attn_temp`` after the feed-forward: pre-LayerNorm self-attention over the F frames at every
       pixel, residual, no positional encoding and no mask. Its output projection starts at zero.
    """

    first_frame_kv_only = True
    #: Content lock for long videos (:class:`FirstFrameBank`): None (default, official) = frame-0 attention
    #: reads this video's own frame 0; a bank records or substitutes the frame-0 tokens it reads.
    frame0_bank: "FirstFrameBank | None" = None

    def __init__(self, dim: int, heads: int, context_dim: int) -> None:
        super().__init__()
        dim_head = dim // heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, dim_head)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, dim_head, context_dim=context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout=0.0, activation_fn="geglu")
        self.norm_temp = nn.LayerNorm(dim)
        self.attn_temp = Attention(dim, heads, dim_head)
        nn.init.zeros_(self.attn_temp.to_out[0].weight)

    def forward(self, x: torch.Tensor, context: torch.Tensor, num_frames: int) -> torch.Tensor:
        bf, n, c = x.shape
        b = bf // num_frames
        h = self.norm1(x)
        first = h.view(b, num_frames, n, c)[:, 0]
        if self.frame0_bank is not None:
            first = self.frame0_bank.exchange(self, first)
        if self.first_frame_kv_only:
            attn = self.attn1(h.reshape(b, num_frames * n, c), first)
        else:
            attn = self.attn1(h, first[:, None].expand(b, num_frames, n, c).reshape(bf, n, c))
        x = attn.view(bf, n, c) + x
        # Text keys/values are the same for every frame of a video: fold the frames into the queries.
        x = self.attn2(self.norm2(x).reshape(b, num_frames * n, c), context).view(bf, n, c) + x
        x = self.ff(self.norm3(x)) + x
        xt = rearrange(x, "(b f) n c -> (b n) f c", f=num_frames)
        xt = self.attn_temp(self.norm_temp(xt)) + xt
        return rearrange(xt, "(b n) f c -> (b f) n c", n=n)


class FirstFrameBank:
    """Which frame the frame-0 attention reads: the "content lock" of long videos.

    In ``"record"`` mode every :class:`LampTransformerBlock` it is attached to stores the normalised frame-0
    tokens it is about to read (and reads them as usual); in ``"read"`` mode it reads the stored tokens instead
    of its video's own frame 0. Recording a forward pass whose frame 0 is the original first frame and then
    reading them in a later segment's pass makes that segment attend to the original frame one.
    """

    def __init__(self) -> None:
        self.mode = "record"
        self.tokens: dict[int, torch.Tensor] = {}

    def exchange(self, block: nn.Module, first: torch.Tensor) -> torch.Tensor:
        if self.mode == "record":
            self.tokens[id(block)] = first.clone()  # a copy: a view would keep every frame's tokens alive
            return first
        stored = self.tokens.get(id(block))
        if stored is None or stored.shape != first.shape:
            raise RuntimeError("content lock: no recorded frame-0 tokens of this shape; record a pass first")
        return stored


class Transformer3D(nn.Module):
    """SD's spatial transformer (GroupNorm, 1x1 ``proj_in``, one block, 1x1 ``proj_out``, residual),
    applied per frame (its GroupNorm is per frame, as in the official code) with a LAMP block inside."""

    def __init__(self, channels: int, heads: int, context_dim: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList([LampTransformerBlock(channels, heads, context_dim)])
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, context: torch.Tensor, num_frames: int) -> torch.Tensor:
        hgt = x.shape[2]
        h = rearrange(self.proj_in(self.norm(x)), "bf c h w -> bf (h w) c")
        for block in self.transformer_blocks:
            h = block(h, context, num_frames)
        return self.proj_out(rearrange(h, "bf (h w) c -> bf c h w", h=hgt)) + x
