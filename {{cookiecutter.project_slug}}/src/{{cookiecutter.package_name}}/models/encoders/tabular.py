"""Tabular encoder: one embedding per categorical column, concatenated with the numeric inputs, then an MLP.

Embeddings let the model learn a vector per category instead of treating indices as ordered numbers. The MLP
uses LayerNorm rather than BatchNorm so it behaves the same for a batch of one, in eval mode and across DDP
processes without synchronized statistics.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..registry import register


def embedding_dim(cardinality: int) -> int:
    """About half the vocabulary size, capped at 16 (tabular vocabularies rarely need more), at least 2."""
    return max(2, min(16, (cardinality + 1) // 2))


@register("encoder", "tabular")
class TabularEncoder(nn.Module):
    """{"numeric": [B, F] float32, "categorical": [B, K] int64} -> [B, hidden_dim] features.

    `cardinalities[k]` counts the values of categorical column k, including the unknown bucket at index 0.
    """

    def __init__(self, num_numeric: int, cardinalities: list[int], hidden_dim: int = 128, dropout: float = 0.0):
        super().__init__()
        if num_numeric == 0 and not cardinalities:
            raise ValueError("TabularEncoder needs at least one numeric or categorical input")
        self.embeddings = nn.ModuleList(nn.Embedding(size, embedding_dim(size)) for size in cardinalities)
        in_features = num_numeric + sum(embedding.embedding_dim for embedding in self.embeddings)
        self.mlp = nn.Sequential(
            nn.Linear(in_features, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
        )
        self.out_features: int = hidden_dim

    @classmethod
    def from_spec(cls, spec: dict[str, Any], hidden_dim: int = 128, dropout: float = 0.0) -> TabularEncoder:
        """Build from `TabularReader.spec`: {"numeric": F, "categorical": [cardinality, ...]}."""
        return cls(int(spec["numeric"]), [int(size) for size in spec["categorical"]], hidden_dim, dropout)

    def forward(self, tabular: dict[str, torch.Tensor]) -> torch.Tensor:
        categorical = tabular["categorical"]
        embedded = [embedding(categorical[:, k]) for k, embedding in enumerate(self.embeddings)]
        return self.mlp(torch.cat([tabular["numeric"], *embedded], dim=1))
