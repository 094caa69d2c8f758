"""One optimizing metric subject to satisficing constraints: the score, the measurements, the chosen checkpoint.

The end-to-end tests drive the real SatisficingMetrics callback and the real ModelCheckpoint through the CLI, on
the project's own model and data. A test-only callback (`ScriptedEpochs`, below) fixes the optimizing metric of
each epoch and makes the model do extra work (a matrix multiply the FLOP counter sees) on chosen epochs, so which
epochs violate a FLOPs limit is known in advance and does not depend on how busy the machine is.
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

from conftest import MONITOR, cli_args
from {{ cookiecutter.package_name }}.answers import TASK_TYPE
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.errors import ProjectError
from {{ cookiecutter.package_name }}.practices.callbacks import satisficing
from {{ cookiecutter.package_name }}.practices.callbacks.satisficing import (
    INFEASIBLE_OFFSET,
    SCORE_KEY,
    TIE_BREAK,
    Satisfice,
    SatisficingMetrics,
    batch_size_of,
    best_index,
    first_sample,
    gated_score,
    measure,
    violations,
)
from {{ cookiecutter.package_name }}.tasks import build_task

# "2", not "1": under pytest jsonargparse reads "1" as the float 1.0, which Lightning takes as 100% of the batches.
FEW_BATCHES = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]
FEW_BATCHES += ["--trainer.num_sanity_val_steps", "0"]
HEAVY_SIDE = 1024
HEAVY_GFLOPS = 2 * HEAVY_SIDE**3 / 1e9  # the extra matrix multiply of a heavy epoch: 2.1 GFLOPs
FLOPS_LIMIT = 1.0  # GFLOPs: above every tiny test model (test_resnet at 32 px: 0.008), below it + HEAVY_GFLOPS
MODE = build_task(TASK_TYPE, ["a", "b"]).mode  # the project's optimizing mode: "min" for regression (rmse)


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


@pytest.mark.parametrize("mode", ["max", "min"])
def test_equal_metrics_rank_by_the_val_loss_and_different_metrics_keep_their_order(mode: str) -> None:
    # The issue's run: val acc flat from epoch 1 while the val loss still falls; epoch 3's loss rises again.
    metrics = [0.90, 0.9275, 0.9275, 0.9275] if mode == "max" else [0.30, 0.25, 0.25, 0.25]
    losses = [0.60, 0.40, 0.30, 0.35]
    scores = [gated_score(m, 0.0, mode, loss) for m, loss in zip(metrics, losses, strict=True)]
    assert best_index(scores, mode) == 2  # the lowest val loss among the equal metrics, not the first of them
    assert best_index([gated_score(m, 0.0, mode) for m in metrics], mode) == 1  # without it: the first one
    assert all(abs(score - m) <= TIE_BREAK * abs(m) for score, m in zip(scores, metrics, strict=True))
    # Two float32 neighbours (one ulp apart) keep their order whatever their losses.
    low = float(torch.tensor(0.9275, dtype=torch.float32))
    high = float(torch.nextafter(torch.tensor(low), torch.tensor(2.0)))
    better, worse = (high, low) if mode == "max" else (low, high)
    assert best_index([gated_score(worse, 0.0, mode, 0.0), gated_score(better, 0.0, mode, 1e6)], mode) == 1
    # A NaN loss ranks last among the ties; infeasible epochs are not nudged.
    assert best_index([gated_score(0.5, 0.0, mode, math.nan), gated_score(0.5, 0.0, mode, 5.0)], mode) == 1
    assert gated_score(0.5, 0.1, mode, 0.3) == gated_score(0.5, 0.1, mode)


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
        assert len(batch["id"]) == len(batch["x"])  # per-sample lists are cut with the tensors
        self.seen.add(len(batch["x"]))
        time.sleep(0.01)
        return self.norm(self.linear(batch["x"]))


def test_measure_times_counts_and_restores_train_mode() -> None:
    module = SleepyLinear().train()
    module.norm.eval()
    batch = {"x": torch.randn(8, 16), "id": [f"train.csv:{i}" for i in range(8)]}
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


class TabularAndSequence(torch.nn.Module):
    """Embeddings and a GRU or Transformer on nested inputs, like the project's tabular and sequence encoders."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.category = torch.nn.Embedding(5, 4)
        self.tokens = torch.nn.Embedding(50, 32, padding_idx=0)
        if kind == "gru":
            self.rnn = torch.nn.GRU(32, 32, batch_first=True)
        else:
            layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True, norm_first=True)
            self.transformer = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = torch.nn.Linear(3 + 4 + 32, 2)
        self.kind = kind

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        sequence = self.tokens(batch["sequence"]["values"])
        if self.kind == "gru":
            sequence = self.rnn(sequence)[1][-1]
        else:
            sequence = self.transformer(sequence, src_key_padding_mask=~batch["sequence"]["mask"]).mean(1)
        tabular = batch["tabular"]
        return self.head(torch.cat([tabular["numeric"], self.category(tabular["categorical"][:, 0]), sequence], 1))


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_measure_takes_nested_batches_and_counts_recurrent_and_attention_flops(kind: str) -> None:
    batch = {
        "tabular": {"numeric": torch.randn(6, 3), "categorical": torch.randint(0, 5, (6, 1))},
        "sequence": {"values": torch.randint(1, 50, (6, 10)), "mask": torch.ones(6, 10, dtype=torch.bool)},
        "target": torch.zeros(6),
        "id": [f"train.csv:{i}" for i in range(2, 8)],
    }
    assert batch_size_of(batch) == 6 and batch_size_of({"sequence": batch["sequence"]}) == 6
    one = first_sample(batch)
    assert one["id"] == ["train.csv:2"] and one["tabular"]["categorical"].shape == (1, 1)
    assert one["sequence"]["mask"].shape == (1, 10)
    with torch.inference_mode():  # as in validation, where the callback measures
        measured = measure(TabularAndSequence(kind), batch, warmup=0, repeats=1)
    # The recurrent / attention layers' matrix multiplies: 10 steps of 32 -> 32 (x3 gates x2 for the GRU's input
    # and hidden), or the Transformer layer's q, k, v, output and feed-forward projections. Under no_grad the
    # Transformer's fused fast path (and on CUDA cuDNN's GRU) would hide them from the FLOP counter.
    recurrent = 10 * 2 * (3 * 32 * 32) * 2 if kind == "gru" else 10 * 2 * (4 * 32 * 32 + 2 * 32 * 64)
    assert measured["flops_g"] >= (recurrent + 2 * 39 * 2) / 1e9
    assert measured["throughput"] > 0


def test_flops_that_cannot_be_counted_are_nan_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unsupported(torch.utils.flop_counter.FlopCounterMode):
        def __enter__(self):  # noqa: ANN204
            raise NotImplementedError("no FLOP formula for this model")

    monkeypatch.setattr(satisficing, "FlopCounterMode", Unsupported)
    notes: list[str] = []
    measured = measure(torch.nn.Linear(4, 2), torch.randn(3, 4), warmup=0, repeats=1, notes=notes)
    assert math.isnan(measured["flops_g"]) and measured["params_m"] > 0  # everything else is still measured
    assert len(notes) == 1 and "no FLOP formula for this model" in notes[0]
    assert violations(measured, Satisfice(max_flops_g=1.0)) == {"max_flops_g": math.inf}  # cannot pass unmeasured


def test_first_sample_keeps_the_batch_structure() -> None:
    batch = {"image": torch.zeros(4, 3, 8, 6), "target": torch.arange(4), "id": ["a", "b", "c", "d"]}
    one = first_sample(batch)
    assert one["image"].shape == (1, 3, 8, 6) and one["target"].tolist() == [0] and one["id"] == ["a"]
    x, y = first_sample((torch.zeros(4, 2), torch.zeros(4)))
    assert x.shape == (1, 2) and y.shape == (1,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_peak_memory_counts_the_weights_and_activations() -> None:
    module = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 10)).cuda()
    batch = torch.randn(256, 1024)  # on the CPU: measure moves it to the module's device
    measured = measure(module, batch, warmup=1, repeats=2)
    weights_mb = sum(p.numel() * 4 for p in module.parameters()) / 2**20
    activations_mb = 256 * 4096 * 4 / 2**20
    assert weights_mb + activations_mb <= measured["peak_memory_mb"] < 3 * (weights_mb + activations_mb)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_gru_flops_are_counted() -> None:
    gru = torch.nn.GRU(32, 32, batch_first=True).cuda()  # cuDNN's fused GRU has no FLOP formula
    measured = measure(gru, torch.randn(2, 10, 32), warmup=0, repeats=1)
    assert measured["flops_g"] >= 10 * 2 * (3 * 32 * 32) * 2 / 1e9


# --- end to end through the CLI ------------------------------------------------------------------------------------


class ScriptedEpochs(pl.Callback):
    """Test-only: logs `metric` = values[epoch] during validation, and on `heavy_epochs` makes every eval-mode
    forward pass of the network do an extra matrix multiply (HEAVY_GFLOPS more work)."""

    def __init__(self, metric: str, values: list[float], heavy_epochs: list[int]):
        self.metric, self.values, self.heavy_epochs = metric, values, heavy_epochs
        self._handle = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        weight = torch.randn(HEAVY_SIDE, HEAVY_SIDE, device=pl_module.device)

        def heavier(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
            if not module.training and trainer.current_epoch in self.heavy_epochs:
                torch.mm(weight, weight)

        self._handle = pl_module.network.register_forward_hook(heavier)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._handle.remove()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        pl_module.log(self.metric, self.values[trainer.current_epoch], on_epoch=True, batch_size=1)


def scripted_config(
    tmp_path: Path, values: list[float], heavy_epochs: list[int], satisfice: dict, *extra: dict, mode: str = "max"
) -> Path:
    """A config layer whose callbacks are the real SatisficingMetrics (optimizing `val/scripted`) + ScriptedEpochs."""
    callbacks = [
        {
            "class_path": "{{ cookiecutter.package_name }}.practices.callbacks.satisficing.SatisficingMetrics",
            "init_args": {
                "optimize": {"metric": "val/scripted", "mode": mode},
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
    config = {"trainer": {"callbacks": callbacks}, "checkpoint": {"mode": mode}}
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is valid YAML
    return path


def fit_args(data: Path, tmp_path: Path, config: Path, max_epochs: int) -> list[str]:
    epochs = ["--trainer.max_epochs", str(max_epochs)]
    return cli_args("fit", data, tmp_path / "runs", "--config", str(config), *FEW_BATCHES, *epochs)


def satisficing_callback(cli: Any) -> SatisficingMetrics:
    return next(c for c in cli.trainer.callbacks if isinstance(c, SatisficingMetrics))


def params_m(cli: Any) -> float:
    return sum(p.numel() for p in cli.model.parameters()) / 1e6


@pytest.mark.parametrize("mode", ["max", "min"])
def test_the_best_feasible_epoch_is_kept_not_the_best_metric(tiny_data: Path, tmp_path: Path, mode: str) -> None:
    # Epoch 1 has the best metric but is heavy (over the FLOPs limit); epoch 2 is the best feasible one.
    # Mode "min" (e.g. val/rmse) runs the mirrored metric 1 - value: the same epochs are best and feasible.
    values = [0.60, 0.90, 0.80, 0.70, 0.70]
    values = values if mode == "max" else [round(1 - value, 6) for value in values]
    early_stop = {
        "class_path": "pytorch_lightning.callbacks.EarlyStopping",
        "init_args": {"monitor": "val/scripted", "mode": mode, "patience": 2},
    }
    config = scripted_config(tmp_path, values, [1], {"max_flops_g": FLOPS_LIMIT}, early_stop, mode=mode)
    cli = main(fit_args(tiny_data, tmp_path, config, max_epochs=5))
    history = satisficing_callback(cli).history
    assert [r["feasible"] for r in history] == [True, False, True, True]
    flops = [r["measured"]["flops_g"] for r in history]
    assert flops[0] < FLOPS_LIMIT and flops[1] - flops[0] == pytest.approx(HEAVY_GFLOPS, rel=0.01)
    # The infeasible epoch ranks below every feasible one in the metric's own direction.
    scores = [r["score"] for r in history]
    assert all((scores[1] < s) if mode == "max" else (scores[1] > s) for s in (scores[0], scores[2], scores[3]))
    # Early stopping watches the optimizing metric itself (best at epoch 1, then 2 epochs without
    # improvement: stops after epoch 3); on the gated score (best at epoch 2) it would run on to epoch 4.
    assert cli.trainer.should_stop and cli.trainer.current_epoch == 4

    best = cli.trainer.checkpoint_callback.best_model_path
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == 2 and checkpoint["satisficing"]["feasible"]
    assert checkpoint["satisficing"]["metric"] == pytest.approx(values[2])
    assert float(cli.trainer.checkpoint_callback.best_model_score) == pytest.approx(values[2])
    assert (Path(best).parent / "last.ckpt").is_file()

    report = json.loads((cli.run_dir / "satisficing.json").read_text(encoding="utf-8"))
    assert report["any_feasible"] and report["chosen"]["epoch"] == 2 and report["checkpoint"] == best
    rows = {row["constraint"]: row for row in report["constraints"]}
    assert rows["max_flops_g"]["result"] == "pass" and rows["max_flops_g"]["measured"] < FLOPS_LIMIT
    assert rows["max_latency_ms"]["result"] == "not checked"
    markdown = (cli.run_dir / "satisficing.md").read_text(encoding="utf-8")
    assert "Chosen: epoch 2" in markdown and f"| max_flops_g | GFLOPs per sample | {FLOPS_LIMIT:g} |" in markdown


def test_impossible_constraints_keep_the_closest_epoch_labelled_infeasible(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Nothing fits 1000 parameters and 1000 FLOPs; epoch 1 (not heavy) misses by the least, despite its metric.
    config = scripted_config(tmp_path, [0.90, 0.50, 0.95], [0, 2], {"max_flops_g": 1e-6, "max_params_m": 0.001})
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
    assert f"| max_params_m | parameters (millions) | 0.001 | {params_m(cli):.4g} | fail |" in markdown


def test_the_default_config_selects_checkpoints_by_the_gated_score(tiny_data: Path, tmp_path: Path) -> None:
    cli = main(cli_args("fit", tiny_data, tmp_path / "runs", *FEW_BATCHES, "--trainer.max_epochs", "1"))
    callback = satisficing_callback(cli)
    # The project's own optimizing metric: val/acc, val/auroc, val/map, val/miou (max) or val/rmse (min).
    assert (callback.optimize.metric, callback.optimize.mode) == (f"val/{MONITOR}", MODE)
    assert cli.trainer.checkpoint_callback.monitor == SCORE_KEY
    assert cli.trainer.checkpoint_callback.mode == MODE
    stoppers = [c for c in cli.trainer.callbacks if isinstance(c, EarlyStopping)]
    # Early stopping watches the checkpoint's score: a flat metric while the val loss falls is progress.
    assert [(c.monitor, c.mode) for c in stoppers] == [(SCORE_KEY, MODE)]
    assert callback.optimize.tie_break == "val/loss"
    metrics = cli.trainer.callback_metrics
    for key in ("latency_ms_p50", "latency_ms_p95", "batch_latency_ms_p95", "throughput", "peak_memory_mb"):
        assert metrics[f"satisficing/{key}"] > 0
    assert 0 < metrics["satisficing/flops_g"] < FLOPS_LIMIT
    assert metrics["satisficing/params_m"] == pytest.approx(params_m(cli), rel=1e-6)
    assert metrics["satisficing/ok"] == 1.0  # no limits configured
    assert float(metrics[SCORE_KEY]) == pytest.approx(float(metrics[callback.optimize.metric]), rel=1e-7)
    record = callback.history[-1]
    assert record["tie_break"] == pytest.approx(float(metrics["val/loss"]))
    assert record["score"] == gated_score(record["metric"], 0.0, MODE, record["tie_break"])
    assert (cli.run_dir / "satisficing.md").is_file()


@pytest.mark.slow
def test_ddp_ranks_share_rank_zeros_measurement_and_agree_on_the_best_epoch(tiny_data: Path, tmp_path: Path) -> None:
    # Rank 1's ModelCheckpoint needs satisficing/score too: without it Lightning stops the run on that rank.
    config = scripted_config(tmp_path, [0.9, 0.5], [0], {"max_flops_g": FLOPS_LIMIT})
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
    opposite = "min" if MODE == "max" else "max"
    with pytest.raises(SystemExit, match=f"optimize.mode='{MODE}'"):
        main(cli_args("fit", tiny_data, tmp_path / "runs", *FEW_BATCHES, "--checkpoint.mode", opposite))
