"""The whole network: one encoder per input -> fusion -> head (timm's `forward_features` / `forward_head` split).

Encoders are keyed by the batch's input names ("image", "tabular", ...), so the network reads its inputs from the
batch dict without knowing which modalities exist. Every part is chosen by name in the config (models/registry.py):

    network:
      class_path: PACKAGE.models.network.Network
      init_args:
        encoders: {image: {name: timm, backbone: resnet18}}   # inputs without an entry get DEFAULT_ENCODERS
        fusion: {name: concat, fusion_dim: 64}                  # none | concat | late | gated
        head: {name: linear, dropout: 0.1}

`inputs` (what each input holds: feature counts, a vocabulary size) and `num_outputs` come from the data and the
task; the Model passes them, so the config never repeats them. Any other `nn.Module` class whose constructor
starts with `(inputs, num_outputs)` and that has `forward_features` / `forward_head` can take this one's place.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .registry import Spec, build, registered, resolve, split_spec

# The encoder an input gets when `encoders` has no entry for it (models/encoders/).
DEFAULT_ENCODERS = {"image": "timm", "tabular": "tabular", "sequence": "sequence"}


def encoder_spec(name: str, encoders: dict[str, Spec] | None) -> Spec:
    """The configured encoder of input `name`, or its default."""
    spec = (encoders or {}).get(name)
    if spec is not None:
        return spec
    if name not in DEFAULT_ENCODERS:
        raise ValueError(f"input {name!r} has no encoder: add one under model.network.init_args.encoders.{name}")
    return DEFAULT_ENCODERS[name]


class Network(nn.Module):
    """batch dict -> per-input features [B, D_m] -> fused -> head -> outputs [B, num_outputs].

    Args:
        inputs: what each input holds, from the data (the batch keys this network reads).
        num_outputs: the task's output width.
        encoders: per input, the encoder's registered name and options; missing inputs get DEFAULT_ENCODERS.
        fusion: how the inputs' features are combined: none (one input), concat, late or gated (models/fusion.py).
        head: the output layer the fusion ends in (models/heads.py); late fusion puts one on every input.
    """

    def __init__(
        self,
        inputs: dict[str, dict[str, Any]],
        num_outputs: int,
        encoders: dict[str, Spec] | None = None,
        fusion: Spec = "none",
        head: Spec = "linear",
    ):
        super().__init__()
        if not inputs:
            raise ValueError("the network needs at least one input")
        unused = sorted(set(encoders or {}) - set(inputs))
        if unused:
            raise ValueError(f"model.network encoders {unused} name no input of the data ({', '.join(inputs)})")
        self.encoders = nn.ModuleDict(
            {
                name: build("encoder", encoder_spec(name, encoders), spec, where=f"model.network encoders.{name}")
                for name, spec in sorted(inputs.items())
            }
        )
        self.feature_dims = {name: int(encoder.out_features) for name, encoder in self.encoders.items()}

        def make_head(in_features: int) -> nn.Module:
            return build("head", head, in_features, num_outputs, where="model.network head")

        self.fusion = build("fusion", fusion, self.feature_dims, make_head, where="model.network fusion")

    @property
    def backbone(self) -> nn.Module | None:
        """The pretrained part (discriminative LRs, staged fine-tuning): the image encoder's backbone, if any."""
        if "image" not in self.encoders:
            return None
        return getattr(self.encoders["image"], "backbone", None)

    def forward_features(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per-input [B, D_m] features, before fusion (what an auxiliary loss reads)."""
        missing = [name for name in self.encoders if name not in batch]
        if missing:
            raise KeyError(f"batch has no {missing} entry for the encoders; batch keys: {sorted(batch)}")
        return {name: encoder(batch[name]) for name, encoder in self.encoders.items()}

    def forward_head(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Fuse the features and apply the head: the task's raw outputs."""
        return self.fusion(features)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.forward_head(self.forward_features(batch))

    @classmethod
    def data_config(cls, encoders: dict[str, Spec] | None = None, **_: Any) -> dict[str, Any] | None:
        """What the image encoder needs of the data (input size, normalization), read from the config alone:
        the CLI links it into `data.image_config` before anything is built. None: no image input (no image encoder
        configured, and none in the project); {}: the encoder names none (the data's defaults apply)."""
        if "image" not in (encoders or {}) and DEFAULT_ENCODERS["image"] not in registered("encoder"):
            return None
        name, options = split_spec("encoder", encoder_spec("image", encoders))
        encoder_class = resolve("encoder", name)
        data_config = getattr(encoder_class, "data_config", None)
        return data_config(**options) if data_config else {}
