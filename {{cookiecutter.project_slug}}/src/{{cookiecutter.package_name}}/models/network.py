"""The whole network: one encoder per modality -> combined features -> head.

Encoders are keyed by the same names as the batch ("image", "tabular", ...), so the network reads its
inputs from the batch dict without knowing which modalities exist.
"""

from __future__ import annotations

import torch
from torch import nn


class Network(nn.Module):
    def __init__(self, encoders: dict[str, nn.Module], head: nn.Module):
        super().__init__()
        if len(encoders) != 1:
            raise ValueError(f"one encoder expected without a fusion module, got {sorted(encoders)}")
        self.encoders = nn.ModuleDict(encoders)
        self.head = head

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, D] features before the head (what a later fusion step combines)."""
        ((name, encoder),) = self.encoders.items()
        return encoder(batch[name])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.features(batch))
