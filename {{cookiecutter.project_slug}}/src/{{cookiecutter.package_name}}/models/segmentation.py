"""Semantic segmentation network: a timm feature pyramid (`features_only=True`) and a small FPN decoder.

Any timm model that supports `features_only` works (ResNet, ConvNeXt, EfficientNet, ...): the decoder reads
the channels and strides of the levels from `feature_info`, and upsamples to each level's actual size, so
input sides that are not a multiple of 32 work too.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .encoders.image import ImageEncoder, create_backbone

# The decoder works at stride 4 (like FPN / Semantic FPN); finer levels (a ResNet's stride-2 stem) are skipped.
MIN_REDUCTION = 4


class SegmentationNetwork(nn.Module):
    """batch["image"] [B, 3, H, W] -> per-pixel logits [B, num_outputs, H, W] (num_outputs: the classes).

    The model builds it as `network(inputs, num_outputs)`, like models/network.py's Network; `backbone`,
    `pretrained` and `pretrained_file` are those of the timm image encoder (models/encoders/image.py).

    Decoder: a 1x1 lateral conv to `decoder_dim` on every used pyramid level, top-down upsample-and-add from
    the coarsest level, one 3x3 conv + BN + ReLU, dropout, a 1x1 classifier (near-zero initial weights, so
    the first predictions are uniform and the loss starts at chance), and bilinear upsampling to H x W.
    """

    def __init__(
        self,
        inputs: dict[str, Any],
        num_outputs: int,
        backbone: str = "resnet18",
        pretrained: bool = False,
        pretrained_file: str | None = None,
        decoder_dim: int = 64,
        dropout: float = 0.0,
    ):
        super().__init__()
        if sorted(inputs) != ["image"]:
            raise ValueError(f"SegmentationNetwork reads images only; the data's inputs are {', '.join(inputs)}")
        num_classes = num_outputs
        try:  # a missing or unfitting weights file raises PretrainedWeightsError, which passes through
            self.backbone = create_backbone(backbone, pretrained, pretrained_file, features_only=True)
        except (RuntimeError, ValueError, TypeError, AttributeError) as error:
            raise ValueError(
                f"model.backbone={backbone!r} cannot give a feature pyramid (timm features_only=True): {error}"
            ) from error
        info = self.backbone.feature_info
        reductions, channels = info.reduction(), info.channels()
        levels = [i for i, r in enumerate(reductions) if r >= MIN_REDUCTION] or list(range(len(reductions)))
        self.levels = levels
        self.reductions = [reductions[i] for i in levels]
        self.lateral = nn.ModuleList(nn.Conv2d(channels[i], decoder_dim, kernel_size=1) for i in levels)
        self.fuse = nn.Sequential(
            nn.Conv2d(decoder_dim, decoder_dim, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(decoder_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(decoder_dim, num_classes, kernel_size=1)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)
        self.num_classes = num_classes

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Pyramid levels (finest first) -> logits at the finest used level's resolution."""
        used = [features[i] for i in self.levels]
        x = self.lateral[-1](used[-1])
        for feature, lateral in zip(reversed(used[:-1]), reversed(self.lateral[:-1]), strict=True):
            x = lateral(feature) + F.interpolate(x, size=feature.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.dropout(self.fuse(x)))

    def forward_features(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The backbone's pyramid levels (finest first) and the input's size, for the head to upsample to."""
        image = batch["image"]
        return {"image": self.backbone(image), "size": tuple(image.shape[-2:])}

    def forward_head(self, features: dict[str, Any]) -> torch.Tensor:
        logits = self.decode(features["image"])
        return F.interpolate(logits, size=features["size"], mode="bilinear", align_corners=False)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.forward_head(self.forward_features(batch))

    @classmethod
    def data_config(
        cls, backbone: str = "resnet18", pretrained: bool = False, pretrained_file: str | None = None, **_: Any
    ) -> dict[str, Any]:
        """The backbone's input size and normalization, for the data (see models/network.py)."""
        return ImageEncoder.data_config(backbone, pretrained, pretrained_file)
