"""The task objects on their own: construction, loss at initialization, metrics, error, prediction rows, and what
they tell the machinery (baseline constants, how an example's error reads).

The project keeps only the task module(s) it was rendered for, so tasks whose module is missing are skipped.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from {{ cookiecutter.package_name }}.tasks import Task, build_task, load_task_class

NAMES = {
    "multiclass": ["cat", "dog", "bird"],
    "binary": ["healthy", "sick"],
    "multilabel": ["red", "green", "blue"],
    "regression": ["price", "age"],
}
STATS = {"mean": [10.0, -5.0], "std": [2.0, 0.5]}
# Each task's own options (the config's model.init_args.task.init_args); another task's are refused.
OPTIONS = {
    "multiclass": {"label_smoothing": 0.1},
    "binary": {"pos_weight": 2.0},
    "multilabel": {},
    "regression": {"loss": "huber"},
}
BEST = {
    "multiclass": {"acc": 1.0, "f1": 1.0},
    "binary": {"acc": 1.0, "auroc": 1.0, "f1": 1.0},
    "multilabel": {"f1": 1.0, "map": 1.0},
    "regression": {"mae": 0.0, "rmse": 0.0, "r2": 1.0},
}
ROW_KEYS = {
    "multiclass": ["prediction", "confidence", "prob_cat", "prob_dog", "prob_bird"],
    "binary": ["prediction", "probability", "confidence"],
    "multilabel": ["predicted", "prob_red", "prob_green", "prob_blue"],
    "regression": ["pred_price", "pred_age"],
}


def present(name: str) -> bool:
    return importlib.util.find_spec(f"{{ cookiecutter.package_name }}.tasks.{name}") is not None


def if_present(name: str, *rest: object) -> object:
    """A test case that is skipped when the project has no tasks/<name>.py."""
    return pytest.param(name, *rest, marks=pytest.mark.skipif(not present(name), reason=f"no tasks/{name}.py"))


TASKS = [if_present(name) for name in NAMES]


def perfect(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs, target) of a batch the network gets exactly right, with every class / label present."""
    if name == "multiclass":
        target = torch.tensor([0, 1, 2, 0, 1, 2])
        return torch.nn.functional.one_hot(target, 3).float() * 10, target
    if name == "binary":
        target = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
        return (2 * target - 1).unsqueeze(1) * 10, target
    if name == "multilabel":
        target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        return (2 * target - 1) * 10, target
    target = torch.tensor([[0.5, -1.0], [-1.5, 0.2], [1.0, 1.3], [0.0, -0.5]])
    return target.clone(), target


@pytest.mark.parametrize("name", TASKS)
def test_build_task_takes_its_own_options(name: str) -> None:
    task = build_task(name, NAMES[name], target_stats=STATS, **OPTIONS[name])
    assert task.class_names == NAMES[name] and task.name == name and load_task_class(name) is type(task)
    assert task.num_outputs == (1 if name == "binary" else len(NAMES[name]))
    assert task.mode in ("min", "max") and task.monitor in BEST[name]
    assert set(task.metrics().keys()) == set(BEST[name])
    with pytest.raises(TypeError):
        build_task(name, NAMES[name], dice_weight=1.0)  # segmentation's option
    # Unbound (as the config builds it), then sized by the data, as the Model does.
    unbound = load_task_class(name)(**OPTIONS[name])
    assert unbound.num_outputs == 0 and unbound.bind(NAMES[name], STATS).class_names == NAMES[name]


@pytest.mark.parametrize("name", TASKS)
def test_loss_of_near_zero_outputs_is_chance(name: str) -> None:
    task = build_task(name, NAMES[name])
    outputs, target = perfect(name)
    near_zero = torch.randn(outputs.shape, generator=torch.Generator().manual_seed(0)) * 1e-4
    if name == "regression":
        target = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])  # unit-variance targets: MSE at 0 is exactly 1
        near_zero = near_zero[:2]
    assert task.loss(near_zero, target).item() == pytest.approx(task.chance_loss, rel=1e-3)
    assert task.per_sample_loss(near_zero, target).shape == (len(target),)


@pytest.mark.parametrize("name", TASKS)
def test_perfect_predictions_score_best(name: str) -> None:
    task = build_task(name, NAMES[name], target_stats=STATS)
    outputs, target = perfect(name)
    metrics = task.metrics()
    metrics.update(*task.metric_inputs(outputs, target))
    values = {key: value.item() for key, value in metrics.compute().items()}
    assert values == pytest.approx(BEST[name], abs=1e-4)
    assert task.error(outputs, target) == 0.0
    assert task.error(-outputs if name != "multiclass" else outputs.roll(1, dims=1), target) > 0.5


@pytest.mark.parametrize("name", TASKS)
def test_prediction_rows(name: str) -> None:
    task = build_task(name, NAMES[name], target_stats=STATS)
    outputs, _ = perfect(name)
    rows = task.prediction_rows(task.activation(outputs))
    assert len(rows) == len(outputs)
    assert all(list(row) == ROW_KEYS[name] for row in rows)


@pytest.mark.skipif(not present("binary"), reason="no tasks/binary.py")
def test_binary_rows_name_the_positive_class() -> None:
    task = build_task("binary", NAMES["binary"])
    rows = task.prediction_rows(torch.tensor([[0.9], [0.2]]))
    assert rows == [
        {"prediction": "sick", "probability": 0.9, "confidence": 0.9},
        {"prediction": "healthy", "probability": 0.2, "confidence": 0.8},
    ]
    weighted = build_task("binary", NAMES["binary"], pos_weight=3.0)
    zero, positive = torch.zeros(1, 1), torch.ones(1)
    assert weighted.loss(zero, positive).item() == pytest.approx(3 * math.log(2))


@pytest.mark.skipif(not present("multilabel"), reason="no tasks/multilabel.py")
def test_multilabel_width_and_single_label() -> None:
    task = build_task("multilabel", NAMES["multilabel"])
    with pytest.raises(ValueError, match=r"width 2.*3"):
        task.loss(torch.zeros(4, 3), torch.zeros(4, 2))
    rows = task.prediction_rows(torch.tensor([[0.9, 0.1, 0.7], [0.1, 0.2, 0.3]]))
    assert [row["predicted"] for row in rows] == ["red|blue", ""]
    single = build_task("multilabel", ["spam"])  # torchmetrics' multilabel metrics need 2+ labels
    metrics = single.metrics()
    metrics.update(*single.metric_inputs(torch.tensor([[5.0], [-5.0]]), torch.tensor([[1.0], [0.0]])))
    assert metrics.compute()["map"].item() == pytest.approx(1.0)


@pytest.mark.skipif(not present("regression"), reason="no tasks/regression.py")
def test_regression_metrics_in_target_units_loss_in_standardized_units() -> None:
    task = build_task("regression", NAMES["regression"], target_stats=STATS)
    target = torch.tensor([[0.5, -1.0], [-1.5, 0.2], [1.0, 1.3], [0.0, -0.5]])
    outputs = target + 1.0  # off by one std on every output: 2.0 for price, 0.5 for age
    assert task.loss(outputs, target).item() == pytest.approx(1.0)
    assert task.error(outputs, target) == pytest.approx(1.0)
    metrics = task.metrics()
    metrics.update(*task.metric_inputs(outputs, target))
    values = metrics.compute()
    assert values["mae"].item() == pytest.approx((2.0 + 0.5) / 2)
    assert values["rmse"].item() == pytest.approx(math.sqrt((4.0 + 0.25) / 2))
    assert task.activation(torch.zeros(1, 2)).tolist() == [STATS["mean"]]
    assert task.prediction_rows(torch.tensor([[12.5, -4.0]])) == [{"pred_price": 12.5, "pred_age": -4.0}]
    huber = build_task("regression", NAMES["regression"], loss="huber")
    assert huber.loss(torch.zeros(2, 2), torch.tensor([[1.0, -1.0], [-1.0, 1.0]])).item() == pytest.approx(0.5)
    assert huber.chance_loss == 0.5
    single = build_task("regression", ["y"], target_stats={"mean": [3.0], "std": [2.0]})
    metrics = single.metrics()
    metrics.update(*single.metric_inputs(torch.tensor([[0.0], [1.0], [-1.0]]), torch.tensor([[0.0], [1.0], [-1.0]])))
    assert metrics.compute()["r2"].item() == pytest.approx(1.0)


BAD_ARGS = [
    ("multiclass", ["only"], {}),
    ("binary", ["a", "b", "c"], {}),
    ("binary", ["a"], {}),
    ("binary", ["a", "b"], {"pos_weight": 0.0}),
    ("multilabel", [], {}),
    ("regression", ["y"], {"loss": "l1"}),
    ("regression", ["y", "z"], {"target_stats": {"mean": [0.0], "std": [1.0]}}),
    ("regression", ["y"], {"target_stats": {"mean": [0.0], "std": [0.0]}}),
]


@pytest.mark.parametrize(("name", "names", "options"), [if_present(*case) for case in BAD_ARGS])
def test_bad_construction_raises(name: str, names: list[str], options: dict) -> None:
    with pytest.raises(ValueError):
        build_task(name, names, **options)


# The best constant outputs for these train targets, as the majority baseline predicts them.
CONSTANTS = {
    "multiclass": (torch.tensor([0, 2, 2, 2]), [math.log(0.25), math.log(1e-8), math.log(0.75)]),
    "binary": (torch.tensor([1.0, 1.0, 0.0, 1.0]), [math.log(3)]),
    "multilabel": (torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]),
                   [math.log(3), -math.log(3), 0.0]),
    "regression": (torch.tensor([[1.0, -2.0], [-1.0, 4.0]]), [0.0, 1.0]),
}  # fmt: skip
MAJORITY = {"multiclass": "bird", "binary": "sick", "multilabel": None, "regression": None}


@pytest.mark.parametrize("name", TASKS)
def test_the_majority_baseline_is_the_best_constant(name: str) -> None:
    task = build_task(name, NAMES[name], target_stats=STATS)
    targets, expected = CONSTANTS[name]
    constant = task.constant_outputs(targets)
    assert constant.tolist() == pytest.approx(expected, abs=1e-5)
    assert task.majority_class(constant) == MAJORITY[name]
    assert task.describe_constant(constant) != Task.describe_constant(task, constant)  # the task's own words


# One sample's raw output and target, and how its error reads (regression: in target units, STATS).
EXAMPLES = {
    "multiclass": (torch.tensor([0.0, 3.0, 0.0]), torch.tensor(1), {"true": "dog", "predicted": "dog"}),
    "binary": (torch.tensor([2.0]), torch.tensor(0.0), {"true": "healthy", "predicted": "sick", "confidence": 0.8808}),
    "multilabel": (torch.tensor([1.0, -1.0, 1.0]), torch.tensor([1.0, 1.0, 0.0]),
                   {"true": "red, green", "predicted": "red, blue"}),
    "regression": (torch.tensor([0.0, 0.0]), torch.tensor([1.0, -2.0]), {"true": "12, -6", "predicted": "10, -5"}),
}  # fmt: skip


@pytest.mark.parametrize("name", TASKS)
def test_an_example_error_in_words(name: str) -> None:
    task = build_task(name, NAMES[name], target_stats=STATS)
    output, target, expected = EXAMPLES[name]
    assert expected.items() <= task.describe_example(output, target).items()
    assert task.error_meaning != Task.error_meaning and task.look_at != Task.look_at and task.output_meaning
