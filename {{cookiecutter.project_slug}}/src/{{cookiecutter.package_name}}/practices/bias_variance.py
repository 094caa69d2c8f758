"""Bias, variance, data mismatch: which problem to work on next, read off the errors on each split.

    reference  (human-level error: a proxy for the Bayes error)
        avoidable bias   = train - reference        under-fitting
    train
        variance         = train_dev - train        over-fitting
    train_dev  (held out of the training distribution, never trained on)
        data mismatch    = val - train_dev          training data unlike val/test
    val
        val overfitting  = test - val               too many decisions tuned on val
    test

Without a train-dev split, val - train mixes variance and data mismatch. Pure logic, no torch: the errors
come from callbacks/diagnosis.py (after fit) or the `diagnose` command (on a checkpoint). The task (tasks/) says
what its error means and how to write it, and which of its own knobs and analyses the next steps name.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..tasks import Task

# The order to address problems in when several show up: fit the training set first, then generalize to its
# distribution, then to the val/test distribution, and only then worry about having overfit val.
PROBLEMS = ("avoidable_bias", "variance", "data_mismatch", "val_overfitting")

GAP_LABELS = {
    "avoidable_bias": "avoidable bias = train - reference",
    "variance": "variance = train-dev - train",
    "data_mismatch": "data mismatch = val - train-dev",
    "val_overfitting": "val overfitting = test - val",
}
MEANINGS = {
    "avoidable_bias": "under-fitting",
    "variance": "over-fitting",
    "data_mismatch": "distribution shift between training data and val",
    "val_overfitting": "over-fitting to the val set",
}


def format_error(value: float, rate: bool = True, sign: bool = False) -> str:
    """An error or a gap: a percentage for error rates, a plain number otherwise (regression's standardized RMSE;
    `Task.error_is_rate`)."""
    if not rate:
        return f"{value:+.4f}" if sign else f"{value:.4f}"
    return f"{value:+.2%}" if sign else f"{value:.2%}"


def next_steps(problem: str, inputs: tuple[str, ...] = ("image",), task: Task | None = None) -> list[str]:
    """What to try for `problem`, in order, naming the config keys that exist for these inputs and this task
    (its own regularizers, what of its error analysis to look at; None: none of a task's)."""
    image = "image" in inputs
    learned = [name for name in inputs if name in ("tabular", "sequence")]  # inputs with a sized encoder
    several = len(inputs) > 1
    mixable = list(inputs) == ["image"] and hasattr(task, "soft_loss")  # mixing.py: a task with soft targets
    regularizers = [
        "`model.optimizer.weight_decay`",
        "the head's `dropout` (`model.network.init_args.head`)",
        *(task.regularizers if task is not None else ()),
    ]
    if mixable:
        regularizers.append("`mixing.mixup_alpha` / `mixing.cutmix_alpha`")
    regularizers = ", ".join(regularizers)
    analysis = task.look_at if task is not None else "the error analysis"
    worst = "worst_examples.png and the worst-examples table" if image else "the worst-examples table"

    bigger = []
    if image:
        bigger.append(
            "a larger image `backbone` (e.g. resnet18 -> resnet50) or pretrained weights (`pretrained: true`) in "
            "the image encoder"
        )
    if learned:
        bigger.append(
            f"a wider {' and '.join(learned)} encoder (its `hidden_dim` in `model.network.init_args.encoders`)"
        )
    if "sequence" in inputs:
        bigger.append("the sequence encoder's `kind: transformer`")
    if several:
        bigger.append(
            "a wider fusion (its `fusion_dim`) or another `model.network.init_args.fusion` (concat, late, gated)"
        )
    smaller = []
    if image:
        smaller.append("a smaller image `backbone`, or a pretrained one that needs less data")
    if learned:
        smaller.append("a smaller encoder `hidden_dim`")
    less_regularization = f"Regularize less: lower {regularizers}"
    if image:
        less_regularization += "; weaker augmentation (`data.image.augment: light` or `none`)"
    more_data_like_val = []
    if image:
        more_data_like_val.append(
            "images: augmentation or rendered data that mimics the val/test conditions (lighting, blur, noise, framing)"
        )
    if "tabular" in inputs:
        more_data_like_val.append(
            "tabular: compare each column between train and val (units, ranges, missing-value "
            "rates, categories unseen in train) and fix the pipeline that differs"
        )
    if "sequence" in inputs:
        more_data_like_val.append(
            "sequences: compare lengths and vocabulary (the unknown-token rate) between train "
            "and val; raise `data.sequence.max_length` if val sequences are longer"
        )
    steps = {
        "avoidable_bias": [
            "Make the model bigger: " + ("; ".join(bigger) or "more capacity in the encoders") + ".",
            "Train longer: raise `trainer.max_epochs`.",
            "Tune the optimizer: `model.optimizer.lr` first (too high and too low both under-fit), then the warmup "
            "(`model.lr_scheduler.warmup_fraction`).",
            less_regularization + ".",
            "Try another architecture, and look at which training samples the model gets wrong.",
        ],
        "variance": [
            "Get more training data.",
            *(["Augment the data more (`data.image.augment: strong`)."] if image else []),
            *(["Mix training images: `mixing.mixup_alpha` / `mixing.cutmix_alpha`."] if mixable else []),
            *(
                [
                    "Drop feature columns that should not matter (ids, leaky or noisy columns) from "
                    "`data.tabular.numeric_columns` / `data.tabular.categorical_columns`."
                ]
                if "tabular" in inputs
                else []
            ),
            f"Regularize more: raise {regularizers}.",
            "Stop early: the best checkpoint by the optimizing metric is already kept (`checkpoint.monitor`); "
            "fewer epochs also help.",
            "A smaller model: " + ("; ".join(smaller) or "fewer parameters") + ".",
        ],
        "data_mismatch": [
            f"Error analysis of the mismatch: look at {worst} and {analysis} in diagnosis.md, and find how val "
            "samples differ from training samples.",
            "Make the training data more like val/test: collect data from the val/test distribution and add it to "
            "train.",
            "Synthesize or correct the difference, checking it covers more than one narrow case"
            + (": " + "; ".join(more_data_like_val) if more_data_like_val else "")
            + ".",
            "Fine-tune on a small labelled set from the val/test distribution (domain adaptation).",
        ],
        "val_overfitting": [
            "Use a bigger val set (`data.splits.val_fraction`, or more samples in the val split).",
            "Tune fewer decisions on val; keep the test set for the final estimate only.",
        ],
    }
    return steps[problem]


NOT_SEPARABLE_STEP = (
    "Hold out a train-dev split (`data.splits.train_dev_fraction: 0.1`) to tell over-fitting from data mismatch: "
    "val - train mixes the two."
)
NOTHING_DOMINANT = [
    "No gap is above the tolerance: the model is as good as the reference on every split.",
    "If a better human-level (or Bayes) error estimate exists, set it as `reference_error`; otherwise look at "
    "harder data or a stricter metric.",
]


@dataclass(frozen=True)
class SplitErrors:
    """The task's error (`Task.error`, in words `Task.error_meaning`; 1 - accuracy for classification) on each
    split; train_dev and test are optional."""

    reference: float | None  # None: unknown (no human-level error configured, no baseline run)
    train: float
    val: float
    train_dev: float | None = None
    test: float | None = None


@dataclass
class Diagnosis:
    errors: SplitErrors
    gaps: dict[str, float]  # only the gaps the splits at hand can measure
    dominant: str | None  # the largest gap above the tolerance
    next_steps: list[str]  # for the dominant problem, in the order to try them
    to_address: list[str]  # every gap above the tolerance, in the order to address them
    tolerance: float
    reference_source: str = ""
    sizes: dict[str, int] = field(default_factory=dict)  # samples per split, for the noise in each error
    notes: list[str] = field(default_factory=list)
    task: str = ""  # the task's name (Task.name)
    inputs: list[str] = field(default_factory=list)  # the model's inputs: which knobs the next steps name


def diagnose(
    errors: SplitErrors,
    tolerance: float = 0.01,
    reference_source: str = "",
    sizes: dict[str, int] | None = None,
    task: Task | None = None,
    inputs: tuple[str, ...] | list[str] = ("image",),
) -> Diagnosis:
    """Gaps between consecutive splits, the dominant problem and what to try next for it.

    `task` and `inputs` (the project's bound task and input modalities) only change the wording: whether the
    error is a rate, and which config keys the next steps name. None: an error rate, no task's own knobs.
    """
    inputs = tuple(inputs)
    rate = task.error_is_rate if task is not None else True
    separable = errors.train_dev is not None
    # Against an unknown reference there is no avoidable bias to measure: never call it under-fitting against 0.
    gaps = {} if errors.reference is None else {"avoidable_bias": errors.train - errors.reference}
    if separable:
        gaps["variance"] = errors.train_dev - errors.train
        gaps["data_mismatch"] = errors.val - errors.train_dev
    else:
        gaps["variance"] = errors.val - errors.train
    if errors.test is not None:
        gaps["val_overfitting"] = errors.test - errors.val

    above = [name for name in PROBLEMS if name in gaps and gaps[name] > tolerance]
    # Largest gap wins; a tie goes to the problem to address first.
    dominant = max(above, key=lambda name: (gaps[name], -PROBLEMS.index(name))) if above else None
    if dominant is None:
        steps = list(NOTHING_DOMINANT)
    elif dominant == "variance" and not separable:
        steps = [
            NOT_SEPARABLE_STEP,
            *next_steps("variance", inputs, task),
            *next_steps("data_mismatch", inputs, task)[:2],
        ]
    else:
        steps = next_steps(dominant, inputs, task)

    notes = []
    if not separable:
        notes.append(
            "No train-dev split: variance and data mismatch are not separable; the variance row is val - train "
            "and holds both (set `data.splits.train_dev_fraction` to split them)."
        )
    if errors.reference is None:
        notes.append(
            "No reference error: avoidable bias (under-fitting) is unknown. Set the Diagnosis callback's "
            "`reference_error` to a human-level error, or run `baseline` (its best val error becomes the reference)."
        )
    elif gaps["avoidable_bias"] < -tolerance:
        notes.append(
            "Train error is below the reference error, so the reference is not a floor: avoidable bias is "
            "unknown (the Bayes error can be well below human-level error)."
        )
    if errors.test is None:
        notes.append("No test error: over-fitting to val cannot be measured.")
    sizes = dict(sizes or {})
    for split in ("train_dev", "val", "test"):
        error, n = getattr(errors, split), sizes.get(split)
        if error is not None and n:
            stderr = standard_error(error, n, rate=rate)
            if stderr > tolerance:
                notes.append(
                    f"The {split} error is known to about +/-{format_error(stderr, rate)} ({n} samples, one "
                    "standard error): gaps of that size can be noise."
                )
    name = task.name if task is not None else ""
    return Diagnosis(
        errors, gaps, dominant, steps, above, tolerance, reference_source, sizes, notes, name, list(inputs)
    )


def standard_error(error: float, n: int, rate: bool = True) -> float:
    """Standard error of an error measured on n samples.

    An error rate: binomial, floored at one error in n (pixels or labels of one sample are correlated, so n counts
    samples, which errs on the side of more noise). An RMSE (`rate=False`): about RMSE / sqrt(2n).
    """
    if not rate:
        return error / math.sqrt(2 * n)
    p = min(max(error, 1.0 / n), 1.0 - 1.0 / n) if n > 1 else 0.5
    return math.sqrt(p * (1 - p) / n)


def to_dict(diagnosis: Diagnosis) -> dict:
    return asdict(diagnosis)


def title(diagnosis: Diagnosis) -> str:
    if diagnosis.dominant is None:
        return "no gap above the tolerance"
    name = diagnosis.dominant
    if name == "variance" and diagnosis.errors.train_dev is None:
        return "variance or data mismatch (val - train)"
    return f"{name.replace('_', ' ')} ({MEANINGS[name]})"


def to_markdown(diagnosis: Diagnosis, task: Task | None = None) -> str:
    """The table of errors, the gaps and the next steps, as Markdown; `task` (the one diagnosed) says what the
    error means and how to write it (None: an error rate)."""
    errors, sizes = diagnosis.errors, diagnosis.sizes
    rate = task.error_is_rate if task is not None else True
    reference = "reference" + (f" ({diagnosis.reference_source})" if diagnosis.reference_source else "")
    lines = [f"error: {task.error_meaning if task is not None else 'the task error'}.", ""]
    lines += [
        "| split | error | samples |",
        "|---|---:|---:|",
        f"| {reference} | {'unknown' if errors.reference is None else format_error(errors.reference, rate)} | |",
    ]
    for split in ("train", "train_dev", "val", "test"):
        error = getattr(errors, split)
        if error is not None:
            lines.append(f"| {split.replace('_', '-')} | {format_error(error, rate)} | {sizes.get(split, '')} |")
    lines += ["", "| gap | value | meaning |", "|---|---:|---|"]
    for name in PROBLEMS:
        if name not in diagnosis.gaps:
            continue
        label, meaning = GAP_LABELS[name], MEANINGS[name]
        if name == "variance" and errors.train_dev is None:
            label, meaning = "variance + data mismatch = val - train", "over-fitting or distribution shift"
        marker = " **<- dominant**" if name == diagnosis.dominant else ""
        lines.append(f"| {label} | {format_error(diagnosis.gaps[name], rate, sign=True)} | {meaning}{marker} |")
    tolerance = format_error(diagnosis.tolerance, rate)
    lines += ["", f"**Dominant problem: {title(diagnosis)}** (tolerance {tolerance})", ""]
    lines += ["Next steps, in the order to try them:", ""]
    lines += [f"{i}. {step}" for i, step in enumerate(diagnosis.next_steps, 1)]
    if len(diagnosis.to_address) > 1:
        order = " -> ".join(name.replace("_", " ") for name in diagnosis.to_address)
        lines += ["", f"Gaps above the tolerance, in the order to address them: {order}."]
    if diagnosis.notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in diagnosis.notes]
    return "\n".join(lines) + "\n"
