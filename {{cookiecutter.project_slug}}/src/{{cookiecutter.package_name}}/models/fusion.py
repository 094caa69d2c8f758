"""Fusion: combine the per-modality features into task outputs, ending in the head it is given.

Each module maps ``features: dict[str, Tensor[B, D_m]]`` (one entry per modality, keyed like the batch) to
``[B, num_outputs]``. Inputs are handled in ``sorted(feature_dims)`` order, so adding a modality touches no
code here: only its encoder and reader. The network hands every fusion ``make_head`` (in_features -> head,
models/heads.py), so the head is chosen in the config, not here; a fusion is registered like the other parts
(``@register("fusion", name)``) and built from ``model.network.init_args.fusion: {name: ..., fusion_dim: ...}``.

Which one to pick:
- ``none``: exactly one input; the head reads the encoder's features.
- ``concat`` (default for several inputs, cheap): project each input to ``fusion_dim`` (so a 512-d image
  feature does not drown an 8-d tabular one), concatenate, one hidden layer, head. Learns interactions between
  inputs (e.g. "the image matters only when the lab value is high").
- ``late``: one full predictor per input, outputs averaged with learned weights (``modality_weights()``).
  Robust when each input is informative on its own or one of them is weak/noisy, and easy to read. It can
  NOT learn interactions: the output is a weighted sum of per-input outputs (an XOR of two inputs is out of reach).
- ``gated``: like concat, but each projected input is first scaled by a per-sample softmax gate over the
  inputs (``last_gates`` / ``mean_gates()`` for logging). For data where how much to rely on each input
  differs per sample (e.g. blurry images in some samples); a little more costly and noisier than concat on
  small data.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .registry import register

# Share of the gates spread evenly over the inputs: each input keeps a gate >= GATE_FLOOR / M. Without it the
# gates saturate to 0/1 within a few dozen steps and a closed gate cuts an input off for good (the XOR test in
# tests/test_fusion.py then stalls at 3 of 4 cells for about 1 seed in 4; with it, 8 of 8 seeds learn it).
GATE_FLOOR = 0.2
# in_features -> the head (models/heads.py) the fusion ends in; late fusion makes one per input.
MakeHead = Callable[[int], nn.Module]


def _projection(in_features: int, fusion_dim: int) -> nn.Module:
    """Map one encoder's features to a common, normalized, low-dimensional space."""
    return nn.Sequential(nn.Linear(in_features, fusion_dim), nn.LayerNorm(fusion_dim), nn.GELU())


class _Fusion(nn.Module):
    """Shared input handling: the fixed, sorted input names and the checks on the features dict."""

    kind = ""

    many_inputs = True  # False: exactly one input (NoFusion)

    def __init__(self, feature_dims: dict[str, int]):
        super().__init__()
        self.names = tuple(sorted(feature_dims))
        bad = {name: d for name, d in feature_dims.items() if not isinstance(d, int) or d < 1}
        if not self.names or bad:
            raise ValueError(f"{self.kind} fusion: needs positive integer feature widths, got {dict(feature_dims)}")
        if self.many_inputs and len(self.names) < 2:
            raise ValueError(
                f"fusion {self.kind!r} combines at least two inputs, got {list(self.names)}; use fusion 'none' for one"
            )
        if not self.many_inputs and len(self.names) != 1:
            raise ValueError(
                f"fusion 'none' takes exactly one input, got {list(self.names)}; "
                "choose concat, late or gated for several"
            )
        self.feature_dims = {name: int(feature_dims[name]) for name in self.names}

    def _inputs(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The features in ``self.names`` order, after checking the keys and shapes."""
        missing = [name for name in self.names if name not in features]
        if missing:
            raise KeyError(f"{self.kind} fusion: missing features for {missing}; expected exactly {list(self.names)}")
        unexpected = sorted(set(features) - set(self.names))
        if unexpected:
            raise ValueError(
                f"{self.kind} fusion: unexpected features {unexpected}; expected exactly {list(self.names)}"
            )
        inputs = [features[name] for name in self.names]
        if torch.jit.is_tracing():  # export: sizes are traced values (checking them only warns) and fixed by the trace
            return inputs
        for name, x in zip(self.names, inputs, strict=True):
            if x.ndim != 2 or x.shape[1] != self.feature_dims[name] or x.shape[0] != inputs[0].shape[0]:
                raise ValueError(
                    f"{self.kind} fusion: features '{name}' have shape {tuple(x.shape)}, expected "
                    f"[{inputs[0].shape[0]}, {self.feature_dims[name]}]"
                )
        return inputs


@register("fusion", "none")
class NoFusion(_Fusion):
    """One input: its features go straight to the head."""

    kind = "none"
    many_inputs = False

    def __init__(self, feature_dims: dict[str, int], make_head: MakeHead):
        super().__init__(feature_dims)
        self.head = make_head(self.feature_dims[self.names[0]])

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self._inputs(features)[0])


@register("fusion", "concat")
class ConcatFusion(_Fusion):
    """Project each input, concatenate, one hidden layer, head."""

    kind = "concat"

    def __init__(self, feature_dims: dict[str, int], make_head: MakeHead, fusion_dim: int = 64):
        super().__init__(feature_dims)
        if fusion_dim < 1:
            raise ValueError(f"{self.kind} fusion: fusion_dim must be >= 1, got {fusion_dim}")
        self.projections = nn.ModuleDict({n: _projection(d, fusion_dim) for n, d in self.feature_dims.items()})
        self.mix = nn.Sequential(nn.Linear(len(self.names) * fusion_dim, fusion_dim), nn.GELU())
        self.head = make_head(fusion_dim)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = self._inputs(features)
        projected = [self.projections[name](x) for name, x in zip(self.names, inputs, strict=True)]
        return self.head(self.mix(torch.cat(projected, dim=1)))


@register("fusion", "late")
class LateFusion(_Fusion):
    """One predictor per input; outputs combined with learned weights softmax(w) (equal at the start)."""

    kind = "late"

    def __init__(self, feature_dims: dict[str, int], make_head: MakeHead, fusion_dim: int = 64):
        super().__init__(feature_dims)
        if fusion_dim < 1:
            raise ValueError(f"{self.kind} fusion: fusion_dim must be >= 1, got {fusion_dim}")
        self.heads = nn.ModuleDict(
            {n: nn.Sequential(_projection(d, fusion_dim), make_head(fusion_dim)) for n, d in self.feature_dims.items()}
        )
        self.weight_logits = nn.Parameter(torch.zeros(len(self.names)))

    def modality_weights(self) -> dict[str, float]:
        """The current weight of each input's output (they sum to 1)."""
        weights = torch.softmax(self.weight_logits.detach(), dim=0)
        return {name: float(w) for name, w in zip(self.names, weights, strict=True)}

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = self._inputs(features)
        outputs = torch.stack([self.heads[name](x) for name, x in zip(self.names, inputs, strict=True)])  # [M, B, O]
        weights = torch.softmax(self.weight_logits, dim=0).to(outputs.dtype)
        return torch.einsum("m,mbo->bo", weights, outputs)


@register("fusion", "gated")
class GatedFusion(_Fusion):
    """Project each input; per-sample softmax gates scale each projection; concatenate, hidden layer, head.

    The gates come from a small scorer that sees all projected inputs, so each sample decides how much to rely
    on each input (never less than ``GATE_FLOOR / M``). The gated projections are concatenated rather than
    summed: a gated SUM followed by one hidden layer stalled at 3 of 4 cells on the XOR test, the concatenation
    learns it. Gates start equal, where this module computes exactly what ``ConcatFusion`` does.
    """

    kind = "gated"

    def __init__(self, feature_dims: dict[str, int], make_head: MakeHead, fusion_dim: int = 64):
        super().__init__(feature_dims)
        if fusion_dim < 1:
            raise ValueError(f"{self.kind} fusion: fusion_dim must be >= 1, got {fusion_dim}")
        self.projections = nn.ModuleDict({n: _projection(d, fusion_dim) for n, d in self.feature_dims.items()})
        self.scorer = nn.Sequential(
            nn.Linear(len(self.names) * fusion_dim, fusion_dim), nn.GELU(), nn.Linear(fusion_dim, len(self.names))
        )
        nn.init.zeros_(self.scorer[-1].weight)  # equal gates at the start
        nn.init.zeros_(self.scorer[-1].bias)
        self.mix = nn.Sequential(nn.Linear(len(self.names) * fusion_dim, fusion_dim), nn.GELU())
        self.head = make_head(fusion_dim)
        self.last_gates: dict[str, torch.Tensor] = {}  # name -> [B] gates of the latest forward (detached)

    def mean_gates(self) -> dict[str, float]:
        """Mean gate per input over the latest batch (empty before the first forward)."""
        return {name: float(g.float().mean()) for name, g in self.last_gates.items()}

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = self._inputs(features)
        projected = torch.stack(
            [self.projections[name](x) for name, x in zip(self.names, inputs, strict=True)], dim=1
        )  # [B, M, fusion_dim]
        scores = torch.softmax(self.scorer(projected.flatten(1)), dim=1)  # [B, M]
        gates = GATE_FLOOR / len(self.names) + (1 - GATE_FLOOR) * scores  # still sums to 1 per sample
        self.last_gates = {name: gates[:, i].detach() for i, name in enumerate(self.names)}
        # Scaled by M so that equal gates leave the features unchanged (gated == concat at the start).
        gated = len(self.names) * gates.unsqueeze(-1) * projected
        return self.head(self.mix(gated.flatten(1)))
