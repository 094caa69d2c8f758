"""Sequence input: one CSV column holding a text (word tokens) or a time series (whitespace-separated numbers).

Everything the model relies on is learned from the train split only (the vocabulary, the mean and std of a
series), so validation and test words the model never saw map to the unknown token instead of leaking. Every
sample is padded or truncated to a fixed `max_length` with a mask, so the default collate can stack a batch and
the encoder can ignore the padding.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError
from .table import Row, parse_number

KINDS = ("tokens", "numeric")
PAD, UNKNOWN = 0, 1  # token ids reserved before the vocabulary; 0 is also the padding value of numeric series
TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")  # words, and each punctuation mark as its own token


def tokenize(text: str) -> list[str]:
    """Lowercased words and punctuation marks: "Don't stop!" -> ["don", "'", "t", "stop", "!"]."""
    return TOKEN_PATTERN.findall(text.lower())


class SequenceReader:
    """Reads the `column` of a row into {"sequence": {"values": [T] or [T, 1], "mask": bool [T]}}, T = max_length.

    kind "tokens": ids into a vocabulary of the train tokens seen at least `min_count` times (0 = padding,
    1 = unknown). kind "numeric": a one-channel series, standardized with the mean and std of the train steps.
    """

    def __init__(self, column: str = "sequence", kind: str = "tokens", max_length: int = 64, min_count: int = 1):
        if kind not in KINDS:
            raise ValueError(f"sequence kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        self.column = column
        self.kind = kind
        self.max_length = max_length
        self.min_count = min_count
        self.vocabulary: list[str] = []  # index -> token, starting with the reserved padding and unknown entries
        self.index: dict[str, int] = {}
        self.mean = 0.0
        self.std = 1.0
        self.fitted = False
        self._lengths: list[int] = []  # train lengths before truncation, for describe()
        # Parsing every cell once in check() and reusing it in read() keeps __getitem__ cheap (rows are immutable).
        self._parsed: dict[tuple[Path, int], list[str] | list[float]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # A copy in another process (a spawned loader or serving worker) re-parses what it reads: the cache of every
        # row of every split is not worth sending along.
        return {**self.__dict__, "_parsed": {}}

    def parse(self, row: Row) -> list[str] | list[float]:
        """The tokens or numbers of a row's cell, untruncated; DataError naming the cell if it is not valid."""
        key = (row.file, row.line)
        if not row.line:  # a row of no file line (a served request) is read once: nothing to cache
            return self._parse_cell(row)
        if key not in self._parsed:
            self._parsed[key] = self._parse_cell(row)
        return self._parsed[key]

    def _parse_cell(self, row: Row) -> list[str] | list[float]:
        text = row.get(self.column)
        return tokenize(text) if self.kind == "tokens" else self._parse_numbers(row, text)

    def _parse_numbers(self, row: Row, text: str) -> list[float]:
        numbers = []
        for token in text.split():
            # One NaN would turn every standardized value and the loss into NaN.
            numbers.append(parse_number(token, row.where(self.column), "a series is whitespace-separated numbers"))
        if not numbers:
            raise DataError(
                f"{row.where(self.column)}: the numeric sequence is empty (expected whitespace-separated numbers)"
            )
        return numbers

    def kept(self, items: list[str] | list[float]) -> list[str] | list[float]:
        """The steps a longer sequence keeps: a text its first max_length tokens (its beginning says what it is
        about), a numeric series its last max_length values (a forecast needs the most recent ones)."""
        return items[: self.max_length] if self.kind == "tokens" else items[-self.max_length :]

    def fit(self, rows: list[Row]) -> None:
        parsed = [self.parse(row) for row in rows]
        self._lengths = [len(items) for items in parsed]
        if self.kind == "tokens":
            counts = Counter(token for tokens in parsed for token in tokens)
            # Most frequent first, ties by token: the same data always gives the same ids (checkpoints stay valid).
            kept = sorted((token for token, n in counts.items() if n >= self.min_count), key=lambda t: (-counts[t], t))
            self.vocabulary = ["<pad>", "<unk>", *kept]
            self.index = {token: i for i, token in enumerate(self.vocabulary)}
        else:
            # Statistics of the steps the model actually sees (the last max_length of each series).
            steps = [x for numbers in parsed for x in self.kept(numbers)]
            self.mean = statistics.fmean(steps) if steps else 0.0
            std = statistics.pstdev(steps, self.mean) if len(steps) > 1 else 0.0
            self.std = std if std > 1e-12 else 1.0  # a constant series: centre it, do not divide by zero
        self.fitted = True

    def check(self, rows: list[Row]) -> None:
        for row in rows:
            self.parse(row)

    def read(self, row: Row, train: bool) -> dict[str, Any]:
        if not self.fitted:
            raise RuntimeError("SequenceReader.fit(train_rows) must run before read()")
        items = self.kept(self.parse(row))
        mask = torch.zeros(self.max_length, dtype=torch.bool)
        if self.kind == "tokens":
            # An empty text still gets one real step, so masked pooling and packed RNNs never see length 0.
            ids = [self.index.get(token, UNKNOWN) for token in items] or [UNKNOWN]
            values = torch.full((self.max_length,), PAD, dtype=torch.int64)
            values[: len(ids)] = torch.tensor(ids, dtype=torch.int64)
            mask[: len(ids)] = True
        else:
            values = torch.zeros(self.max_length, 1, dtype=torch.float32)
            values[: len(items), 0] = (torch.tensor(items, dtype=torch.float64) - self.mean).div(self.std).float()
            mask[: len(items)] = True
        return {"sequence": {"values": values, "mask": mask}}

    @property
    def spec(self) -> dict[str, Any]:
        if self.kind == "tokens":
            return {"kind": "tokens", "vocab_size": len(self.vocabulary) or 2, "max_length": self.max_length}
        return {"kind": "numeric", "channels": 1, "max_length": self.max_length}

    @property
    def preprocessing(self) -> dict[str, Any]:
        """What turns a row's raw cell into the "sequence" inputs (export writes it to preprocess.json)."""
        if not self.fitted:
            raise RuntimeError("SequenceReader.fit(train_rows) must run before preprocessing")
        length = self.max_length
        common = {"kind": "sequence", "column": self.column, "sequence_kind": self.kind, "max_length": length}
        mask = {"dtype": "bool", "shape": [length]}
        if self.kind == "tokens":
            return {
                **common,
                "inputs": {"sequence.values": {"dtype": "int64", "shape": [length]}, "sequence.mask": mask},
                "lowercase": True,
                "token_pattern": TOKEN_PATTERN.pattern,
                "pad_index": PAD,
                "unknown_index": UNKNOWN,
                "vocabulary": self.vocabulary,
                "steps": [
                    "tokens = re.findall(token_pattern, cell.lower()) (Python's re), the first max_length kept",
                    "ids = vocabulary.index(token), unknown_index for a token not in it; an empty text is one "
                    "unknown token",
                    "values = ids padded with pad_index to max_length (int64); mask = True on the real steps",
                ],
            }
        return {
            **common,
            "inputs": {"sequence.values": {"dtype": "float32", "shape": [length, 1]}, "sequence.mask": mask},
            "mean": self.mean,
            "std": self.std,
            "pad_value": 0.0,
            "steps": [
                "numbers = [float(token) for token in cell.split()] (finite, at least one), the last max_length kept",
                "values = (number - mean) / std in float64, as float32 [max_length, 1], padded with pad_value",
                "mask = True on the real steps",
            ],
        }

    def describe(self) -> str:
        """One line for the run log: what was learned from train, and how much truncation cut off."""
        if not self.fitted:
            return f"sequence {self.column!r} ({self.kind}): not fitted"
        lengths = self._lengths or [0]
        truncated = sum(length > self.max_length for length in lengths)
        shape = (
            f"length min {min(lengths)} / median {statistics.median(lengths):g} / max {max(lengths)}, "
            f"{truncated} of {len(self._lengths)} train rows truncated to their "
            f"{'first' if self.kind == 'tokens' else 'last'} {self.max_length} steps"
        )
        if self.kind == "tokens":
            learned = f"vocabulary {len(self.vocabulary) - 2} tokens seen >= {self.min_count} times (+ pad, unknown)"
        else:
            learned = f"standardized with train mean {self.mean:.4g}, std {self.std:.4g}"
        return f"sequence {self.column!r} ({self.kind}): {learned}; {shape}"
