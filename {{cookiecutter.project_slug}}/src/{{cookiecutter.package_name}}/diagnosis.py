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
come from callbacks/diagnosis.py (after fit) or the `diagnose` command (on a checkpoint).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

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

NEXT_STEPS = {
    "avoidable_bias": [
        "Make the model bigger: a larger `model.backbone` (e.g. resnet18 -> resnet50), or pretrained weights "
        "(`model.pretrained: true`).",
        "Train longer: raise `trainer.max_epochs`.",
        "Tune the optimizer: `model.lr` first (too high and too low both under-fit), then the warmup "
        "(`model.warmup_fraction`).",
        "Regularize less: lower `model.weight_decay`, `model.dropout`, `model.label_smoothing`; weaker "
        "augmentation (`data.augment: false`).",
        "Try another architecture, and look at which training classes the model gets wrong.",
    ],
    "variance": [
        "Get more training data.",
        "Augment the data (`data.augment: true`).",
        "Regularize more: raise `model.weight_decay`, `model.dropout`, `model.label_smoothing`.",
        "Stop early: the best checkpoint by the optimizing metric is already kept (`checkpoint.monitor`); "
        "fewer epochs also help.",
        "A smaller model, or a pretrained backbone that needs less data.",
    ],
    "data_mismatch": [
        "Error analysis of the mismatch: look at worst_examples.png and the most-confused pairs and find how "
        "val images differ from training images.",
        "Make the training data more like val/test: collect data from the val/test distribution and add it to train.",
        "Synthesize the difference: augmentation or rendered data that mimics the val/test conditions "
        "(lighting, blur, noise, framing), checking it covers more than one narrow case.",
        "Fine-tune on a small labelled set from the val/test distribution (domain adaptation).",
    ],
    "val_overfitting": [
        "Use a bigger val set (`data.val_fraction`, or more files in val/).",
        "Tune fewer decisions on val; keep the test set for the final estimate only.",
    ],
}
NOT_SEPARABLE_STEP = (
    "Hold out a train-dev split (`data.train_dev_fraction: 0.1`) to tell over-fitting from data mismatch: "
    "val - train mixes the two."
)
NOTHING_DOMINANT = [
    "No gap is above the tolerance: the model is as good as the reference on every split.",
    "If a better human-level (or Bayes) error estimate exists, set it as `reference_error`; otherwise look at "
    "harder data or a stricter metric.",
]


@dataclass(frozen=True)
class SplitErrors:
    """Error (1 - accuracy for classification) on each split; train_dev and test are optional."""

    reference: float
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


def diagnose(
    errors: SplitErrors,
    tolerance: float = 0.01,
    reference_source: str = "",
    sizes: dict[str, int] | None = None,
) -> Diagnosis:
    """Gaps between consecutive splits, the dominant problem and what to try next for it."""
    separable = errors.train_dev is not None
    gaps = {"avoidable_bias": errors.train - errors.reference}
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
        steps = [NOT_SEPARABLE_STEP, *NEXT_STEPS["variance"], *NEXT_STEPS["data_mismatch"][:2]]
    else:
        steps = list(NEXT_STEPS[dominant])

    notes = []
    if not separable:
        notes.append(
            "No train-dev split: variance and data mismatch are not separable; the variance row is val - train "
            "and holds both (set `data.train_dev_fraction` to split them)."
        )
    if gaps["avoidable_bias"] < -tolerance:
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
            stderr = standard_error(error, n)
            if stderr > tolerance:
                notes.append(
                    f"The {split} error is known to about +/-{stderr:.1%} ({n} samples, one standard error): "
                    "gaps of that size can be noise."
                )
    return Diagnosis(errors, gaps, dominant, steps, above, tolerance, reference_source, sizes, notes)


def standard_error(error: float, n: int) -> float:
    """Standard error of an error rate measured on n samples (binomial), floored at one error in n."""
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


def to_markdown(diagnosis: Diagnosis) -> str:
    """The table of errors, the gaps and the next steps, as Markdown."""
    errors, sizes = diagnosis.errors, diagnosis.sizes
    reference = "reference" + (f" ({diagnosis.reference_source})" if diagnosis.reference_source else "")
    lines = ["| split | error | samples |", "|---|---:|---:|", f"| {reference} | {errors.reference:.2%} | |"]
    for split in ("train", "train_dev", "val", "test"):
        error = getattr(errors, split)
        if error is not None:
            lines.append(f"| {split.replace('_', '-')} | {error:.2%} | {sizes.get(split, '')} |")
    lines += ["", "| gap | value | meaning |", "|---|---:|---|"]
    for name in PROBLEMS:
        if name not in diagnosis.gaps:
            continue
        label, meaning = GAP_LABELS[name], MEANINGS[name]
        if name == "variance" and errors.train_dev is None:
            label, meaning = "variance + data mismatch = val - train", "over-fitting or distribution shift"
        marker = " **<- dominant**" if name == diagnosis.dominant else ""
        lines.append(f"| {label} | {diagnosis.gaps[name]:+.2%} | {meaning}{marker} |")
    lines += ["", f"**Dominant problem: {title(diagnosis)}** (tolerance {diagnosis.tolerance:.1%})", ""]
    lines += ["Next steps, in the order to try them:", ""]
    lines += [f"{i}. {step}" for i, step in enumerate(diagnosis.next_steps, 1)]
    if len(diagnosis.to_address) > 1:
        order = " -> ".join(name.replace("_", " ") for name in diagnosis.to_address)
        lines += ["", f"Gaps above the tolerance, in the order to address them: {order}."]
    if diagnosis.notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in diagnosis.notes]
    return "\n".join(lines) + "\n"
