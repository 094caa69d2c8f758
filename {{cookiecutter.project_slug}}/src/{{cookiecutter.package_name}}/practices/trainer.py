"""The Trainer with the project's own commands as methods, so LightningCLI builds their parsers like fit's.

LightningCLI turns a Trainer method into a subcommand (its typed arguments become flags, the first docstring
line its help): `python -m PACKAGE baseline ...`, `python -m PACKAGE diagnose --ckpt_path best ...`,
`python -m PACKAGE lr-find ...` (the CLI maps the hyphenated name to `lr_find`), `python -m PACKAGE export ...`,
`python -m PACKAGE serve --ckpt_path best ...`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning import Trainer

from ..errors import ProjectError
from . import baselines, compatibility, lr_finder, runs
from .callbacks.diagnosis import Diagnosis, load_weights
from .export import DEFAULT_FORMATS, export_network


class ProjectTrainer(Trainer):
    def baseline(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule,
        feature_size: int = 16,
        steps: int = 100,
        max_train_samples: int | None = 20000,
    ) -> dict[str, Any]:
        """Constant ("majority" / "mean"), linear and persistence baselines on the model's splits and metrics.

        The floor the model must beat (practices/baselines.py); the persistence forecast only for a numeric series.

        Args:
            model: gives the task (metrics, loss, error); its network is not used.
            datamodule: the splits and inputs.
            feature_size: the linear model sees images averaged down to feature_size x feature_size pixels.
            steps: L-BFGS iterations fitting the linear model (full batch).
            max_train_samples: fit on at most this many training samples (seeded subset); None: all.
        """
        result = baselines.run_baselines(model.task, datamodule, feature_size, steps, max_train_samples)
        run_dir = Path(self.default_root_dir)
        runs.write_json(run_dir / baselines.RESULT_FILE, result)
        markdown = baselines.to_markdown(result, model.task)
        (run_dir / "baseline.md").write_text(f"# Baselines\n\n{markdown}", encoding="utf-8")
        print(f"\n{markdown}\nBaselines written to {run_dir / baselines.RESULT_FILE}")
        return result

    def diagnose(
        self, model: pl.LightningModule, datamodule: pl.LightningDataModule, ckpt_path: str | None = None
    ) -> dict[str, Any]:
        """Bias, variance and data mismatch of a checkpoint, with error analysis of its val errors.

        Args:
            model: the architecture; the checkpoint's weights are loaded into it.
            datamodule: the splits (the same data settings the checkpoint was trained with).
            ckpt_path: a checkpoint file, or "best" / "last" for the newest run's.
        """
        if not ckpt_path:
            raise ProjectError("diagnose needs --ckpt_path: a checkpoint file, 'best' or 'last'")
        checkpoint = load_weights(model, ckpt_path)
        model = self.precision_plugin.convert_module(model)  # 16-true / bf16-true: weights in that dtype, as in fit
        notes = []
        difference = compatibility.data_difference(checkpoint, datamodule)
        if difference:
            notes.append(
                f"{difference}: check that data.* matches the fit, or train-dev/val may contain samples the model "
                "trained on."
            )
        callback = next((c for c in self.callbacks if isinstance(c, Diagnosis)), None) or Diagnosis()
        result = callback.run(self, model, datamodule, source=str(ckpt_path), notes=notes)
        for logger in self.loggers:
            logger.finalize("success")  # no fit ran, so nothing else flushes the logger's files
        return result

    def export(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule,
        ckpt_path: str | None = None,
        formats: str | list[str] = DEFAULT_FORMATS,
        output_dir: str | None = None,
        batch_size: int = 2,
        atol: float = 1e-4,
    ) -> dict[str, Any]:
        """Export a checkpoint to torch.export and ONNX (dynamic batch) with its preprocessing, checked against it.

        Args:
            model: the architecture; the checkpoint's weights are loaded into it (exported in float32 on the CPU).
            datamodule: val samples for the example inputs and the check; its readers' preprocessing (what they
                learned from train) goes to preprocess.json: use the data settings of the fit.
            ckpt_path: a checkpoint file, or "best" / "last" for the newest run's.
            formats: pt2 (torch.export), onnx, torchscript (torch.jit.trace, deprecated by torch), comma-separated
                (ONNX needs pip install -e ".[export]"); practices/export.py says which exporter writes each.
            output_dir: where the files and export.json go; None: the export run's folder, <run>/export.
            batch_size: samples in the example batch; the files are checked on batches of 1 and 2 * batch_size + 1.
            atol: the largest allowed difference to the checkpoint's outputs (times the largest output when above 1).
        """
        if not ckpt_path:
            raise ProjectError("export needs --ckpt_path: a checkpoint file, 'best' or 'last'")
        checkpoint = load_weights(model, ckpt_path)
        difference = compatibility.data_difference(checkpoint, datamodule)
        if difference:
            warnings.warn(
                f"{difference}: preprocess.json holds the statistics and vocabularies of the current train split, "
                "which may not be the ones the model was trained with; export with the fit's data.* settings",
                stacklevel=2,
            )
        output = Path(output_dir) if output_dir else Path(self.default_root_dir) / "export"
        val = datamodule.dataset("val")
        return export_network(model, val, output, formats, batch_size, atol, source=str(ckpt_path))

    def serve(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule,
        ckpt_path: str | None = None,
        host: str = "127.0.0.1",
        port: int = 8000,
        max_batch_size: int = 1,
        batch_timeout: float = 0.0,
        workers_per_device: int = 1,
        accelerator: str = "auto",
        timeout: float = 30.0,
    ) -> None:
        """Serve a checkpoint over HTTP with LitServe: POST /predict a sample, get its predictions.csv row as JSON.

        Needs pip install -e ".[serve]" (practices/serve.py). Requests are read by the data's readers and answered
        with the prediction writer's decoding, so served outputs are the `predict` outputs of the same inputs.

        Args:
            model: the architecture; the checkpoint's weights are loaded into it in each worker.
            datamodule: its readers (statistics and vocabularies learned from train) read the requests: use the data
                settings of the fit.
            ckpt_path: a checkpoint file, or "best" / "last" for the newest run's.
            host: the interface to listen on: 127.0.0.1 (this machine only), 0.0.0.0 or :: (every interface).
            port: the HTTP port.
            max_batch_size: requests run through the model together, at most this many (1: each on its own).
            batch_timeout: seconds a batch waits for more requests before it runs (with max_batch_size > 1).
            workers_per_device: model copies (worker processes) per device.
            accelerator: auto (a GPU when there is one), cpu, cuda or mps.
            timeout: seconds a request may wait for its answer before it gets a 504.
        """
        if not ckpt_path:
            raise ProjectError("serve needs --ckpt_path: a checkpoint file, 'best' or 'last'")
        from .serve import serve  # imported here: LitServe is an optional extra

        tta = next((c for c in self.callbacks if type(c).__name__ == "TestTimeAugmentation" and c.active), None)
        serve(
            model, datamodule, ckpt_path, host, port, max_batch_size, batch_timeout, workers_per_device, accelerator,
            timeout, tta_mode=tta.mode if tta else None,
        )  # fmt: skip

    def lr_find(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule,
        min_lr: float = 1e-7,
        max_lr: float = 1.0,
        num_training: int = 100,
        early_stop_threshold: float | None = 4.0,
    ) -> dict[str, Any]:
        """Learning-rate range test: loss vs LR plot, suggested --model.optimizer.lr (the model's weights are kept).

        Args:
            model: trained from its current weights for the sweep, then restored.
            datamodule: the training data of the sweep.
            min_lr: first learning rate of the sweep.
            max_lr: last learning rate of the sweep (it stops earlier when the loss diverges).
            num_training: training steps of the sweep, spread exponentially from min_lr to max_lr.
            early_stop_threshold: stop once the smoothed loss exceeds this multiple of its best; None: never.
        """
        result = lr_finder.range_test(self, model, datamodule, min_lr, max_lr, num_training, early_stop_threshold)
        image = lr_finder.plot(result)
        plot, path = lr_finder.write(Path(self.default_root_dir), result, image)
        lr_finder.log_to(self, result, image)
        print(
            f"\nLR range test: {len(result['lr'])} steps from {result['lr'][0]:.3g} to {result['lr'][-1]:.3g}; "
            f"lowest smoothed loss at lr {result['min_loss_lr']:.3g}."
            f"\nSuggested learning rate: {result['suggestion']:.3g} ({result['rule']})."
            f"\nTrain with it by adding: {lr_finder.flag(result['suggestion'])}"
            f"\nPlot: {plot}\nResult: {path}"
        )
        return result
