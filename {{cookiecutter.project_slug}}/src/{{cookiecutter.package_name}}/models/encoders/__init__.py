"""One encoder per input modality, each mapping its batch entry to [B, out_features] features."""

from __future__ import annotations

from typing import Any

from torch import nn


def build_encoder(
    name: str,
    spec: dict[str, Any],
    *,
    backbone: str = "resnet18",
    pretrained: bool = False,
    pretrained_file: str | None = None,
    hidden_dim: int = 128,
    sequence_encoder: str = "gru",
    dropout: float = 0.0,
) -> nn.Module:
    """The encoder of input `name` ("image", "tabular", "sequence"), sized by its data reader's `spec`.

    Modules are imported on demand: a project keeps only the encoders of its own inputs. A new modality adds a
    branch here and a reader in data/; the network and fusion code stay the same.
    """
    if name == "image":
        from .image import ImageEncoder

        return ImageEncoder(backbone, pretrained, pretrained_file)
    if name == "tabular":
        from .tabular import TabularEncoder

        return TabularEncoder.from_spec(spec, hidden_dim=hidden_dim, dropout=dropout)
    if name == "sequence":
        from .sequence import SequenceEncoder

        return SequenceEncoder.from_spec(spec, kind=sequence_encoder, hidden_dim=hidden_dim, dropout=dropout)
    raise ValueError(f"no encoder for input {name!r}; add one in models/encoders/ and a branch in build_encoder")
