"""Raw inputs -> the exported model's input arrays, and its outputs -> predictions, without this project's code.

`export` copies this file next to the model as `preprocess.py`, with `preprocess.json`: what the data readers
learned from the train split (normalization, statistics, vocabularies) and how they turn a raw image file, table
row or text into tensors. It needs numpy, and PIL for images; not torch, not the project. One row is a dict of
raw cells as in the training CSV (an image column holds a file path, relative to `root`, or a PIL image):

    import onnxruntime
    from preprocess import Preprocessor

    preprocess = Preprocessor.load("export", root="data")   # export/preprocess.json; image paths under data/
    session = onnxruntime.InferenceSession("export/model.onnx")
    arrays = preprocess([{"image": "cat.jpg"}, {"image": "dog.png"}])
    outputs = session.run(None, preprocess.feed(session, arrays))[0]
    print(preprocess.decode(outputs))   # the rows `predict` writes to predictions.csv

The project's tests check that this reproduces the readers (data/image.py, data/tabular.py, data/sequence.py)
exactly and `predict`'s outputs within float noise: change both together.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SPEC_FILE = "preprocess.json"
FLOAT32_MAX = float(np.finfo(np.float32).max)


class Preprocessor:
    """The preprocessing and output decoding that `spec` (the content of preprocess.json) describes."""

    def __init__(self, spec: Mapping[str, Any], root: str | Path = "."):
        self.spec = spec
        self.inputs: dict[str, Any] = dict(spec["inputs"])
        self.output: dict[str, Any] = dict(spec["output"])
        self.root = Path(root)

    @classmethod
    def load(cls, folder: str | Path, root: str | Path = ".") -> Preprocessor:
        """From `folder`/preprocess.json; relative image paths are read under `root`."""
        return cls(json.loads((Path(folder) / SPEC_FILE).read_text(encoding="utf-8")), root)

    @property
    def input_names(self) -> list[str]:
        """The model's inputs in order (the exported files take them in this order)."""
        return [name for key in sorted(self.inputs) for name in self.inputs[key]["inputs"]]

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """A batch of rows -> {input name: array [len(rows), ...]}, e.g. {"image": float32 [N, 3, H, W]}."""
        samples = [self.sample(row) for row in rows]
        return {name: np.stack([sample[name] for sample in samples]) for name in self.input_names}

    def sample(self, row: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """One row -> {input name: array}, without the batch dimension."""
        arrays: dict[str, np.ndarray] = {}
        for key in sorted(self.inputs):
            spec = self.inputs[key]
            if spec["kind"] == "image":
                arrays.update(image=read_image(spec, row[spec["column"]], self.root))
            elif spec["kind"] == "tabular":
                arrays.update(read_tabular(spec, row))
            elif spec["kind"] == "sequence":
                arrays.update(read_sequence(spec, row[spec["column"]]))
            else:
                raise ValueError(f"input {key!r}: no preprocessing for kind {spec['kind']!r}")
        return arrays

    @staticmethod
    def feed(session: Any, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The arrays an onnxruntime session takes (a file may leave out an input no layer reads)."""
        return {node.name: arrays[node.name] for node in session.get_inputs()}

    def decode(self, outputs: np.ndarray) -> list[dict[str, Any]]:
        """The model's outputs [N, ...] -> one dict per sample, with the columns of `predict`'s predictions.csv
        (a per-pixel decoding adds "mask": uint8 [H, W] class indices)."""
        decode = self.output.get("decode")
        if decode not in DECODERS:
            raise ValueError(f"no decoding {decode!r} for this model's output: read output.meaning in {SPEC_FILE}")
        names = self.output["class_names"]
        return [DECODERS[decode](out, names, self.output) for out in np.asarray(outputs, dtype=np.float64)]


def _argmax(out: np.ndarray, names: Sequence[str], output: Mapping[str, Any]) -> dict[str, Any]:
    """Probabilities of classes: the most probable one."""
    best = int(out.argmax())
    return {"prediction": names[best], "confidence": float(out[best])} | _probabilities(names, out)


def _threshold(out: np.ndarray, names: Sequence[str], output: Mapping[str, Any]) -> dict[str, Any]:
    """One probability, of names[1]: names[1] above the threshold, else names[0]."""
    p = float(out.reshape(()))
    positive = p > output.get("threshold", 0.5)
    return {"prediction": names[int(positive)], "probability": p, "confidence": max(p, 1 - p)}


def _thresholds(out: np.ndarray, names: Sequence[str], output: Mapping[str, Any]) -> dict[str, Any]:
    """One probability per label: every label above the threshold."""
    threshold = output.get("threshold", 0.5)
    predicted = "|".join(name for name, p in zip(names, out, strict=True) if p > threshold)
    return {"predicted": predicted} | _probabilities(names, out)


def _values(out: np.ndarray, names: Sequence[str], output: Mapping[str, Any]) -> dict[str, Any]:
    """Values in the targets' own units, one per target column."""
    return {f"pred_{name}": float(v) for name, v in zip(names, out, strict=True)}


def _pixel_argmax(out: np.ndarray, names: Sequence[str], output: Mapping[str, Any]) -> dict[str, Any]:
    """Probabilities of classes per pixel, [classes, H, W]: the class map and each class's share of pixels."""
    mask = out.argmax(axis=0)
    row = {f"pixels_{name}": float((mask == k).mean()) for k, name in enumerate(names)}
    return row | {"confidence": float(out.max(axis=0).mean()), "mask": mask.astype(np.uint8)}


DECODERS = {
    "argmax": _argmax,
    "threshold": _threshold,
    "thresholds": _thresholds,
    "values": _values,
    "pixel_argmax": _pixel_argmax,
}


def _probabilities(names: Sequence[str], out: np.ndarray) -> dict[str, float]:
    return {f"prob_{name}": float(p) for name, p in zip(names, out, strict=True)}


def read_image(spec: Mapping[str, Any], value: Any, root: Path = Path(".")) -> np.ndarray:
    """A file path (or a PIL image) -> float32 [3, H, W], as the project's evaluation transform computes it."""
    from PIL import Image  # only image inputs need PIL

    resample = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
    if isinstance(value, Image.Image):
        image = to_8_bit(value).convert(spec["convert"])
    else:
        with Image.open(root / str(value).strip()) as file:
            image = to_8_bit(file).convert(spec["convert"])
    width, height = image.size
    size = spec["resize_short_side"]
    short, long = min(width, height), max(width, height)
    new_long = int(size * long / short)  # torchvision's rule (the project's Resize)
    new_size = (size, new_long) if width <= height else (new_long, size)
    if new_size != image.size:
        image = image.resize(new_size, resample=resample[spec["interpolation"]])
    crop_height, crop_width = spec["center_crop"]
    if crop_width > image.width or crop_height > image.height:
        raise ValueError(f"image of {image.width}x{image.height} after resizing is smaller than the crop")
    left, top = round((image.width - crop_width) / 2), round((image.height - crop_height) / 2)
    image = image.crop((left, top, left + crop_width, top + crop_height))
    pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)  # [3, H, W]
    pixels = pixels * np.float32(1 / 255)
    mean = np.asarray(spec["mean"], dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec["std"], dtype=np.float32).reshape(-1, 1, 1)
    return (pixels - mean) / std


def to_8_bit(image: Any) -> Any:
    """16-bit and 32-bit integer images scaled from 0..65535 to 0..255, float images from 0..1; others unchanged."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        if pixels.min(initial=0) < 0 or pixels.max(initial=0) > 65535:
            raise ValueError("an integer image with values outside 16-bit 0..65535")
        pixels = pixels / 65535.0 * 255.0
    elif image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        if np.nanmin(pixels) < 0.0 or np.nanmax(pixels) > 1.0:
            raise ValueError("a float image with values outside 0..1")
        pixels = pixels * 255.0
    else:
        return image
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def is_missing(cell: Any, missing_values: Sequence[str]) -> bool:
    return cell is None or str(cell).strip().lower() in missing_values


def read_tabular(spec: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A row's cells -> {"tabular.numeric": float32 [2F], "tabular.categorical": int64 [K]}."""
    missing_values = spec["missing_values"]
    values, flags = [], []
    for column in spec["numeric_columns"]:
        cell = row.get(column["column"])
        if is_missing(cell, missing_values):
            values.append(0.0)  # the train mean, standardized
            flags.append(1.0)
            continue
        number = float(cell)
        if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
            raise ValueError(f"column {column['column']!r}: {cell!r} is not a finite number in float32's range")
        values.append((number - column["mean"]) / column["std"])
        flags.append(0.0)
    categorical = []
    for column in spec["categorical_columns"]:
        cell = row.get(column["column"])
        unknown = column["unknown_index"]
        categorical.append(unknown if cell is None else column["vocabulary"].get(str(cell).strip(), unknown))
    return {
        "tabular.numeric": np.asarray(values + flags, dtype=np.float64).astype(np.float32),
        "tabular.categorical": np.asarray(categorical, dtype=np.int64),
    }


def read_sequence(spec: Mapping[str, Any], cell: Any) -> dict[str, np.ndarray]:
    """A text or a series of numbers -> {"sequence.values": [T] int64 or [T, 1] float32, "sequence.mask": bool [T]}."""
    length = spec["max_length"]
    mask = np.zeros(length, dtype=bool)
    if spec["sequence_kind"] == "tokens":
        text = str(cell).lower() if spec["lowercase"] else str(cell)
        index = {token: i for i, token in enumerate(spec["vocabulary"])}
        tokens = re.findall(spec["token_pattern"], text)[:length]
        ids = [index.get(token, spec["unknown_index"]) for token in tokens] or [spec["unknown_index"]]
        values = np.full(length, spec["pad_index"], dtype=np.int64)
        values[: len(ids)] = ids
        mask[: len(ids)] = True
        return {"sequence.values": values, "sequence.mask": mask}
    numbers = [float(token) for token in str(cell).split()]
    if not numbers or not all(math.isfinite(number) for number in numbers):
        raise ValueError(f"{str(cell)[:40]!r} is not a series of finite numbers")
    numbers = numbers[-length:]  # a series keeps its most recent values
    values = np.full((length, 1), spec["pad_value"], dtype=np.float32)
    standardized = (np.asarray(numbers, dtype=np.float64) - spec["mean"]) / spec["std"]
    values[: len(numbers), 0] = standardized.astype(np.float32)
    mask[: len(numbers)] = True
    return {"sequence.values": values, "sequence.mask": mask}
