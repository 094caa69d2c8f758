"""One optimizing metric subject to satisficing constraints: the score, the measurements, the chosen checkpoint.

The end-to-end tests drive the real SatisficingMetrics callback and the real ModelCheckpoint through the CLI.
A test-only callback (`ScriptedEpochs`, below) fixes the optimizing metric of each epoch and makes the model
do extra work (a matrix multiply the FLOP counter sees) on chosen epochs, so which epochs violate a FLOPs limit
is known in advance and does not depend on how busy the machine is.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping

from conftest import cli_args
from {{ cookiecutter.package_name }}.callbacks.satisficing import (
    INFEASIBLE_OFFSET,
    SCORE_KEY,
    Satisfice,
    SatisficingMetrics,
    best_index,
    first_sample,
    gated_score,
    measure,
    violations,
)
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.errors import ProjectError

# "2", not "1": under pytest jsonargparse reads "1" as the float 1.0, which Lightning takes as 100% of the batches.
FEW_BATCHES = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]
FEW_BATCHES += ["--trainer.num_sanity_val_steps", "0"]
HEAVY_GFLOPS = 2 * 256**3 / 1e9  # the extra matrix multiply of a heavy epoch: 0.034 GFLOPs
TINY_GFLOPS = 0.0082  # test_resnet at 32 px, per sample (FlopCounterMode): a limit of 0.02 separates the two


# --- pure functions ------------------------------------------------------------------------------------------------


def test_violations_are_relative_and_only_for_configured_limits() -> None:
    limits = Satisfice(max_latency_ms=10.0, min_throughput=100.0, max_params_m=2.0)
    measured = {"latency_ms_p95": 12.5, "throughput": 50.0, "params_m": 2.0, "flops_g": 99.0}
    # 25% over the latency limit, half the required throughput, exactly at the parameter limit (a pass).
    assert violations(measured, limits) == {"max_latency_ms": 0.25, "min_throughput": 0.5, "max_params_m": 0.0}
    assert violations({**measured, "latency_ms_p95": math.nan}, limits)["max_latency_ms"] == math.inf
    assert violations(measured, Satisfice()) == {}


def test_every_feasible_epoch_outranks_every_infeasible_one() -> None:
    # (optimizing metric, summed violation) per epoch; epoch 2 has the best metric but misses a limit.
    epochs = [(0.60, 0.0), (0.70, 0.0), (0.99, 0.1), (0.65, 0.0)]
    scores = [gated_score(metric, violation, "max") for metric, violation in epochs]
    assert best_index(scores, "max") == 1
    assert min(scores[0], scores[1], scores[3]) > scores[2]
    # Minimizing (e.g. val/loss): the lowest feasible loss wins, an infeasible low loss does not.
    losses = [(0.9, 0.0), (0.1, 2.0), (0.5, 0.0)]
    assert best_index([gated_score(m, v, "min") for m, v in losses], "min") == 2


def test_without_a_feasible_epoch_the_closest_one_wins() -> None:
    epochs = [(0.9, 3.0), (0.5, 0.2), (0.95, 1.0)]
    scores = [gated_score(metric, violation, "max") for metric, violation in epochs]
    assert best_index(scores, "max") == 1
    assert all(score < -INFEASIBLE_OFFSET for score in scores)
    assert best_index([gated_score(m, v, "min") for m, v in epochs], "min") == 1


def test_ties_keep_the_earliest_epoch_and_nan_ranks_last() -> None:
    # As ModelCheckpoint(save_top_k=1) does: a later equal score does not replace the kept checkpoint.
    assert best_index([0.5, 0.8, 0.8], "max") == 1
    assert best_index([math.nan, 0.1], "max") == 1
    assert best_index([math.nan, 3.0], "min") == 1


def test_a_non_positive_limit_is_rejected_with_its_name() -> None:
    with pytest.raises(ProjectError, match="satisfice.max_latency_ms"):
        Satisfice(max_latency_ms=0)


# --- measuring -----------------------------------------------------------------------------------------------------


class SleepyLinear(torch.nn.Module):
    """A linear layer that sleeps 10 ms per call and records the batch sizes it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(16, 4)
        self.norm = torch.nn.BatchNorm1d(4).eval()  # frozen on purpose: must stay in eval mode after measuring
        self.seen: set[int] = set()

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        assert len(batch["path"]) == len(batch["x"])  # per-sample lists are cut with the tensors
        self.seen.add(len(batch["x"]))
        time.sleep(0.01)
        return self.norm(self.linear(batch["x"]))


def test_measure_times_counts_and_restores_train_mode() -> None:
    module = SleepyLinear().train()
    module.norm.eval()
    batch = {"x": torch.randn(8, 16), "path": [f"img{i}.png" for i in range(8)]}
    measured = measure(module, batch, warmup=1, repeats=3)
    assert module.seen == {1, 8}  # batch 1 (first sample) and the whole batch
    assert measured["latency_ms_p50"] >= 10 and measured["batch_latency_ms_p95"] >= 10
    assert measured["throughput"] <= 8 / 0.01
    assert measured["params_m"] == pytest.approx((16 * 4 + 4 + 4 + 4) / 1e6)
    assert measured["flops_g"] == pytest.approx(2 * 16 * 4 / 1e9)  # one sample through the linear layer
    weight_bytes = (16 * 4 + 4 + 4 + 4) * 4
    assert weight_bytes / 2**20 < measured["checkpoint_mb"] < (weight_bytes + 10_000) / 2**20
    assert measured["peak_memory_mb"] > 0
    assert module.training and module.linear.training and not module.norm.training


def test_first_sample_keeps_the_batch_structure() -> None:
    batch = {"image": torch.zeros(4, 3, 8, 6), "target": torch.arange(4), "path": ["a", "b", "c", "d"]}
    one = first_sample(batch)
    assert one["image"].shape == (1, 3, 8, 6) and one["target"].tolist() == [0] and one["path"] == ["a"]
    x, y = first_sample((torch.zeros(4, 2), torch.zeros(4)))
    assert x.shape == (1, 2) and y.shape == (1,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_peak_memory_counts_the_weights_and_activations() -> None:
    module = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 10)).cuda()
    batch = torch.randn(256, 1024, device="cuda")
    measured = measure(module, batch, warmup=1, repeats=2)
    weights_mb = sum(p.numel() * 4 for p in module.parameters()) / 2**20
    activations_mb = 256 * 4096 * 4 / 2**20
    assert weights_mb + activations_mb <= measured["peak_memory_mb"] < 3 * (weights_mb + activations_mb)


# --- end to end through the CLI ------------------------------------------------------------------------------------


class ScriptedEpochs(pl.Callback):
    """Test-only: logs `metric` = values[epoch] during validation, and on `heavy_epochs` makes every eval-mode
    forward pass of the network do an extra 256x256 matrix multiply (HEAVY_GFLOPS more work)."""

    def __init__(self, metric: str, values: list[float], heavy_epochs: list[int]):
        self.metric, self.values, self.heavy_epochs = metric, values, heavy_epochs
        self._handle = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        weight = torch.randn(256, 256, device=pl_module.device)

        def heavier(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
            if not module.training and trainer.current_epoch in self.heavy_epochs:
                torch.mm(weight, weight)

        self._handle = pl_module.network.register_forward_hook(heavier)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._handle.remove()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        pl_module.log(self.metric, self.values[trainer.current_epoch], on_epoch=True, batch_size=1)


def scripted_config(
    tmp_path: Path, values: list[float], heavy_epochs: list[int], satisfice: dict, *extra: dict
) -> Path:
    """A config layer whose callbacks are the real SatisficingMetrics (optimizing `val/scripted`) + ScriptedEpochs."""
    callbacks = [
        {
            "class_path": "{{ cookiecutter.package_name }}.callbacks.satisficing.SatisficingMetrics",
            "init_args": {
                "optimize": {"metric": "val/scripted", "mode": "max"},
                "satisfice": satisfice,
                "warmup": 0,
                "repeats": 2,
            },
        },
        {
            "class_path": f"{__name__}.ScriptedEpochs",
            "init_args": {"metric": "val/scripted", "values": values, "heavy_epochs": heavy_epochs},
        },
        *extra,
    ]
    path = tmp_path / "satisficing.yaml"
    path.write_text(json.dumps({"trainer": {"callbacks": callbacks}}), encoding="utf-8")  # JSON is valid YAML
    return path


def fit_args(data: Path, tmp_path: Path, config: Path, max_epochs: int) -> list[str]:
    epochs = ["--trainer.max_epochs", str(max_epochs)]
    return cli_args("fit", data, tmp_path / "runs", "--config", str(config), *FEW_BATCHES, *epochs)


def satisficing_callback(cli: Any) -> SatisficingMetrics:
    return next(c for c in cli.trainer.callbacks if isinstance(c, SatisficingMetrics))


def test_the_best_feasible_epoch_is_kept_not_the_best_metric(tiny_data: Path, tmp_path: Path) -> None:
    # Epoch 1 has the best metric but is heavy (over the FLOPs limit); epoch 2 is the best feasible one.
    early_stop = {
        "class_path": "pytorch_lightning.callbacks.EarlyStopping",
        "init_args": {"monitor": "val/scripted", "mode": "max", "patience": 2},
    }
    config = scripted_config(tmp_path, [0.60, 0.90, 0.80, 0.70, 0.70], [1], {"max_flops_g": 0.02}, early_stop)
    cli = main(fit_args(tiny_data, tmp_path, config, max_epochs=5))
    history = satisficing_callback(cli).history
    assert [r["feasible"] for r in history] == [True, False, True, True]
    assert history[0]["measured"]["flops_g"] == pytest.approx(TINY_GFLOPS, rel=0.05)
    assert history[1]["measured"]["flops_g"] == pytest.approx(TINY_GFLOPS + HEAVY_GFLOPS, rel=0.05)
    # Early stopping watches the optimizing metric itself (best 0.90 at epoch 1, then 2 epochs without
    # improvement: stops after epoch 3); on the gated score (best 0.80 at epoch 2) it would run on to epoch 4.
    assert cli.trainer.should_stop and cli.trainer.current_epoch == 4

    best = cli.trainer.checkpoint_callback.best_model_path
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == 2 and checkpoint["satisficing"]["feasible"]
    assert checkpoint["satisficing"]["metric"] == pytest.approx(0.80)
    assert float(cli.trainer.checkpoint_callback.best_model_score) == pytest.approx(0.80)
    assert (Path(best).parent / "last.ckpt").is_file()

    report = json.loads((cli.run_dir / "satisficing.json").read_text(encoding="utf-8"))
    assert report["any_feasible"] and report["chosen"]["epoch"] == 2 and report["checkpoint"] == best
    rows = {row["constraint"]: row for row in report["constraints"]}
    assert rows["max_flops_g"]["result"] == "pass" and rows["max_flops_g"]["measured"] < 0.02
    assert rows["max_latency_ms"]["result"] == "not checked"
    markdown = (cli.run_dir / "satisficing.md").read_text(encoding="utf-8")
    assert "Chosen: epoch 2" in markdown and "| max_flops_g | GFLOPs per sample | 0.02 |" in markdown


def test_impossible_constraints_keep_the_closest_epoch_labelled_infeasible(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Nothing fits 1000 parameters and 0.001 GFLOPs; epoch 1 (not heavy) misses by the least, despite its metric.
    config = scripted_config(tmp_path, [0.90, 0.50, 0.95], [0, 2], {"max_flops_g": 0.001, "max_params_m": 0.001})
    cli = main(fit_args(tiny_data, tmp_path, config, max_epochs=3))
    assert "No epoch met every constraint; kept the closest: epoch 1 (step 4) (infeasible)" in capsys.readouterr().out
    assert float(cli.trainer.callback_metrics["satisficing/ok"]) == 0.0

    checkpoint = torch.load(cli.trainer.checkpoint_callback.best_model_path, map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == 1 and not checkpoint["satisficing"]["feasible"]
    report = json.loads((cli.run_dir / "satisficing.json").read_text(encoding="utf-8"))
    assert not report["any_feasible"] and report["chosen"]["epoch"] == 1
    results = {row["constraint"]: row["result"] for row in report["constraints"]}
    assert results["max_flops_g"] == results["max_params_m"] == "fail"
    markdown = (cli.run_dir / "satisficing.md").read_text(encoding="utf-8")
    assert "| max_params_m | parameters (millions) | 0.001 | 0.373 | fail |" in markdown


def test_the_default_config_selects_checkpoints_by_the_gated_score(tiny_data: Path, tmp_path: Path) -> None:
    cli = main(cli_args("fit", tiny_data, tmp_path / "runs", *FEW_BATCHES, "--trainer.max_epochs", "1"))
    callback = satisficing_callback(cli)
    assert cli.trainer.checkpoint_callback.monitor == SCORE_KEY
    assert cli.trainer.checkpoint_callback.mode == callback.optimize.mode
    stoppers = [c for c in cli.trainer.callbacks if isinstance(c, EarlyStopping)]
    assert [(c.monitor, c.mode) for c in stoppers] == [(callback.optimize.metric, callback.optimize.mode)]
    metrics = cli.trainer.callback_metrics
    for key in ("latency_ms_p50", "latency_ms_p95", "batch_latency_ms_p95", "throughput", "peak_memory_mb"):
        assert metrics[f"satisficing/{key}"] > 0
    assert metrics["satisficing/params_m"] == pytest.approx(0.373, abs=0.001)
    assert metrics["satisficing/ok"] == 1.0  # no limits configured
    assert float(metrics[SCORE_KEY]) == pytest.approx(float(metrics[callback.optimize.metric]))
    assert (cli.run_dir / "satisficing.md").is_file()


@pytest.mark.slow
def test_ddp_ranks_share_rank_zeros_measurement_and_agree_on_the_best_epoch(tiny_data: Path, tmp_path: Path) -> None:
    # Rank 1's ModelCheckpoint needs satisficing/score too: without it Lightning stops the run on that rank.
    config = scripted_config(tmp_path, [0.9, 0.5], [0], {"max_flops_g": 0.02})
    args = fit_args(tiny_data, tmp_path, config, max_epochs=2)
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "{{ cookiecutter.package_name }}", *args, *ddp]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(next((tmp_path / "runs").glob("*/satisficing.json")).read_text(encoding="utf-8"))
    assert [r["feasible"] for r in report["history"]] == [False, True] and report["chosen"]["epoch"] == 1
    assert torch.load(report["checkpoint"], map_location="cpu", weights_only=False)["epoch"] == 1


def test_a_checkpoint_mode_opposite_to_the_optimize_mode_is_refused(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="optimize.mode='max'"):
        main(cli_args("fit", tiny_data, tmp_path / "runs", *FEW_BATCHES, "--checkpoint.mode", "min"))
