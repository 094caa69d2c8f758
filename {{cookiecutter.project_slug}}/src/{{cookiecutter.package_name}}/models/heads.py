"""Output layers: [B, D] fused features -> [B, out_features] task outputs. Register a new one with
`@register("head", "<name>")` and select it with `model.network.init_args.head: {name: <name>, ...}`."""

from __future__ import annotations

import torch
from torch import nn

from .registry import register


@register("head", "linear")
class LinearHead(nn.Module):
    """Dropout then one linear layer: [B, D] features -> [B, out_features] logits."""

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"head dropout must be in [0, 1), got {dropout}")
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_features, out_features)
        # Near-zero logits at the start: the first predictions are uniform and the loss starts at chance
        # (ln C for cross-entropy), instead of confidently wrong.
        nn.init.normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(features))
