"""Training health, per layer group: gradient norms, update/weight ratios, dead ReLUs, histograms, NaN stop.

Layer groups are the stages of a timm backbone (timm's coarse `group_matcher`: stem, layer1..4, stages.0..3,
blocks.0..11, ...) plus every other top-level part of the network (`fusion`, a segmentation decoder's parts,
...); a top-level `nn.ModuleDict` is split by its entries (`encoders.tabular`, `encoders.sequence`, the stages
of a timm feature-pyramid backbone). Any model works: the groups come from parameter names only.

What the numbers say:
- `grad_norm/<group>`: gradient L2 norm (before clipping); a tiny total means vanishing gradients, a huge one
  exploding gradients;
- `update_ratio/<group>`: ||weights after the step - before|| / ||weights before||; about 1e-3 is healthy, much
  lower means the learning rate is too low for that group, much higher (1e-1) too high;
- `dead_units/<group>`: fraction of ReLU channels that output zero for every sample of the batch (they get no
  gradient and stop learning); only ReLU modules count (GELU, tanh and the gates of a GRU are never exactly
  zero), so a model without them (an MLP with GELU, a GRU, a Transformer) logs none;
- `weights/<group>` and `grads/<group>` histograms (W&B and TensorBoard).

Everything except the NaN check runs only on logging steps (hooks are attached just for those batches), so the
other steps pay only one check of the loss.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from ...errors import ProjectError

HISTOGRAM_BINS = 64
Groups = dict[str, list[nn.Parameter]]


# ------------------------------------------------------------------------------------------------ layer groups
def _matched_prefix(name: str, patterns: list[re.Pattern]) -> str:
    """The part of a parameter name timm's matcher groups by ("layer1", "stages.0"), else its first part."""
    for pattern in patterns:
        match = pattern.match(name)
        if match and match.group(0):
            return match.group(0).rstrip(".")
    return name.split(".")[0]


def timm_stages(model: nn.Module) -> Groups:
    """A timm model's parameters by stage, named after what timm's coarse group matcher matched."""
    from timm.models import group_parameters

    try:
        matcher = model.group_matcher(coarse=True)
        grouped = group_parameters(model, matcher)
    except (NotImplementedError, AttributeError, TypeError):
        return top_level_groups(model)
    patterns = []
    for spec in matcher.values() if isinstance(matcher, dict) else []:
        specs = [spec] if isinstance(spec, str) else [s[0] for s in spec or []]
        patterns += [re.compile(s) for s in specs]
    params = dict(model.named_parameters())
    groups: Groups = {}
    for names in grouped.values():
        label = "+".join(dict.fromkeys(_matched_prefix(name, patterns) for name in names))
        groups.setdefault(label, []).extend(params[name] for name in names)
    return groups


def top_level_groups(module: nn.Module) -> Groups:
    """Parameters by top-level part; a part that is an `nn.ModuleDict` (one encoder per input, the stages of a
    timm `features_only` backbone) by its entries: `encoders.tabular`, `backbone.layer1`."""
    dicts = {name for name, child in module.named_children() if isinstance(child, nn.ModuleDict)}
    groups: Groups = defaultdict(list)
    for name, param in module.named_parameters():
        parts = name.split(".")
        groups[".".join(parts[:2]) if parts[0] in dicts and len(parts) > 2 else parts[0]].append(param)
    return dict(groups)


def layer_groups(pl_module: nn.Module) -> Groups:
    """Parameters by layer group: `backbone.<stage>` for a timm backbone, else top-level parts of the network."""
    root = getattr(pl_module, "network", pl_module)
    backbones: list[tuple[str, nn.Module]] = []
    for path, module in root.named_modules():
        inside = any(b == "" or path.startswith(f"{b}.") for b, _ in backbones)
        if hasattr(module, "group_matcher") and not inside:
            backbones.append((path, module))
    groups: Groups = {}
    taken: set[int] = set()
    for path, backbone in backbones:
        prefix = "" if path == "" else "backbone." if len(backbones) == 1 else f"{path}."
        for name, params in timm_stages(backbone).items():
            groups[prefix + name] = params
            taken.update(id(p) for p in params)
    for name, params in top_level_groups(root).items():
        rest = [p for p in params if id(p) not in taken]
        if rest:
            groups.setdefault(name, []).extend(rest)
    return groups


def relu_groups(pl_module: nn.Module, groups: Groups) -> dict[nn.Module, str]:
    """Each ReLU/ReLU6 module -> the group of the last parameter registered before it (the layer it follows)."""
    root = getattr(pl_module, "network", pl_module)
    group_of = {id(p): name for name, params in groups.items() for p in params}
    current = next(iter(groups), "network")
    relus = {}
    for module in root.modules():
        own = next(module.parameters(recurse=False), None)
        if own is not None:
            current = group_of.get(id(own), current)
        if isinstance(module, (nn.ReLU, nn.ReLU6)):  # leaky/smooth activations are never exactly zero everywhere
            relus[module] = current
    return relus


def _dense(tensor: torch.Tensor) -> torch.Tensor:
    """A sparse gradient (nn.Embedding(sparse=True)) as its stored values: same norm, same histogram of non-zeros."""
    return tensor.coalesce().values() if tensor.is_sparse else tensor


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(_dense(t).float()) for t in tensors]))


def histogram(values: torch.Tensor, bins: int = HISTOGRAM_BINS) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts, edges) computed where the values live; only the bins travel to the logger."""
    low, high = float(values.min()), float(values.max())
    high = high if high > low else low + max(abs(low), 1.0) * 1e-6  # constant values: one narrow bin
    counts = torch.histc(values, bins=bins, min=low, max=high).cpu()
    return counts, torch.linspace(low, high, bins + 1)


def log_histogram(logger: Any, key: str, values: torch.Tensor, step: int) -> None:
    counts, edges = histogram(values)
    if isinstance(logger, WandbLogger):
        import wandb

        logger.log_metrics({key: wandb.Histogram(np_histogram=(counts.numpy(), edges.numpy()))}, step=step)
    elif isinstance(logger, TensorBoardLogger):
        logger.experiment.add_histogram_raw(
            key,
            min=float(edges[0]),
            max=float(edges[-1]),
            num=values.numel(),
            sum=float(values.sum()),
            sum_squares=float(values.pow(2).sum()),
            bucket_limits=edges[1:].tolist(),
            bucket_counts=counts.tolist(),
            global_step=step,
        )


# --------------------------------------------------------------------------------------------------- callback
class TrainingMonitors(pl.Callback):
    """Gradient norms, update/weight ratios, dead ReLUs and histograms per layer group; stops on a NaN/Inf loss.

    Args:
        log_every_n_steps: how often to measure; None follows `trainer.log_every_n_steps` (a multiple of it
            keeps the values in the logger, which only writes on its own logging steps).
        grad_norms: log `grad_norm/<group>` and `grad_norm/total`; warn once on vanishing or exploding norms.
        update_ratios: log `update_ratio/<group>` = ||ΔW|| / ||W|| of the optimizer step (keeps a copy of the
            weights during measured steps: switch off when the model barely fits in memory).
        dead_units: log `dead_units/<group>`, the fraction of ReLU channels that are zero for the whole batch.
        histogram_every_n_steps: weight and gradient histograms per group to W&B / TensorBoard (0: off).
        stop_on_nonfinite_loss: stop the run when the training loss is NaN or Inf, before that update is applied.
        vanishing_grad_norm: warn when the total gradient norm falls below this.
        exploding_grad_norm: warn when the total gradient norm rises above this.
    """

    def __init__(
        self,
        log_every_n_steps: int | None = None,
        grad_norms: bool = True,
        update_ratios: bool = True,
        dead_units: bool = True,
        histogram_every_n_steps: int = 100,
        stop_on_nonfinite_loss: bool = True,
        vanishing_grad_norm: float = 1e-7,
        exploding_grad_norm: float = 1e3,
    ):
        super().__init__()
        self.log_every_n_steps = log_every_n_steps
        self.grad_norms = grad_norms
        self.update_ratios = update_ratios
        self.dead_units = dead_units
        self.histogram_every_n_steps = histogram_every_n_steps
        self.stop_on_nonfinite_loss = stop_on_nonfinite_loss
        self.vanishing_grad_norm = vanishing_grad_norm
        self.exploding_grad_norm = exploding_grad_norm
        self._groups: Groups = {}
        self._relus: dict[nn.Module, str] = {}
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._dead: dict[str, list] = {}  # group -> [dead channels (tensor), channels]
        self._before: dict[str, list[torch.Tensor]] | None = None
        self._measuring = False
        self._batch_idx = 0
        self._warned: set[str] = set()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._groups = layer_groups(pl_module)
        self._relus = relu_groups(pl_module, self._groups) if self.dead_units else {}

    def _is_measuring_step(self, trainer: pl.Trainer) -> bool:
        every = self.log_every_n_steps or trainer.log_every_n_steps
        # The same steps on which Lightning writes step metrics: (optimizer steps done + 1) % every == 0.
        return every > 0 and (trainer.global_step + 1) % every == 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        self._batch_idx = batch_idx
        self._measuring = self._is_measuring_step(trainer)
        if self._measuring and self._relus:
            self._dead.clear()
            self._hooks = [m.register_forward_hook(partial(self._count_dead, g)) for m, g in self._relus.items()]

    def _count_dead(self, group: str, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        if not torch.is_tensor(output) or output.ndim < 2:
            return
        with torch.no_grad():
            channel_dim = output.ndim - 1 if output.ndim == 3 else 1  # [B, T, D] sequences; [B, C, ...] otherwise
            others = tuple(d for d in range(output.ndim) if d != channel_dim)
            alive = output.detach().amax(dim=others) > 0  # a reduction: no copy of the activation
            counts = self._dead.setdefault(group, [0, 0])
            counts[0] = counts[0] + (~alive).sum()  # stays on the device: no sync inside the forward pass
            counts[1] += alive.numel()

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        # Before backward and the optimizer step: the weights in memory and in every checkpoint stay finite.
        if self.stop_on_nonfinite_loss and not bool(torch.isfinite(loss.detach()).all()):
            self._remove_hooks()
            raise ProjectError(self._nonfinite_message(trainer, loss))

    def _nonfinite_message(self, trainer: pl.Trainer, loss: torch.Tensor) -> str:
        kind = "NaN" if torch.isnan(loss.detach()).any() else "Inf"
        callback = trainer.checkpoint_callback
        last = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
        where = f"last good checkpoint: {last}" if last else "no checkpoint was written yet"
        return (
            f"training loss is {kind} at global step {trainer.global_step} (epoch {trainer.current_epoch}, "
            f"batch {self._batch_idx}); stopped before applying it, {where}. Try a lower model.optimizer.lr, "
            "trainer.gradient_clip_val or 32-true precision, and check the inputs for NaN"
        )

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        every = self.histogram_every_n_steps
        if every > 0 and trainer.global_step % every == 0:
            self._log_histograms(trainer)
        if not self._measuring:
            return
        if self.grad_norms:
            self._log_grad_norms(pl_module)
        if self.update_ratios:
            self._before = {
                name: [p.detach().clone() for p in params if p.requires_grad] for name, params in self._groups.items()
            }

    def _log_grad_norms(self, pl_module: pl.LightningModule) -> None:
        norms = {}
        for name, params in self._groups.items():
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                norms[f"grad_norm/{name}"] = _norm(grads)
        if not norms:
            return
        total = torch.linalg.vector_norm(torch.stack(list(norms.values())))
        norms["grad_norm/total"] = total
        pl_module.log_dict(norms, on_step=True, on_epoch=False)
        total = float(total)
        if total < self.vanishing_grad_norm:
            self._warn_once(
                "vanishing",
                f"vanishing gradients: total gradient norm {total:.3g} < {self.vanishing_grad_norm:g}; "
                "look at grad_norm/<group> for where they vanish (saturated activations, a frozen or detached part)",
            )
        elif total > self.exploding_grad_norm and math.isfinite(total):
            self._warn_once(
                "exploding",
                f"exploding gradients: total gradient norm {total:.3g} > {self.exploding_grad_norm:g}; "
                "lower model.optimizer.lr or set trainer.gradient_clip_val",
            )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(f"training monitor: {message}")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        metrics = {}
        if self._before is not None:
            for name, old in self._before.items():
                new = [p.detach() for p in self._groups[name] if p.requires_grad]
                if old:
                    change = _norm([n - o for n, o in zip(new, old, strict=True)])
                    metrics[f"update_ratio/{name}"] = change / _norm(old).clamp_min(1e-12)
            self._before = None
        if self._hooks:
            self._remove_hooks()
            for group, (dead, total) in self._dead.items():
                metrics[f"dead_units/{group}"] = dead / total
            if self._dead:
                dead, total = (sum(column) for column in zip(*self._dead.values(), strict=True))
                metrics["dead_units/total"] = dead / total
            self._dead.clear()
        if metrics:
            pl_module.log_dict({k: v.float() for k, v in metrics.items()}, on_step=True, on_epoch=False)

    def _log_histograms(self, trainer: pl.Trainer) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, (WandbLogger, TensorBoardLogger))]
        if not loggers or not trainer.is_global_zero:
            return  # CSV cannot show histograms
        for name, params in self._groups.items():
            weights = torch.cat([p.detach().flatten() for p in params]).float()
            grads = [_dense(p.grad).detach().flatten() for p in params if p.grad is not None]
            for kind, values in (("weights", weights), ("grads", torch.cat(grads).float() if grads else None)):
                if values is not None and bool(torch.isfinite(values).all()):
                    for logger in loggers:
                        log_histogram(logger, f"{kind}/{name}", values, trainer.global_step)

    def _remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._remove_hooks()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hooks()
