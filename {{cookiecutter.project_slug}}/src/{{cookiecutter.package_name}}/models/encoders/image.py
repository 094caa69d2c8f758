"""Image encoder: any timm backbone, returning one pooled feature vector per image."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ...errors import PretrainedWeightsError
from ..registry import register

HUB_HOST = "huggingface.co"


def hub_reachable(host: str = HUB_HOST, timeout: float = 3.0) -> bool:
    """True if a TCP connection to the weights hub opens within `timeout` seconds."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "false", "")


def _weights_hint(backbone: str) -> str:
    cache = (
        "HF_HUB_OFFLINE is set and the Hugging Face cache does not hold them"
        if _hub_offline()
        else "set HF_HUB_OFFLINE=1 to use weights already in the Hugging Face cache"
    )
    return (
        f"give the image encoder a pretrained_file (local weights for {backbone!r}: .safetensors or a .pth state "
        f"dict), {cache}, or set pretrained: false to train from scratch (on a CPU, the settings of "
        "configs/toy.yaml: a small backbone from scratch at a small image size)"
    )


# Where the backbone sits in a project checkpoint: classifiers and fused models, then segmentation networks.
BACKBONE_PREFIXES = ("network.encoders.image.backbone.", "network.backbone.")


def backbone_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The backbone's state dict from a checkpoint this project wrote (`fit` on another dataset).

    The head, decoder and other encoders stay behind, so the new run gets a fresh head for its own classes.
    """
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True).get("state_dict", {})
    except Exception as error:  # a truncated or foreign file: name it instead of a pickle traceback
        message = f"model.pretrained_file={str(checkpoint)!r} is not a readable checkpoint: {error}"
        raise PretrainedWeightsError(message) from None
    for prefix in BACKBONE_PREFIXES:
        weights = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        if weights:
            return weights
    prefixes = " or ".join(BACKBONE_PREFIXES)
    raise PretrainedWeightsError(f"model.pretrained_file={str(checkpoint)!r} holds no image backbone (no {prefixes}*)")


def create_backbone(
    backbone: str, pretrained: bool = False, pretrained_file: str | None = None, **timm_kwargs: Any
) -> nn.Module:
    """A timm model without its classifier (`num_classes=0`): forward gives pooled features [B, D].

    `pretrained_file` goes through timm's own loading (`pretrained_cfg_overlay=dict(file=...)`), so the
    classifier of the file is dropped and the first conv is adapted exactly as for hub weights. A `.ckpt` of this
    project contributes its backbone only (`backbone_weights`).
    `timm_kwargs` go to `timm.create_model` as well, e.g. `features_only=True, out_indices=(1, 2, 3, 4)` for a
    feature pyramid (a list of [B, C_i, H/r_i, W/r_i] maps, see `model.feature_info`).
    """
    kwargs: dict[str, Any] = {"num_classes": 0, **timm_kwargs}
    if backbone not in timm.list_models() and backbone.split(".")[0] not in timm.list_models():
        raise PretrainedWeightsError(f"model.backbone={backbone!r} is not a timm model name (see timm.list_models())")
    if pretrained_file:
        path = Path(pretrained_file)
        if not path.is_file():
            raise PretrainedWeightsError(f"model.pretrained_file={pretrained_file!r} does not exist")
        # A checkpoint of this project (fit on another dataset) hands timm its backbone's weights; any other file
        # (timm/hub .safetensors or .pth) is timm's to read.
        source = {"state_dict": backbone_weights(path)} if path.suffix == ".ckpt" else {"file": str(path)}
        try:
            return timm.create_model(backbone, pretrained=True, pretrained_cfg_overlay=source, **kwargs)
        except (RuntimeError, KeyError, ValueError, OSError) as error:
            raise PretrainedWeightsError(
                f"model.pretrained_file={pretrained_file!r} does not fit {backbone!r}: {error}"
            ) from error
    if not pretrained:
        return timm.create_model(backbone, pretrained=False, **kwargs)
    # The hub client retries for about a minute when the network is down; fail in seconds instead.
    if not _hub_offline() and not hub_reachable():
        raise PretrainedWeightsError(f"cannot reach {HUB_HOST} to download {backbone!r}: {_weights_hint(backbone)}")
    try:
        return timm.create_model(backbone, pretrained=True, **kwargs)
    except (OSError, RuntimeError) as error:
        raise PretrainedWeightsError(
            f"could not load pretrained weights for {backbone!r} ({error}); {_weights_hint(backbone)}"
        ) from error


@register("encoder", "timm")
class ImageEncoder(nn.Module):
    """[B, C, H, W] images -> [B, D] features, D = `out_features`, from any timm backbone.

    Args:
        backbone: any timm model name, e.g. "resnet18", "convnext_tiny", "efficientnet_b0.ra_in1k".
        pretrained: load the backbone's pretrained weights from the Hugging Face hub.
        pretrained_file: load the backbone's weights from this local file instead (safetensors, state dict, or
            a checkpoint of this project: its backbone only).
    """

    def __init__(self, backbone: str = "resnet18", pretrained: bool = False, pretrained_file: str | None = None):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained, pretrained_file)
        # Models with a conv/MLP after pooling (MobileNetV3, LCNet, ...) output head_hidden_size, not num_features.
        self.out_features: int = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone(image)

    @classmethod
    def data_config(
        cls, backbone: str = "resnet18", pretrained: bool = False, pretrained_file: str | None = None
    ) -> dict[str, Any]:
        """The input size, normalization and interpolation the backbone's weights expect (timm's pretrained
        config), for the data: `pretrained` says whether they were learned at that size (a size warning applies)."""
        cfg = timm.get_pretrained_cfg(backbone)
        if cfg is None:
            raise PretrainedWeightsError(
                f"model.backbone={backbone!r} is not a timm model name (see timm.list_models())"
            )
        interpolation = cfg.interpolation if cfg.interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
        return {
            "image_size": int(cfg.input_size[-1]),
            "mean": [float(m) for m in cfg.mean],
            "std": [float(s) for s in cfg.std],
            "interpolation": interpolation,
            "pretrained": bool(pretrained or pretrained_file),
            "source": f"timm backbone {backbone!r}",
        }
