"""One optimizing metric, several satisficing constraints: the best checkpoint is the best *acceptable* model.

The ML-strategy rule: optimize one number (e.g. `val/acc`) and only *satisfy* the others (fast enough, small
enough). At each validation this callback measures the model on the device it trains on, with a fixed real
validation batch, and logs `satisficing/*`:

    latency_ms_p50, latency_ms_p95   one sample (batch 1), eval mode, no_grad, the run's precision
    batch_latency_ms_p95, throughput the validation batch size (samples/s)
    peak_memory_mb                   CUDA: weights + the forward's peak extra memory; CPU: the process peak RSS
    params_m, checkpoint_mb, flops_g parameters (millions), serialized state_dict (MiB), GFLOPs per sample
                                     (NaN, reported as n/a, when the FLOP counter cannot run the model)
    ok                               1.0 when every configured constraint is met
    score                            the gated score that ModelCheckpoint monitors (below)

The gated score ranks every feasible epoch by the optimizing metric and every infeasible epoch below all of
them, ordered by how far it is from meeting the constraints (the sum of relative violations). So "best" is the
best optimizing value among the feasible epochs or, when none is feasible, the closest infeasible one. "Below"
follows the metric's mode: for a metric to minimize (`val/rmse`, mode "min") infeasible epochs score above
every feasible one.

Ties on the optimizing metric are broken by the validation loss (`optimize.tie_break`, lower is better): a coarse
metric (accuracy on a small val split) often stays flat for epochs while the loss still falls, and without the
tie-break the checkpoint would keep the first of those epochs and early stopping (which watches the same score)
would stop a run that is still learning. A feasible epoch scores

    metric - TIE_BREAK * max(|metric|, 1e-6) * s(loss)    (mode "max"; "+" for mode "min")

with s(loss) = 1/2 + atan(loss)/pi in (0, 1), increasing. The term is at most 1e-8 of the metric, below the
relative step between two float32 values (about 1.2e-7), so it never reorders two different metric values: it
only ranks the epochs whose metric is the same.

At the end of `fit` it prints a table (limit, value measured at the chosen epoch, pass/fail) and writes
`satisficing.md` and `satisficing.json` into the run folder.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from lightning_utilities.core.apply_func import apply_to_collection
from pytorch_lightning.strategies import DeepSpeedStrategy, FSDPStrategy
from pytorch_lightning.utilities import move_data_to_device, rank_zero_warn
from torch.utils.flop_counter import FlopCounterMode

from ...errors import ProjectError

try:
    import resource  # POSIX only
except ImportError:  # Windows: the CPU peak memory is reported as unmeasured (NaN)
    resource = None

PREFIX = "satisficing/"
SCORE_KEY = PREFIX + "score"
# Infeasible epochs score beyond this offset, so they rank below any feasible metric value smaller in magnitude.
# The score is logged in float64, which still resolves violation differences of ~1e-7 at this size.
INFEASIBLE_OFFSET = 1e9
# The weight of the tie-break relative to the metric (module docstring): below float32's relative resolution.
TIE_BREAK = 1e-8
MIB = 2**20


@dataclass
class Optimize:
    """The one metric to optimize: a logged key and whether higher ("max") or lower ("min") is better.

    `tie_break`: a key logged in validation, lower is better (the val loss), that ranks the epochs whose metric is
    the same; None: the earliest of them is kept.
    """

    metric: str = "val/acc"
    mode: Literal["max", "min"] = "max"
    tie_break: str | None = "val/loss"


@dataclass
class Satisfice:
    """Limits a model must meet to be chosen as the best checkpoint; None = not checked."""

    max_latency_ms: float | None = None  # batch 1, p95 (ms)
    max_batch_latency_ms: float | None = None  # the validation batch size, p95 (ms)
    min_throughput: float | None = None  # samples/s at the validation batch size
    max_peak_memory_mb: float | None = None  # MiB
    max_params_m: float | None = None  # millions of parameters
    max_checkpoint_mb: float | None = None  # MiB of the serialized state_dict (the weights file you would ship)
    max_flops_g: float | None = None  # GFLOPs per sample

    def __post_init__(self) -> None:
        for name, limit in asdict(self).items():
            if limit is not None and not limit > 0:
                raise ProjectError(f"satisfice.{name}={limit!r}: a limit must be a positive number (or null)")


# constraint -> (measured quantity, "max": must not exceed the limit / "min": must reach it, description)
CONSTRAINTS: dict[str, tuple[str, str, str]] = {
    "max_latency_ms": ("latency_ms_p95", "max", "latency, batch 1, p95 (ms)"),
    "max_batch_latency_ms": ("batch_latency_ms_p95", "max", "latency, one batch, p95 (ms)"),
    "min_throughput": ("throughput", "min", "throughput (samples/s)"),
    "max_peak_memory_mb": ("peak_memory_mb", "max", "peak memory (MiB)"),
    "max_params_m": ("params_m", "max", "parameters (millions)"),
    "max_checkpoint_mb": ("checkpoint_mb", "max", "weights file (MiB)"),
    "max_flops_g": ("flops_g", "max", "GFLOPs per sample"),
}


# --- pure functions: feasibility and the gated score ------------------------------------------------------------


def violations(measured: Mapping[str, float], satisfice: Satisfice) -> dict[str, float]:
    """Relative shortfall of each configured constraint: 0.0 when met, 0.25 when 25% beyond the limit.

    A quantity that could not be measured (NaN) counts as infinitely far: it cannot be shown to pass.
    """
    result = {}
    for name, (key, direction, _) in CONSTRAINTS.items():
        limit = getattr(satisfice, name)
        if limit is None:
            continue
        value = float(measured.get(key, math.nan))
        if math.isnan(value):
            result[name] = math.inf
            continue
        excess = value - limit if direction == "max" else limit - value
        result[name] = max(0.0, excess / limit)
    return result


def gated_score(metric: float, violation: float, mode: str, tie_break: float | None = None) -> float:
    """The optimizing metric when feasible (violation 0); otherwise worse than any feasible score, by `violation`.

    `tie_break` (lower is better, e.g. the val loss; None: none) nudges a feasible score by at most TIE_BREAK of
    the metric, so equal metrics rank by it and different ones keep their order (module docstring).
    """
    if violation == 0:
        if tie_break is None:
            return metric
        squashed = 1.0 if math.isnan(tie_break) else 0.5 + math.atan(tie_break) / math.pi  # (0, 1), increasing
        nudge = TIE_BREAK * max(abs(metric), 1e-6) * squashed
        return metric - nudge if mode == "max" else metric + nudge
    return -(INFEASIBLE_OFFSET + violation) if mode == "max" else INFEASIBLE_OFFSET + violation


def best_index(scores: list[float], mode: str) -> int | None:
    """Index of the best score, the earliest on ties, NaN worst: the epoch ModelCheckpoint(save_top_k=1) keeps."""
    sign = 1.0 if mode == "max" else -1.0
    best = None
    for index, score in enumerate(scores):
        value = -math.inf if math.isnan(score) else sign * score
        if best is None or value > best[1]:
            best = (index, value)
    return None if best is None else best[0]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile with linear interpolation (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --- measuring -----------------------------------------------------------------------------------------------------


def first_sample(batch: Any) -> Any:
    """The same batch structure holding only its first sample (tensors and per-sample lists such as paths)."""
    if isinstance(batch, torch.Tensor):
        return batch[:1] if batch.ndim else batch
    if isinstance(batch, Mapping):
        return {key: first_sample(value) for key, value in batch.items()}
    if isinstance(batch, list | tuple):
        if any(isinstance(item, torch.Tensor | Mapping | list | tuple) for item in batch):
            return type(batch)(first_sample(item) for item in batch)  # a structure: (inputs, targets)
        return batch[:1]  # per-sample values: file paths, ids
    return batch


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, list | tuple) else ()
    for item in items:
        if (found := _first_tensor(item)) is not None:
            return found
    return None


def batch_size_of(batch: Any) -> int:
    """Samples in a batch: the length of its "id" list, else the first dimension of its first tensor."""
    if isinstance(batch, Mapping) and isinstance(batch.get("id"), list | tuple):
        return len(batch["id"])
    tensor = _first_tensor(batch)
    if tensor is not None:
        return len(tensor) if tensor.ndim else 1
    return len(batch) if isinstance(batch, list | tuple) else 1


def count_flops(
    module: torch.nn.Module, sample: Any, forward_context: Callable[[], AbstractContextManager] = nullcontext
) -> tuple[float, str]:
    """FLOPs of one forward pass (a multiply-add = 2), and why they could not be counted ("" when they were).

    Counts matrix multiplies, convolutions and attention, the bulk of a network's work. The pass runs with
    autograd on (its graph is discarded) and cuDNN off: fused inference kernels, such as the fast path of
    `nn.TransformerEncoderLayer` under no_grad or cuDNN's GRU/LSTM, are single operations the counter has no
    formula for, and would count as 0; without them they run as the matrix multiplies the counter sees.
    """
    try:
        with (
            torch.enable_grad(),
            torch.backends.cudnn.flags(enabled=False),
            forward_context(),
            FlopCounterMode(display=False) as counter,
        ):
            module(sample)
        return float(counter.get_total_flops()), ""
    except Exception as error:  # noqa: BLE001 - an uncountable model must not stop training
        return math.nan, f"{type(error).__name__}: {error}".splitlines()[0][:200]


def _timed_ms(forward: Callable[[], Any], warmup: int, repeats: int, sync: Callable[[], None]) -> list[float]:
    for _ in range(warmup):
        forward()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward()
        sync()  # CUDA runs asynchronously: without this we would time the kernel launches only
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _process_peak_rss_mb() -> float:
    if resource is None:
        return math.nan
    # ru_maxrss: kilobytes on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (MIB if sys.platform == "darwin" else 1024)


def measure(
    module: torch.nn.Module,
    batch: Any,
    warmup: int = 1,
    repeats: int = 5,
    forward_context: Callable[[], AbstractContextManager] = nullcontext,
    notes: list[str] | None = None,
) -> dict[str, float]:
    """Latency, throughput, memory, size and FLOPs of `module(batch)` on the module's device.

    `batch` is any nested structure of tensors (the project's batch dict: {"image": ..., "tabular": {...},
    "id": [...]}); it is moved to the module's device first. The module is put in eval mode for the measurement
    and every submodule's train/eval mode is restored after. What could not be measured is NaN, and why is
    appended to `notes`.
    """
    parameters = list(module.parameters())
    device = parameters[0].device if parameters else torch.device("cpu")
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    batch = move_data_to_device(batch, device)
    one, size = first_sample(batch), batch_size_of(batch)
    modes = {submodule: submodule.training for submodule in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            with forward_context():
                single = _timed_ms(lambda: module(one), warmup, repeats, sync)
                batched = _timed_ms(lambda: module(batch), warmup, repeats, sync)
            if cuda:
                # Weights plus the forward's peak extra memory: what inference needs. The allocator's plain peak
                # would also count the optimizer state and gradients, which exist only while training. A fresh
                # forward context: autocast's cache of low-precision weights is counted too.
                sync()
                before = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
                with forward_context():
                    module(batch)
                sync()
                weights = sum(t.numel() * t.element_size() for t in [*parameters, *module.buffers()])
                peak_mb = (torch.cuda.max_memory_allocated(device) - before + weights) / MIB
            else:
                # No allocator statistics off CUDA: this is the whole process's peak resident memory so far
                # (training, data loading and this measurement together), an upper bound for inference.
                peak_mb = _process_peak_rss_mb()
        flops, why = count_flops(module, one, forward_context)
        if why and notes is not None:
            notes.append(f"FLOPs not counted ({why}): flops_g is NaN, and a max_flops_g limit cannot pass")
    finally:
        for submodule, training in modes.items():
            submodule.training = training
    weights_file = io.BytesIO()
    torch.save(module.state_dict(), weights_file)
    return {
        "latency_ms_p50": percentile(single, 50),
        "latency_ms_p95": percentile(single, 95),
        "batch_latency_ms_p95": percentile(batched, 95),
        "throughput": size * len(batched) / (sum(batched) / 1e3),
        "peak_memory_mb": peak_mb,
        "params_m": sum(p.numel() for p in parameters) / 1e6,
        "checkpoint_mb": weights_file.getbuffer().nbytes / MIB,
        "flops_g": flops / 1e9,
    }


# --- the callback --------------------------------------------------------------------------------------------------


class SatisficingMetrics(pl.Callback):
    """Measures the satisficing metrics at each validation and logs the gated score ModelCheckpoint monitors.

    Args:
        optimize: the optimizing metric (a key logged during validation) and its mode.
        satisfice: the constraints; each is optional (null = not checked).
        warmup: untimed forward passes before timing (caches, cuDNN autotuning, lazy initialization).
        repeats: timed forward passes per latency measurement. The p95 of 5 timings is close to the slowest
            one: raise it (e.g. to 50) for a steadier p95 when a latency limit decides between epochs.
        measure_every_n_epochs: measure every n epochs (always at the first validation); epochs in between
            reuse the latest measurement, which is accurate as long as the architecture does not change.
    """

    def __init__(
        self,
        optimize: Optimize | None = None,
        satisfice: Satisfice | None = None,
        warmup: int = 1,
        repeats: int = 5,
        measure_every_n_epochs: int = 1,
    ):
        if repeats < 1 or warmup < 0 or measure_every_n_epochs < 1:
            raise ProjectError("SatisficingMetrics: repeats and measure_every_n_epochs must be >= 1, warmup >= 0")
        self.optimize = optimize or Optimize()
        self.satisfice = satisfice or Satisfice()
        self.warmup = warmup
        self.repeats = repeats
        self.measure_every_n_epochs = measure_every_n_epochs
        self.history: list[dict[str, Any]] = []  # one record per validation; saved in checkpoints for resuming
        self._batch: Any = None
        self._latest: dict[str, Any] | None = None
        self._warned: set[str] = set()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # A mode mismatch would silently keep the worst epoch: refuse it.
        for callback in [*trainer.checkpoint_callbacks, *trainer.early_stopping_callbacks]:
            watched = callback.monitor in (SCORE_KEY, self.optimize.metric)
            if watched and getattr(callback, "mode", self.optimize.mode) != self.optimize.mode:
                raise ProjectError(
                    f"{type(callback).__name__}(monitor={callback.monitor!r}) has mode={callback.mode!r} but "
                    f"optimize.mode={self.optimize.mode!r}: set both to the same"
                )
        if stage != "fit":
            return
        if not any(c.monitor == SCORE_KEY for c in trainer.checkpoint_callbacks):
            rank_zero_warn(f"No ModelCheckpoint monitors {SCORE_KEY!r}: the best checkpoint ignores the constraints.")
        for callback in trainer.early_stopping_callbacks:
            if callback.monitor not in (SCORE_KEY, self.optimize.metric):
                rank_zero_warn(
                    f"EarlyStopping watches {callback.monitor!r}, not the optimizing metric {self.optimize.metric!r}"
                )

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        # A fixed, real input, already on the device: every measurement times the same thing.
        if self._batch is None and dataloader_idx == 0:
            self._batch = apply_to_collection(batch, torch.Tensor, lambda t: t.detach().clone())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._batch is None:
            return
        # Every rank checks this itself, so no rank raises while the others wait in the broadcast below.
        if self.optimize.metric not in trainer.callback_metrics:
            logged = ", ".join(sorted(trainer.callback_metrics)) or "nothing"
            raise ProjectError(
                f"optimize.metric={self.optimize.metric!r} is not logged in validation (logged: {logged})"
            )
        # Measured on rank zero, then shared, so every rank logs the same values and every rank's ModelCheckpoint
        # sees the monitored key. Sharded models (FSDP, DeepSpeed) need every rank in each forward pass.
        sharded = isinstance(trainer.strategy, FSDPStrategy | DeepSpeedStrategy)
        record = self._record(trainer, pl_module) if trainer.is_global_zero or sharded else None
        record = trainer.strategy.broadcast(record, src=0)
        self._latest = record
        if trainer.state.fn == "fit":
            self.history.append(record)
        values = {PREFIX + key: value for key, value in record["measured"].items()}
        values[PREFIX + "ok"] = 1.0 if record["feasible"] else 0.0
        # Every rank logs the same value: a "max" sync keeps it exact and avoids Lightning's per-rank warning.
        pl_module.log_dict(values, sync_dist=True, reduce_fx="max")
        # float64: an infeasible score is ~1e9 and must still resolve small differences in violation.
        pl_module.log(SCORE_KEY, torch.tensor(record["score"], dtype=torch.float64), sync_dist=True, reduce_fx="max")

    def _record(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        epoch = trainer.current_epoch
        latest = self._latest
        if latest is None or epoch % self.measure_every_n_epochs == 0:
            notes: list[str] = []
            measured = measure(
                pl_module, self._batch, self.warmup, self.repeats, trainer.precision_plugin.forward_context, notes
            )
            for note in notes:
                if note not in self._warned:
                    self._warned.add(note)
                    rank_zero_warn(f"satisficing metrics: {note}")
            measured_at = epoch
        else:
            measured, measured_at = latest["measured"], latest["measured_at_epoch"]
        metric = float(trainer.callback_metrics[self.optimize.metric])
        if abs(metric) >= INFEASIBLE_OFFSET:
            rank_zero_warn(f"{self.optimize.metric}={metric} is too large for the gated score to rank correctly")
        missed = violations(measured, self.satisfice)
        violation = sum(missed.values())
        tie_break = self._tie_break(trainer)
        return {
            "epoch": epoch,
            "step": trainer.global_step,
            "metric": metric,
            "tie_break": tie_break,
            "measured": measured,
            "measured_at_epoch": measured_at,
            "violations": missed,
            "violation": violation,
            "feasible": violation == 0,
            "score": gated_score(metric, violation, self.optimize.mode, tie_break),
        }

    def _tie_break(self, trainer: pl.Trainer) -> float | None:
        """The tie-break's value this validation; None (and a warning, once) when it is not logged."""
        key = self.optimize.tie_break
        if key is None or key == self.optimize.metric:
            return None
        if key not in trainer.callback_metrics:
            if key not in self._warned:
                self._warned.add(key)
                rank_zero_warn(
                    f"optimize.tie_break={key!r} is not logged in validation: epochs with equal "
                    f"{self.optimize.metric} keep the earliest"
                )
            return None
        return float(trainer.callback_metrics[key])

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Label the checkpoint itself: feasible or not, and what was measured, readable without the run folder.
        if self._latest is not None:
            checkpoint["satisficing"] = {**self._latest, "constraints": asdict(self.satisfice)}

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # A resumed fit reports over all its epochs, not only those after the resume.
        self.history = list(state_dict.get("history", []))
        self._latest = self.history[-1] if self.history else None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run or not self.history:
            return
        report = self._build_report(trainer)
        markdown = format_report(report)
        print("\n" + markdown)
        folder = Path(trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "satisficing.md").write_text(markdown, encoding="utf-8")
        text = json.dumps(_finite_or_none(report), indent=2, allow_nan=False)
        (folder / "satisficing.json").write_text(text + "\n", encoding="utf-8")

    def _build_report(self, trainer: pl.Trainer) -> dict[str, Any]:
        checkpoint = next((c for c in trainer.checkpoint_callbacks if c.monitor == SCORE_KEY), None)
        chosen = self._chosen(checkpoint)
        record = self.history[chosen]
        rows = []
        for name, (key, _, description) in CONSTRAINTS.items():
            limit = getattr(self.satisfice, name)
            missed = record["violations"].get(name)
            result = "not checked" if limit is None else ("pass" if missed == 0 else "fail")
            rows.append(
                {
                    "constraint": name,
                    "quantity": description,
                    "limit": limit,
                    "measured": record["measured"][key],
                    "result": result,
                }
            )
        return {
            "optimize": asdict(self.optimize),
            "satisfice": asdict(self.satisfice),
            "any_feasible": any(r["feasible"] for r in self.history),
            "chosen": record,
            "checkpoint": (checkpoint.best_model_path or None) if checkpoint else None,
            "constraints": rows,
            "history": self.history,
        }

    def _chosen(self, checkpoint: pl.callbacks.ModelCheckpoint | None) -> int:
        """The history index of the kept checkpoint (ModelCheckpoint's best score), else of the best score."""
        scores = [r["score"] for r in self.history]
        kept = checkpoint.best_model_score if checkpoint is not None else None
        if kept is not None:
            kept = float(kept)
            exact = [index for index, score in enumerate(scores) if score == kept]
            close = [index for index, score in enumerate(scores) if math.isclose(score, kept, rel_tol=1e-12)]
            if exact or close:
                return (exact or close)[0]
        return best_index(scores, self.optimize.mode)


def format_report(report: Mapping[str, Any]) -> str:
    """The end-of-fit report as Markdown: the chosen epoch, then one pass/fail row per constraint."""
    optimize, record = report["optimize"], report["chosen"]
    where = f"epoch {record['epoch']} (step {record['step']})"
    metric = f"{optimize['metric']} = {record['metric']:.4f}"
    if report["any_feasible"]:
        verdict = (
            f"Chosen: {where}, {metric}: the best ({optimize['mode']}) among the epochs that met every constraint."
        )
    else:
        verdict = f"No epoch met every constraint; kept the closest: {where} (infeasible), {metric}."
    if optimize.get("tie_break"):
        verdict += f" Equal {optimize['metric']} values rank by {optimize['tie_break']} (lower first)."
    lines = ["# Optimizing and satisficing metrics", "", verdict]
    if report["checkpoint"]:
        lines += ["", f"Checkpoint: {report['checkpoint']}"]
    if record["measured_at_epoch"] != record["epoch"]:
        lines += ["", f"Measured at epoch {record['measured_at_epoch']} (measure_every_n_epochs)."]
    lines += [
        "",
        f"| constraint | quantity | limit | measured at epoch {record['epoch']} | result |",
        "|---|---|---|---|---|",
    ]
    for row in report["constraints"]:
        limit = "-" if row["limit"] is None else f"{row['limit']:g}"
        measured = "n/a" if row["measured"] is None or math.isnan(row["measured"]) else f"{row['measured']:.4g}"
        lines.append(f"| {row['constraint']} | {row['quantity']} | {limit} | {measured} | {row['result']} |")
    lines += ["", "Every validation (violation: the summed relative excess over the limits; 0 = feasible):", ""]
    lines += [f"| epoch | step | {optimize['metric']} | feasible | violation |", "|---|---|---|---|---|"]
    for r in report["history"]:
        feasible = "yes" if r["feasible"] else "no"
        lines.append(f"| {r['epoch']} | {r['step']} | {r['metric']:.4f} | {feasible} | {r['violation']:.3g} |")
    return "\n".join(lines) + "\n"


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(item) for item in value]
    return value
