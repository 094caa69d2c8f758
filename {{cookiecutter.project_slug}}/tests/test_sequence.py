"""Sequences: train-only vocabulary and statistics, padding that never changes features, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from {{ cookiecutter.package_name }}.data.sequence import SequenceReader
from {{ cookiecutter.package_name }}.data.table import Row
from {{ cookiecutter.package_name }}.errors import DataError
from {{ cookiecutter.package_name }}.models.encoders.sequence import SequenceEncoder


def rows(texts: list[str], split: str = "train") -> list[Row]:
    file = Path("data/toy") / f"{split}.csv"
    return [Row({"sequence": text}, file, line) for line, text in enumerate(texts, start=2)]


def fitted(texts: list[str], **options) -> SequenceReader:
    reader = SequenceReader(**options)
    train = rows(texts)
    reader.fit(train)
    reader.check(train)
    return reader


def test_vocabulary_comes_from_train_only_and_is_ordered_by_count():
    reader = fitted(["the cat sat", "The dog, the end"], max_length=8)
    assert reader.vocabulary[:4] == ["<pad>", "<unk>", "the", ","]  # "the" 3 times, then ties by token
    assert reader.spec == {"kind": "tokens", "vocab_size": len(reader.vocabulary), "max_length": reader.max_length}
    val = rows(["the zebra"], "val")
    reader.check(val)
    values = reader.read(val[0], train=False)["sequence"]["values"]
    assert values[:2].tolist() == [reader.index["the"], 1]  # a word only in val is unknown, not a new id


def test_min_count_drops_rare_tokens():
    reader = fitted(["a a b"], min_count=2)
    assert reader.vocabulary == ["<pad>", "<unk>", "a"]


def test_padding_mask_and_truncation():
    reader = fitted(["one two three four five six", "one"], max_length=4)
    long, short = (reader.read(row, train=True)["sequence"] for row in rows(["one two three four five six", "one"]))
    assert long["values"].dtype == torch.int64 and long["values"].shape == (4,)
    assert long["mask"].tolist() == [True] * 4
    assert long["values"].tolist() == [reader.index[w] for w in ["one", "two", "three", "four"]]  # first 4 kept
    assert short["mask"].tolist() == [True, False, False, False]
    assert short["values"].tolist()[1:] == [0, 0, 0]
    assert "1 of 2 train rows truncated to their first 4 steps" in reader.describe()


def test_empty_text_is_one_unknown_step():
    reader = fitted(["hello", ""])
    empty = reader.read(rows(["hello", ""])[1], train=True)["sequence"]
    assert empty["mask"].sum() == 1 and empty["values"][0] == 1


def test_numeric_series_standardized_with_train_statistics():
    reader = fitted(["1 2 3", "4 5"], kind="numeric", max_length=4)
    assert reader.mean == pytest.approx(3.0) and reader.std == pytest.approx(2**0.5)
    assert reader.spec == {"kind": "numeric", "channels": 1, "max_length": reader.max_length}
    val = rows(["3 9"], "val")
    reader.check(val)
    sample = reader.read(val[0], train=False)["sequence"]
    assert sample["values"].dtype == torch.float32 and sample["values"].shape == (4, 1)
    assert sample["values"][:2, 0].tolist() == pytest.approx([0.0, 6 / 2**0.5])
    assert sample["mask"].tolist() == [True, True, False, False]


def test_a_long_numeric_series_keeps_its_most_recent_values():
    # A forecasting window: the steps right before the target matter most, so the oldest are cut, not the newest.
    reader = fitted(["1 2 3 4 5 6", "7 8"], kind="numeric", max_length=3)
    assert reader.mean == pytest.approx(6.0)  # the kept steps 4 5 6 and 7 8
    sample = reader.read(rows(["1 2 3 4 5 6"])[0], train=False)["sequence"]
    assert (sample["values"][:, 0] * reader.std + reader.mean).tolist() == pytest.approx([4.0, 5.0, 6.0])
    assert "1 of 2 train rows truncated to their last 3 steps" in reader.describe()


def test_bad_number_names_file_line_column_and_token():
    reader = SequenceReader(kind="numeric")
    with pytest.raises(DataError, match=r"data/toy/train.csv line 3, column 'sequence': 'x1' is not a number"):
        reader.check(rows(["1 2", "3 x1"]))
    with pytest.raises(DataError, match=r"line 2, column 'sequence': the numeric sequence is empty"):
        reader.check(rows([" "], "val"))


def test_bad_kind_names_allowed_values():
    with pytest.raises(ValueError, match="'tokens', 'numeric'"):
        SequenceReader(kind="audio")
    with pytest.raises(ValueError, match="'gru', 'transformer'"):
        SequenceEncoder(vocab_size=5, kind="lstm")


def batch(values: list[list[int]], length: int, numeric: bool = False) -> dict[str, torch.Tensor]:
    """Right-padded batch of the given sequences (ids, or one-channel values when numeric)."""
    padded = torch.zeros(len(values), length, dtype=torch.int64)
    mask = torch.zeros(len(values), length, dtype=torch.bool)
    for i, seq in enumerate(values):
        padded[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = True
    return {"values": padded.float().unsqueeze(-1) if numeric else padded, "mask": mask}


ENCODERS = [("gru", False), ("gru", True), ("transformer", False), ("transformer", True)]


def encoder(kind: str, numeric: bool) -> SequenceEncoder:
    torch.manual_seed(0)
    spec = {"kind": "numeric", "channels": 1} if numeric else {"kind": "tokens", "vocab_size": 10}
    return SequenceEncoder.from_spec(spec, kind=kind, hidden_dim=8)


@pytest.mark.parametrize(("kind", "numeric"), ENCODERS)
def test_encoder_shapes(kind: str, numeric: bool):
    model = encoder(kind, numeric)
    features = model(batch([[2, 3, 4], [5]], 6, numeric))
    assert features.shape == (2, model.out_features)
    assert model.out_features == (16 if kind == "gru" else 8)


@pytest.mark.parametrize(("kind", "numeric"), ENCODERS)
def test_padding_does_not_change_features(kind: str, numeric: bool):
    model = encoder(kind, numeric).eval()
    sequences = [[2, 3, 4], [5, 6]]
    with torch.no_grad():
        short, long = model(batch(sequences, 3, numeric)), model(batch(sequences, 7, numeric))
    torch.testing.assert_close(short, long, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("kind", "numeric"), ENCODERS)
def test_gradients_reach_every_parameter(kind: str, numeric: bool):
    model = encoder(kind, numeric)
    model(batch([[2, 3, 4], [5, 6, 7, 8, 9]], 5, numeric)).square().sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("num_layers", [1, 2])
def test_gru_features_are_the_final_hidden_states(num_layers: int):
    # The encoder reads the final states from the padded outputs (so ONNX can export it); they must be exactly the
    # GRU's own final hidden states of the last layer, each sample stopping at its last real step.
    torch.manual_seed(0)
    model = SequenceEncoder(vocab_size=10, hidden_dim=8, num_layers=num_layers).eval()
    sequences = batch([[2, 3, 4, 5], [6], [7, 8]], 6)
    with torch.no_grad():
        features = model(sequences)
        for i, length in enumerate(sequences["mask"].sum(1).tolist()):
            _, hidden = model.rnn(model.embed(sequences["values"][i : i + 1, :length]))
            torch.testing.assert_close(features[i], torch.cat([hidden[-2, 0], hidden[-1, 0]]), atol=1e-6, rtol=1e-5)
