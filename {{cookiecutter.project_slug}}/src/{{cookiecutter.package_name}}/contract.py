"""The contract between the model and the machinery: what callbacks, diagnosis, export, TTA, ensembles and lr-find
may use of a LightningModule. `module.Model` meets it; so may any LightningModule of your own (README,
"Extending the model"), and then every command runs it.

The network inside meets a contract of its own (timm's split): `forward_features(batch)` -> features,
`forward_head(features)` -> the task's raw outputs, and optionally `backbone` (the pretrained part that
discriminative LRs and staged fine-tuning act on) and a classmethod `data_config(**init_args)` (what its image
encoder expects of the data). models/network.py and models/segmentation.py are the two built in.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from .tasks import Task


@runtime_checkable
class ProjectModule(Protocol):
    """A LightningModule the project's machinery can drive.

    task: the bound task (tasks/): loss, metrics, activation, class names, monitor / mode.
    network: the nn.Module that maps a batch dict to the task's raw outputs (and forward_features / forward_head).
    inputs: the batch keys the network reads, each with its spec from the data (feature counts, vocabulary).
    forward(batch): the task's raw outputs for a batch dict, like `network(batch)`.
    Optional: `lr_schedule` (practices/schedules.Schedule), which snapshot ensembles read for the cycle ends.

    Run through the CLI, the module also takes `task`, `network`, `inputs`, `class_names` and `target_stats` init
    args (the CLI links them with the data), logs `val/<task.monitor>` (checkpointing, early stopping, satisficing)
    and returns {"id": ..., "outputs": task.activation(...)} from `predict_step` (the prediction writer reads it).
    """

    task: Task
    network: nn.Module
    inputs: dict[str, dict[str, Any]]

    def forward(self, batch: dict[str, Any]) -> torch.Tensor: ...
