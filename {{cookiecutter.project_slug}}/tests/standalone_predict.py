"""What a deployer runs: the export folder's preprocess.py and model.onnx on raw CSV rows, with onnxruntime, numpy
and PIL only. tests/test_export.py runs it in a subprocess whose PYTHONPATH is the export folder alone, and this
script refuses to import torch and the project, so it cannot lean on either.

    python standalone_predict.py EXPORT_DIR ROWS_CSV DATA_ROOT OUT_DIR PACKAGE

writes OUT_DIR/predictions.json (the decoded rows, keyed like `predict`'s ids: "<csv name>:<line>") and
OUT_DIR/arrays.npz (the model's input arrays, its "outputs", and segmentation's "masks").
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any


class Refuse:
    """An import hook: the modules a deployment does not have raise ImportError."""

    def __init__(self, names: set[str]):
        self.names = names

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] in self.names:
            raise ImportError(f"{name} is not available where the model is deployed")


def main(export_dir: Path, rows_csv: Path, root: Path, out_dir: Path, package: str) -> None:
    refused = {"torch", "torchvision", "timm", "pytorch_lightning", "lightning", "torchmetrics", package}
    sys.meta_path.insert(0, Refuse(refused))
    import numpy as np
    import onnxruntime
    from preprocess import Preprocessor

    preprocess = Preprocessor.load(export_dir, root=root)
    with rows_csv.open(newline="", encoding="utf-8-sig") as file:
        rows = list(csv.DictReader(file))
    session = onnxruntime.InferenceSession(str(export_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    arrays = preprocess(rows)
    outputs = session.run(None, preprocess.feed(session, arrays))[0]
    decoded = preprocess.decode(outputs)
    masks = [row.pop("mask") for row in decoded if "mask" in row]
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "arrays.npz", outputs=outputs, **({"masks": np.stack(masks)} if masks else {}), **arrays)
    ids = [f"{rows_csv.name}:{line}" for line in range(2, len(rows) + 2)]  # the header is line 1
    (out_dir / "predictions.json").write_text(json.dumps(dict(zip(ids, decoded, strict=True))), encoding="utf-8")
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in refused)
    assert not loaded, f"imported {loaded}"
    print(f"{len(rows)} rows: {', '.join(f'{name} {array.shape}' for name, array in arrays.items())}")


if __name__ == "__main__":
    export_dir, rows_csv, root, out_dir, package = sys.argv[1:]
    main(Path(export_dir), Path(rows_csv), Path(root), Path(out_dir), package)
