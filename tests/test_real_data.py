"""Real data with default settings (benchmarks/real_data.py): the rendered project is within a small margin of a
scikit-learn linear baseline on the same split, or its fit said loudly that it is not (the baseline warning)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from real_data import CASES, run_case  # noqa: E402

MARGIN = 0.05  # of the best baseline's value (accuracy, AUROC) or error (RMSE)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["penguins", "breast_cancer"])  # the quickest (2-3 min each on 2 busy cores)
def test_default_settings_match_the_linear_baseline_or_say_so(name: str, tmp_path: Path) -> None:
    result = run_case(CASES[name], tmp_path)
    metric = f"test/{result.case.metric}"
    best, reference = result.best_baseline
    assert result.relative_gap() <= MARGIN or result.warning, (
        f"{name}: project {metric} {result.project[metric]:.4f}, {best} {reference:.4f}, and no baseline warning"
    )
