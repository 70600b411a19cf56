"""The toy text encoder: a fixed random word-embedding table over the toy world's small vocabulary.

A prompt is lower-cased, split on spaces and padded to :data:`MAX_TOKENS` with ``<pad>`` (the empty
prompt, used as the unconditional input for classifier-free guidance, is all padding, like CLIP's
empty prompt). Each token becomes its table row plus a fixed sinusoidal position code, giving
``[B, MAX_TOKENS, EMBED_DIM]`` "encoder hidden states" for the UNet's cross-attention. The table is
drawn once from a fixed seed and never trained: the stage-1 UNet learns to read it, just as SD-1.x
learns to read a frozen CLIP. It is saved with the stage-1 weights, so a different torch RNG can never
change what the shipped UNet was trained on.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .world import COLOURS, SHAPES

MAX_TOKENS = 8
EMBED_DIM = 32
VOCAB = ("<pad>", "a", "an", *COLOURS, *SHAPES)


class ToyTextEncoder(nn.Module):
    """Frozen word embeddings + position codes: ``encode(["a red circle"]) -> [1, 8, 32]``."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        # fp16-representable values, so the table saved in fp16 is exactly the one trained with
        self.register_buffer("embedding", torch.randn(len(VOCAB), EMBED_DIM, generator=g).half().float())
        pos = torch.arange(MAX_TOKENS, dtype=torch.float32)[:, None]
        freq = torch.exp(-math.log(100.0) * torch.arange(0, EMBED_DIM, 2, dtype=torch.float32) / EMBED_DIM)
        self.register_buffer("position", torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)], dim=1) * 0.5)
        self.vocab = {w: i for i, w in enumerate(VOCAB)}

    def tokenize(self, prompt: str) -> list[int]:
        words = prompt.lower().replace(",", " ").split()
        unknown = [w for w in words if w not in self.vocab]
        if unknown:
            raise ValueError(f"the toy text encoder does not know {unknown}; its words are: "
                             f"{', '.join(w for w in self.vocab if w != '<pad>')}")
        if len(words) > MAX_TOKENS:
            raise ValueError(f"toy prompts have at most {MAX_TOKENS} words, {prompt!r} has {len(words)}")
        return [self.vocab[w] for w in words] + [0] * (MAX_TOKENS - len(words))

    @torch.no_grad()
    def encode(self, prompts: list[str] | str) -> torch.Tensor:
        """Prompts -> encoder hidden states ``[B, MAX_TOKENS, EMBED_DIM]`` (float32)."""
        prompts = [prompts] if isinstance(prompts, str) else prompts
        ids = torch.tensor([self.tokenize(p) for p in prompts], device=self.embedding.device)
        return self.embedding[ids] + self.position
