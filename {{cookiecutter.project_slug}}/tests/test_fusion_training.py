"""Multi-input projects: the fused model must beat a model on any single input, on the toy data whose target
depends on every input. If it does not, the fusion (or an encoder) is not doing its job.

Each model trains through the CLI as a user would; a single-input model is the same config with the other
inputs' columns unset and `model.fusion: none`. With an image input the runs take minutes: marked slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import MODE, MONITOR, cli_args
from {{ cookiecutter.package_name }}.answers import FUSION, MODALITIES
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.data.toy import write_toy_dataset

pytestmark = [pytest.mark.slow] if "image" in MODALITIES else []

# Config overrides that remove one input from the data (and so from the model).
WITHOUT = {
    "image": ["--data.image_column", "null"],
    "tabular": ["--data.numeric_columns", "[]", "--data.categorical_columns", "[]"],
    "sequence": ["--data.sequence_column", "null"],
}
TRAINING = ["--trainer.max_epochs", "12", "--data.batch_size", "32", "--model.lr", "3e-3", "--trainer.logger", "false"]
# No sanity checks, satisficing measurements or diagnosis: only the training this test compares.
QUIET = ["--trainer.callbacks", "[]", "--checkpoint.monitor", f"val/{MONITOR}", "--checkpoint.mode", MODE]


@pytest.fixture(scope="module")
def fusion_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fusion") / "toy"
    return write_toy_dataset(root, sizes={"train": 600, "val": 200, "test": 20}, image_size=32)


def val_score(data: Path, runs: Path, *extra: str) -> float:
    cli = main(cli_args("fit", data, runs, *TRAINING, *QUIET, *extra, logger=None))
    return float(cli.trainer.callback_metrics[f"val/{MONITOR}"])


def test_the_fused_model_beats_every_single_input_model(fusion_data: Path, tmp_path: Path) -> None:
    fused = val_score(fusion_data, tmp_path / "fused", "--model.fusion", FUSION)
    singles = {}
    for kept in MODALITIES:
        removed = [arg for other in MODALITIES if other != kept for arg in WITHOUT[other]]
        singles[kept] = val_score(fusion_data, tmp_path / kept, "--model.fusion", "none", *removed)
    better = MODE == "max"
    margin = {name: (fused - score) if better else (score - fused) for name, score in singles.items()}
    report = f"val/{MONITOR}: fused ({FUSION}) {fused:.3f}, " + ", ".join(
        f"{k} only {v:.3f}" for k, v in singles.items()
    )
    # A clear margin: 0.1 in accuracy-like metrics; for RMSE, 0.1 in the targets' units relative to the fused error.
    threshold = 0.1 if better else 0.1 * max(fused, 1e-6)
    print(report)
    assert all(m >= threshold for m in margin.values()), report
