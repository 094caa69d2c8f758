"""Parameter groups: weight decay on weights only, and discriminative learning rates for a pretrained backbone.

The backbone (a timm model) is split into its stages, earliest first, by timm's own grouping
(`model.group_matcher(coarse=True)`, the regexes timm uses for layer decay); a feature-pyramid backbone
(`features_only=True`, which has no `group_matcher`) is split at its `feature_info` stages instead. Each stage
trains at the LR of the stage after it divided by `lr_ratio`; everything outside the backbone (head, decoder,
fusion, tabular / sequence encoders) is new and trains at the optimizer's `lr`:

    stage:  stem            ...  last stage     head
    lr:     lr / ratio^G    ...  lr / ratio     lr

`layer_decay` is timm's variant: the same rule on timm's finer block groups, with `lr * layer_decay^depth`.
Every group carries `lr_scale`, which the Model multiplies into the group's `lr` once the optimizer is built
(timm's `param_groups_layer_decay` leaves the LRs equal and stores an `lr_scale` that only timm schedulers read;
torch schedulers would ignore it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import nn

from ..errors import ProjectError

HEAD = "head"  # the name of the group of everything outside the backbone


def find_backbone(network: nn.Module) -> nn.Module | None:
    """The pretrained timm backbone of a network, or None (tabular / sequence-only projects).

    The network contract (contract.py): a network names its pretrained part as `network.backbone` (None or
    absent: no backbone), as models/network.py and models/segmentation.py do.
    """
    return getattr(network, "backbone", None)


def backbone_stages(backbone: nn.Module, fine: bool = False) -> list[list[str]]:
    """Parameter names of the backbone per group, earliest (stem) first; never an empty group.

    `fine=False`: timm's stage groups (a ResNet: stem, layer1..layer4); `fine=True`: timm's block groups, as
    timm's layer decay uses them. A feature-pyramid backbone has no `group_matcher`: its `feature_info` stages
    are used for both.
    """
    if hasattr(backbone, "group_matcher"):
        from timm.models import group_parameters  # here, not at the top: the CLI's start-up would pay timm's import

        groups = group_parameters(backbone, backbone.group_matcher(coarse=not fine))
        return [names for _, names in sorted(groups.items()) if names]
    if hasattr(backbone, "feature_info"):
        return _feature_info_stages(backbone)
    return [[name for name, _ in backbone.named_parameters()]]


def _feature_info_stages(backbone: nn.Module) -> list[list[str]]:
    """Stages of a timm feature extractor: each returned level's module and everything before it.

    Parameters outside every level module (the stem before the first level, a norm after the last) join the
    next level, or the last one. Feature wrappers rename modules ("stages.0" -> "stages_0", or a "model." prefix).
    """
    modules = dict(backbone.named_modules())
    prefixes = []
    for name in backbone.feature_info.module_name():
        for candidate in (name, name.replace(".", "_"), f"model.{name}"):
            if candidate in modules:
                prefixes.append(candidate)
                break
    stages: list[list[str]] = [[] for _ in prefixes] or [[]]
    pending: list[str] = []
    for module_name, module in modules.items():  # registration order: a stem comes before its first level
        if module_name in prefixes:  # a level starts (a ResNet's first level, act1, has no parameters itself)
            stages[prefixes.index(module_name)] += pending
            pending = []
        level = next((i for i, p in enumerate(prefixes) if module_name.startswith(p + ".") or module_name == p), None)
        names = [f"{module_name}.{n}" if module_name else n for n, _ in module.named_parameters(recurse=False)]
        if level is None:
            pending += names
        else:
            stages[level] += names
    stages[-1] += pending
    return [names for names in stages if names]


def check_param_group_args(has_backbone: bool, lr_ratio: float, layer_decay: float | None) -> None:
    """Fail with one line naming the key for values that cannot work (called by Model.__init__)."""
    if lr_ratio < 1:
        raise ProjectError(f"model.lr_ratio={lr_ratio} must be >= 1 (earlier backbone stages get lr / lr_ratio)")
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise ProjectError(f"model.layer_decay={layer_decay} must be in (0, 1], or null")
    if layer_decay is not None and lr_ratio != 1:
        raise ProjectError("model.lr_ratio and model.layer_decay are two ways to do the same: set only one")
    if not has_backbone and (lr_ratio != 1 or layer_decay is not None):
        raise ProjectError("model.lr_ratio / model.layer_decay need a pretrained backbone; this network has none")


def param_groups(
    module: nn.Module,
    backbone: nn.Module | None,
    lr_ratio: float = 1.0,
    layer_decay: float | None = None,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups of `module`: per backbone group (earliest first) then the head, each split into
    weights (decayed with the optimizer's weight_decay) and biases / norm scales (1-D tensors, weight_decay 0:
    decaying them only hurts).

    Each group carries `lr_scale`, its LR as a share of the optimizer's: the Model multiplies it in once the
    configured optimizer exists, so any torch optimizer gets the same discriminative LRs.
    Every parameter is included, also those frozen now: fine-tuning only flips `requires_grad` (the optimizer
    skips parameters without a gradient), so the set of groups, and a schedule over them, never changes.
    Groups carry a `name` (`backbone_0`, ..., `head`, `*_no_decay`) that LearningRateMonitor logs them under.
    """
    named: list[tuple[str, list[nn.Parameter], float]] = []
    in_backbone: set[int] = set()
    if backbone is not None:
        params = dict(backbone.named_parameters())
        stages = backbone_stages(backbone, fine=layer_decay is not None)
        factor = layer_decay if layer_decay is not None else 1.0 / lr_ratio
        for index, names in enumerate(stages):
            group = [params[name] for name in names]
            in_backbone.update(id(p) for p in group)
            # The last stage is one step below the head, the first len(stages) steps below.
            named.append((f"backbone_{index}", group, factor ** (len(stages) - index)))
    rest = [p for p in module.parameters() if id(p) not in in_backbone]
    named.append((HEAD, rest, 1.0))
    groups = []
    for name, params, scale in named:
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        if decay:
            groups.append({"name": name, "params": decay, "lr_scale": scale})
        if no_decay:
            groups.append({"name": f"{name}_no_decay", "params": no_decay, "lr_scale": scale, "weight_decay": 0.0})
    return groups


def unfrozen_stage_count(epoch: int, num_stages: int, unfreeze_after: int, unfreeze_every: int) -> int:
    """Gradual unfreezing: how many backbone stages (counted from the last) train in `epoch` (0-based)."""
    if epoch < unfreeze_after:
        return 0
    return min(num_stages, 1 + (epoch - unfreeze_after) // unfreeze_every)


def iter_stage_params(backbone: nn.Module, stages: list[list[str]]) -> Iterator[tuple[int, nn.Parameter]]:
    """(stage index, parameter) for every backbone parameter."""
    params = dict(backbone.named_parameters())
    for index, names in enumerate(stages):
        for name in names:
            yield index, params[name]
