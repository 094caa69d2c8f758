"""The whole network: one encoder per modality -> fusion (which includes the head) -> task outputs.

Encoders are keyed by the same names as the batch ("image", "tabular", ...), so the network reads its
inputs from the batch dict without knowing which modalities exist; ``models/fusion.py`` combines them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Network(nn.Module):
    def __init__(self, encoders: dict[str, nn.Module], fusion: nn.Module):
        super().__init__()
        if not encoders:
            raise ValueError("the network needs at least one encoder")
        expected = getattr(fusion, "names", None)  # the inputs a fusion from build_fusion was built for
        if expected is not None and tuple(expected) != tuple(sorted(encoders)):
            raise ValueError(f"encoders {sorted(encoders)} do not match the fusion's inputs {list(expected)}")
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion

    def features(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per-modality [B, D_m] features before fusion."""
        missing = [name for name in self.encoders if name not in batch]
        if missing:
            raise KeyError(f"batch has no {missing} entry for the encoders; batch keys: {sorted(batch)}")
        return {name: encoder(batch[name]) for name, encoder in self.encoders.items()}

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.fusion(self.features(batch))
