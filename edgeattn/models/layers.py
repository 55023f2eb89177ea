"""Layers and init shared by the model families (timm names, so checkpoints keep their keys)."""

from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    """timm's Mlp: fc1 -> GELU (exact erf) -> fc2, names ``fc1``/``fc2``."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def init_vit_weights(m: nn.Module) -> None:
    """The official init (timm ViT/PVT/XCiT): truncated normal (std 0.02) Linear weights, zero
    biases, unit LayerNorm. Use with ``module.apply``."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
