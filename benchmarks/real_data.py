"""Real data, default settings: the rendered project against a few-line scikit-learn baseline on the same split.

    python benchmarks/real_data.py [--cases penguins,breast_cancer,...] [--keep DIR]

For each task type x modality that a dataset bundled with an installed package covers (nothing is downloaded):

| case | task / input | data |
|---|---|---|
| penguins | multiclass / tabular | palmerpenguins: species from island, sex (text), 5 numbers, missing cells |
| breast_cancer | binary / tabular | scikit-learn: malignant vs benign from 30 numeric columns |
| diabetes | regression / tabular | scikit-learn (raw units): disease progression from 10 numeric columns |
| sunspots | regression / sequence | statsmodels: yearly sunspot numbers, 24-year windows -> the next year |
| digits | multiclass / image | scikit-learn: 8x8 digits, upscaled to 32 px PNGs in class folders |

Multilabel and segmentation are not covered: no bundled dataset has several labels per row or masks, and one
derived for the purpose would measure the derivation. Each case:

1. renders the template with that task type and modality (`cookiecutter --no-input`, other answers default) and
   installs it (scripts/rendered_env.py);
2. writes the dataset in the on-disk format the rendered README documents ("Bring your own data"), split here
   60/20/20 (seeded, stratified by class; the series in time order, so no test window overlaps a train year);
3. fits with `configs/default.yaml`, changing only `data.*` keys (root, target / sequence columns,
   num_workers 0, which is faster for a few hundred rows); the table's columns are inferred from train.csv. The
   image case adds `configs/toy.yaml`, the documented CPU preset (resnet10t from scratch at lr 3e-3, 8 epochs):
   pretrained weights cannot be downloaded here and a 224 px backbone does not fit a CPU budget;
4. tests the kept checkpoint (`test --ckpt_path best`) and reads `test_metrics.json`, and the fit's
   `summary.json` for whether its baseline warning fired (`baseline_comparison.warning`);
5. fits the scikit-learn baseline on the same train split and scores the same test split: standardize (+ impute
   and one-hot for the table with text and missing cells) and LogisticRegression / Ridge; for the series also
   the persistence forecast (repeat the last value) and Ridge on the 24 lags; for digits LogisticRegression on
   the 64 raw pixels.

Prints the table and writes results/real_data.md. `run_case` is what tests/test_real_data.py runs for one case.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common import (
    TEMPLATE,
    OtherCpuUse,
    Project,
    install,
    load_1min,
    machine_description,
    markdown_table,
    measured_env,
    write_results,
)

SEED = 0
WINDOW = 24  # sunspots: years per window


@dataclass
class Case:
    name: str
    task_type: str
    modality: str
    data: str  # one line: the dataset and what is predicted
    write: Callable[[Path], dict]  # writes the dataset under a folder; returns what the baseline needs
    data_args: list[str]  # the data.* keys changed (besides data.root)
    baseline: Callable[[dict], dict[str, float]]  # test metrics of the scikit-learn baseline(s)
    metric: str  # the task's optimizing metric: acc | auroc | rmse
    configs: list[str] = field(default_factory=lambda: ["configs/default.yaml"])


@dataclass
class Result:
    case: Case
    python: Path  # the rendered project's venv
    project: dict[str, float]  # test metrics of the kept checkpoint
    baselines: dict[str, float]  # name -> test value of the case's metric ("name, acc": shown, not compared)
    warning: str | None  # the fit's baseline warning, when it fired
    seconds: float  # the fit's own seconds
    epochs: int
    inferred: str  # the fit's line about inferred table columns, if any

    @property
    def best_baseline(self) -> tuple[str, float]:
        pick = min if self.case.metric == "rmse" else max
        compared = {name: value for name, value in self.baselines.items() if "," not in name}
        name = pick(compared, key=compared.get)
        return name, compared[name]

    def gap(self) -> float:
        """How much worse the project is than the best baseline, in the metric's units (negative: better)."""
        value, (_, reference) = self.project[f"test/{self.case.metric}"], self.best_baseline
        return value - reference if self.case.metric == "rmse" else reference - value

    def relative_gap(self) -> float:
        """gap as a share of the best baseline's error (rmse) or of its value (acc, auroc)."""
        _, reference = self.best_baseline
        return self.gap() / abs(reference)


# --- writing the datasets ----------------------------------------------------------------------------------------
def split_indices(n: int, labels: np.ndarray | None, ordered: bool = False) -> dict[str, np.ndarray]:
    """60/20/20 train/val/test indices: seeded and stratified by label, or (ordered) the first 60% for train."""
    if ordered:
        a, b = int(0.6 * n), int(0.8 * n)
        return {"train": np.arange(a), "val": np.arange(a, b), "test": np.arange(b, n)}
    from sklearn.model_selection import train_test_split

    index = np.arange(n)
    train, rest = train_test_split(index, test_size=0.4, random_state=SEED, stratify=labels)
    val, test = train_test_split(
        rest, test_size=0.5, random_state=SEED, stratify=None if labels is None else labels[rest]
    )
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def cell(value: object) -> str:
    """A CSV cell: missing values empty, numbers as Python writes them."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def write_csvs(root: Path, table: list[dict[str, object]], parts: dict[str, np.ndarray]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for split, index in parts.items():
        with (root / f"{split}.csv").open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows({key: cell(value) for key, value in table[i].items()} for i in index)


def write_penguins(root: Path) -> dict:
    from palmerpenguins import load_penguins

    frame = load_penguins()
    table = frame.to_dict("records")
    parts = split_indices(len(table), frame["species"].to_numpy())
    write_csvs(root, table, parts)
    return {"frame": frame, "parts": parts, "target": "species"}


def write_sklearn_table(
    loader: Callable[..., object], target: str, classes: list[str] | None
) -> Callable[[Path], dict]:
    def write(root: Path) -> dict:
        bunch = loader(as_frame=True, **({} if classes else {"scaled": False}))
        frame = bunch.frame.rename(columns={"target": target})
        if classes:  # class names, not 0/1, as a user's CSV holds them
            frame[target] = [classes[int(v)] for v in frame[target]]
        parts = split_indices(len(frame), frame[target].to_numpy() if classes else None)
        write_csvs(root, frame.to_dict("records"), parts)
        return {"frame": frame, "parts": parts, "target": target}

    return write


def sunspot_windows() -> tuple[np.ndarray, np.ndarray]:
    import statsmodels.datasets

    series = statsmodels.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(dtype=float)
    windows = np.stack([series[i : i + WINDOW] for i in range(len(series) - WINDOW)])
    return windows, series[WINDOW:]


def write_sunspots(root: Path) -> dict:
    windows, targets = sunspot_windows()
    table = [
        {"series": " ".join(f"{v:g}" for v in window), "target": f"{target:g}"}
        for window, target in zip(windows, targets, strict=True)
    ]
    parts = split_indices(len(table), None, ordered=True)
    write_csvs(root, table, parts)
    return {"windows": windows, "targets": targets, "parts": parts}


def write_digits(root: Path) -> dict:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    parts = split_indices(len(digits.target), digits.target)
    for split, index in parts.items():
        for i in index:
            folder = root / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] * (255 / 16)).round().astype(np.uint8)  # 0..16 -> 0..255
            Image.fromarray(pixels, mode="L").resize((32, 32), Image.Resampling.BILINEAR).save(folder / f"{i}.png")
    return {"x": digits.data, "y": digits.target, "parts": parts}


# --- the baselines -----------------------------------------------------------------------------------------------
def classification_scores(model: object, x: np.ndarray, y: np.ndarray, positive: str | None = None) -> dict:
    from sklearn.metrics import accuracy_score, roc_auc_score

    scores = {"acc": float(accuracy_score(y, model.predict(x)))}
    if positive is not None:
        column = list(model.classes_).index(positive)
        scores["auroc"] = float(roc_auc_score(y == positive, model.predict_proba(x)[:, column]))
    return scores


def rmse(y: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y, dtype=float) - predicted) ** 2)))


def table_baseline(kind: str, positive: str | None = None) -> Callable[[dict], dict[str, float]]:
    """LogisticRegression (classification) or Ridge (regression) on standardized columns; text columns one-hot,
    missing cells imputed (median / most frequent), all fitted on train only."""

    def baseline(data: dict) -> dict[str, float]:
        from pandas.api.types import is_numeric_dtype
        from sklearn.compose import make_column_transformer
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression, RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        frame, parts, target = data["frame"], data["parts"], data["target"]
        features = frame.drop(columns=[target])
        text = [c for c in features if not is_numeric_dtype(features[c])]
        numbers = [c for c in features if c not in text]
        prepare = make_column_transformer(
            (make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numbers),
            (make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")), text),
        )
        head = LogisticRegression(max_iter=5000) if kind == "logistic" else RidgeCV(alphas=np.logspace(-3, 3, 13))
        model = make_pipeline(prepare, head)
        x, y = features.iloc, frame[target].to_numpy()
        model.fit(x[parts["train"]], y[parts["train"]])
        test_x, test_y = x[parts["test"]], y[parts["test"]]
        if kind == "logistic":
            scores = classification_scores(model, test_x, test_y, positive)
            return {
                "logistic": scores["auroc" if positive else "acc"],
                **({"logistic, acc": scores["acc"]} if positive else {}),
            }
        return {"ridge": rmse(test_y, model.predict(test_x))}

    return baseline


def sunspot_baselines(data: dict) -> dict[str, float]:
    from sklearn.linear_model import RidgeCV

    windows, targets, parts = data["windows"], data["targets"], data["parts"]
    train, test = parts["train"], parts["test"]
    ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(windows[train], targets[train])
    return {
        "persistence": rmse(targets[test], windows[test, -1]),
        "ridge on lags": rmse(targets[test], ridge.predict(windows[test])),
    }


def digits_baseline(data: dict) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, parts = data["x"], data["y"], data["parts"]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    model.fit(x[parts["train"]], y[parts["train"]])
    return {"logistic": classification_scores(model, x[parts["test"]], y[parts["test"]])["acc"]}


def _load_breast_cancer(**kwargs: object) -> object:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(**kwargs)


def _load_diabetes(**kwargs: object) -> object:
    from sklearn.datasets import load_diabetes

    return load_diabetes(**kwargs)


CASES = {
    case.name: case
    for case in [
        Case(
            "penguins", "multiclass", "tabular", "palmerpenguins, 344 rows x 7 columns (2 text), 19 empty cells",
            write_penguins, ["--data.target.columns", "[species]"], table_baseline("logistic"), "acc",
        ),
        Case(
            "breast_cancer", "binary", "tabular", "scikit-learn breast cancer, 569 rows x 30 numbers: malignant",
            write_sklearn_table(_load_breast_cancer, "diagnosis", ["malignant", "benign"]),
            ["--data.target.columns", "[diagnosis]", "--data.target.classes", "[benign, malignant]"],
            table_baseline("logistic", positive="malignant"), "auroc",
        ),
        Case(
            "diabetes", "regression", "tabular", "scikit-learn diabetes (raw units), 442 rows x 10 numbers",
            write_sklearn_table(_load_diabetes, "progression", None), ["--data.target.columns", "[progression]"],
            table_baseline("ridge"), "rmse",
        ),
        Case(
            "sunspots", "regression", "sequence", f"statsmodels sunspots 1700-2008: {WINDOW}-year windows -> next year",
            write_sunspots,
            ["--data.target.columns", "[target]", "--data.sequence.column", "series", "--data.sequence.kind",
             "numeric", "--data.sequence.max_length", str(WINDOW)],
            sunspot_baselines, "rmse",
        ),
        Case(
            "digits", "multiclass", "image", "scikit-learn digits, 1797 8x8 images upscaled to 32 px, class folders",
            write_digits, ["--data.image.size", "32"], digits_baseline, "acc",
            configs=["configs/default.yaml", "configs/toy.yaml"],
        ),
    ]
}  # fmt: skip


# --- one case ----------------------------------------------------------------------------------------------------
def render(output_dir: Path, **answers: str) -> Path:
    """`cookiecutter --no-input TEMPLATE key=value ...` into the empty `output_dir`; return the project."""
    context = [f"{key}={value}" for key, value in answers.items()]
    command = [sys.executable, "-m", "cookiecutter", "--no-input", str(TEMPLATE), "--output-dir", str(output_dir)]
    subprocess.run([*command, *context], cwd=output_dir, check=True, capture_output=True, text=True)
    (project,) = [path for path in output_dir.iterdir() if path.is_dir()]
    return project


def newest_run(root: Path, command: str) -> Path:
    return max((root / "runs").glob(f"*-{command}-*"), key=lambda path: path.stat().st_mtime)


def run_project(project: Project, *args: str) -> str:
    """Run a project command in its folder; its output (stdout + stderr), or an error with the output's tail."""
    result = subprocess.run(
        project.command(*args), cwd=project.root, env=measured_env(), capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed ({result.returncode}):\n{output[-4000:]}")
    return output


def run_case(case: Case, workdir: Path, extra_fit_args: list[str] | None = None) -> Result:
    """Render, write the data, fit with the default config (only data keys changed), test, and the baseline."""
    folder = workdir / case.name
    folder.mkdir(parents=True)
    project = install(render(folder, task_type=case.task_type, modality=case.modality))
    data = case.write(project.root / "data" / "real")
    baselines = case.baseline(data)  # first: seconds, where the fit takes minutes
    config = [part for path in case.configs for part in ("--config", path)]
    data_args = ["--data.root", "data/real", "--data.num_workers", "0", *case.data_args]
    output = run_project(project, "fit", *config, *data_args, *(extra_fit_args or []))
    summary = json.loads((newest_run(project.root, "fit") / "summary.json").read_text(encoding="utf-8"))
    run_project(project, "test", *config, *data_args, "--ckpt_path", "best")
    metrics = json.loads((newest_run(project.root, "test") / "test_metrics.json").read_text(encoding="utf-8"))
    inferred = next((line for line in output.splitlines() if "data.tabular inferred from" in line), "")
    return Result(
        case=case,
        python=project.python,
        project=metrics,
        baselines=baselines,
        warning=(summary.get("baseline_comparison") or {}).get("warning") or None,
        seconds=summary["seconds"],
        epochs=summary["epochs"],
        inferred=inferred,
    )


def result_row(result: Result) -> list[str]:
    case, metric = result.case, result.case.metric
    value = result.project[f"test/{metric}"]
    extra = f" (acc {result.project['test/acc']:.3f})" if metric == "auroc" and "test/acc" in result.project else ""
    baselines = ", ".join(f"{name} {score:.3f}" for name, score in result.baselines.items())
    worse = result.gap() > 0
    verdict = f"{'worse' if worse else 'better or equal'} ({-result.gap():+.3f})"
    return [
        f"{case.task_type} / {case.modality}",
        case.name,
        f"test {metric} {value:.3f}{extra}",
        baselines,
        verdict,
        "yes" if result.warning else "no",
        f"{result.epochs} epochs, {result.seconds:.0f} s",
    ]


HEADERS = ["task / input", "data", "project, default.yaml", "scikit-learn baseline (test)", "project vs best baseline",
           "fit's baseline warning", "fit"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--keep", type=Path, default=None, help="render into this folder and keep it (default: temp)")
    args = parser.parse_args()
    cases = [CASES[name] for name in args.cases.split(",")]
    conditions = [f"1-min load average {load_1min():.2f} when the runs started (fit seconds depend on it)"]
    results = []
    with OtherCpuUse() as other, tempfile.TemporaryDirectory(prefix="dl-template-real-") as tmp:
        workdir = args.keep or Path(tmp)
        for case in cases:
            print(f"{case.name}: {case.task_type} / {case.modality} ...", flush=True)
            start = time.perf_counter()
            results.append(run_case(case, workdir))
            print(f"  {' | '.join(result_row(results[-1]))}  [{time.perf_counter() - start:.0f} s]", flush=True)
        machine = machine_description(results[-1].python)
    conditions.append(other.line())
    table = markdown_table(HEADERS, [result_row(result) for result in results])
    notes = [f"- {r.case.name}: {r.inferred}" for r in results if r.inferred]
    notes += [f"- {r.case.name}: the fit warned: {r.warning}" for r in results if r.warning]
    print("\n" + table + ("\n\n" + "\n".join(notes) if notes else ""))
    method = [
        "each case renders the template for its task type and modality, writes the dataset in the documented "
        "format (60/20/20 split, seeded and stratified; the series in time order) and fits with "
        "configs/default.yaml changing only data.* keys (digits: + configs/toy.yaml, the CPU preset: no "
        "pretrained weights offline)",
        "project: `test --ckpt_path best` (the kept checkpoint); baseline: scikit-learn fitted on the same train "
        "split, scored on the same test split (LogisticRegression / RidgeCV on standardized columns, text one-hot, "
        "missing cells imputed; the series also persistence, digits the 64 raw pixels)",
        "'worse' compares with the best baseline of the row; the warning column says whether the fit printed its "
        "own baseline warning (summary.json baseline_comparison.warning, measured on val)",
        *(f"data: {case.name}: {case.data}" for case in cases),
        *(note[2:] for note in notes),
    ]
    write_results("real_data", "Real data, default settings, against a scikit-learn baseline", table, method,
                  conditions, machine)  # fmt: skip


if __name__ == "__main__":
    main()
