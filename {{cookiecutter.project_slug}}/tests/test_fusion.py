"""Fusion modules on their own: shapes, start at chance, input checks, and proof that combining inputs matters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from {{ cookiecutter.package_name }}.models.network import Network
from {{ cookiecutter.package_name }}.models.registry import build, registered

MULTI = ("concat", "late", "gated")
DIMS = {"2": {"image": 12, "tabular": 3}, "3": {"image": 12, "tabular": 3, "sequence": 7}}


def build_fusion(kind: str, dims: dict[str, int], out_features: int, **options: int) -> nn.Module:
    """The fusion `kind` as the network builds it: by its registered name, ending in the linear head."""
    return build(
        "fusion",
        {"name": kind, **options},
        dims,
        lambda in_features: build("head", "linear", in_features, out_features),
    )


def _features(dims: dict[str, int], batch: int = 4) -> dict[str, torch.Tensor]:
    return {name: torch.randn(batch, d) for name, d in dims.items()}


@pytest.mark.parametrize("n", ["2", "3"])
@pytest.mark.parametrize("kind", MULTI)
def test_output_shape_and_near_zero_start(kind: str, n: str) -> None:
    torch.manual_seed(0)
    fusion = build_fusion(kind, DIMS[n], out_features=5, fusion_dim=8)
    outputs = fusion(_features(DIMS[n], batch=6))
    assert outputs.shape == (6, 5)
    assert outputs.abs().max() < 0.1, "final layers should start near zero (loss at chance)"


def test_none_is_a_linear_head_on_one_input() -> None:
    fusion = build_fusion("none", {"tabular": 3}, out_features=2)
    outputs = fusion({"tabular": torch.randn(4, 3)})
    assert outputs.shape == (4, 2) and outputs.abs().max() < 0.1


def test_wrong_number_of_inputs_or_unknown_kind_raise() -> None:
    with pytest.raises(ValueError, match="concat, late or gated"):
        build_fusion("none", DIMS["2"], 2)
    for kind in MULTI:
        with pytest.raises(ValueError, match=kind):
            build_fusion(kind, {"image": 12}, 2)
    with pytest.raises(ValueError, match="fusion 'attention' is not registered; registered: concat, gated, late, none"):
        build_fusion("attention", DIMS["2"], 2)
    assert registered("fusion") == ["concat", "gated", "late", "none"]


@pytest.mark.parametrize("kind", MULTI)
def test_missing_extra_or_misshaped_features_raise(kind: str) -> None:
    fusion = build_fusion(kind, DIMS["2"], 2, fusion_dim=8)
    with pytest.raises(KeyError, match="tabular"):
        fusion({"image": torch.randn(4, 12)})
    with pytest.raises(ValueError, match="sequence"):
        fusion(_features(DIMS["3"]))
    with pytest.raises(ValueError, match="tabular"):
        fusion({"image": torch.randn(4, 12), "tabular": torch.randn(4, 5)})


def test_late_weights_and_gated_gates_sum_to_one() -> None:
    late = build_fusion("late", DIMS["3"], 2, fusion_dim=8)
    weights = late.modality_weights()
    assert sorted(weights) == sorted(DIMS["3"]) and sum(weights.values()) == pytest.approx(1.0)
    gated = build_fusion("gated", DIMS["3"], 2, fusion_dim=8)
    gated(_features(DIMS["3"], batch=5))
    gates = torch.stack([gated.last_gates[name] for name in sorted(DIMS["3"])], dim=1)
    assert gates.shape == (5, 3) and torch.allclose(gates.sum(dim=1), torch.ones(5))
    assert sum(gated.mean_gates().values()) == pytest.approx(1.0)


# Two inputs of different widths; only the sign of the first coordinate of each carries information.
def _two_input_data(n: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = {"a": torch.randn(n, 3, generator=generator), "b": torch.randn(n, 5, generator=generator)}
    a, b = features["a"][:, 0], features["b"][:, 0]
    xor = ((a > 0) ^ (b > 0)).float()  # needs both inputs AND their interaction
    additive = (a + b > 0).float()  # needs both inputs, no interaction
    return features, xor, additive


def _accuracy(kind: str, inputs: tuple[str, ...], target_index: int, steps: int = 150) -> float:
    torch.manual_seed(0)
    train, test = _two_input_data(512, seed=1), _two_input_data(1024, seed=2)
    options = {} if kind == "none" else {"fusion_dim": 16}  # one input: nothing to project
    fusion = build_fusion(kind, {n: train[0][n].shape[1] for n in inputs}, out_features=1, **options)
    optimizer = torch.optim.Adam(fusion.parameters(), lr=2e-2)
    x, y = {n: train[0][n] for n in inputs}, train[target_index]
    for _ in range(steps):
        loss = nn.functional.binary_cross_entropy_with_logits(fusion(x).squeeze(1), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = fusion({n: test[0][n] for n in inputs}).squeeze(1) > 0
    return (predicted.float() == test[target_index]).float().mean().item()


@pytest.fixture()
def one_thread():
    # Tiny tensors: threads only add overhead, and on a busy machine oversubscription made this test 10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_fusion_learns_what_no_single_input_can() -> None:
    xor, additive = 1, 2
    acc = {
        "concat xor": _accuracy("concat", ("a", "b"), xor),
        "gated xor": _accuracy("gated", ("a", "b"), xor),
        "late xor": _accuracy("late", ("a", "b"), xor),
        "late additive": _accuracy("late", ("a", "b"), additive),
        **{f"none({n}) xor": _accuracy("none", (n,), xor) for n in ("a", "b")},
        **{f"none({n}) additive": _accuracy("none", (n,), additive) for n in ("a", "b")},
    }
    print({k: round(v, 3) for k, v in acc.items()})  # shown with pytest -s
    # XOR: each input alone is at chance, concat and gated learn the interaction.
    assert acc["concat xor"] > 0.9 and acc["gated xor"] > 0.9, acc
    assert acc["none(a) xor"] < 0.6 and acc["none(b) xor"] < 0.6, acc
    # Late fusion adds per-input outputs, so it cannot represent an interaction (at best 3 of 4 XOR cells)...
    assert acc["late xor"] < 0.8, acc
    # ...but it combines inputs that are informative on their own: each alone gets ~0.75 on the additive target.
    assert acc["late additive"] > 0.9, acc
    assert acc["none(a) additive"] < 0.82 and acc["none(b) additive"] < 0.82, acc


def test_network_runs_encoders_then_fusion() -> None:
    torch.manual_seed(0)
    # Encoders named by import path: plain linear layers (the data's input specs are not theirs to read).
    encoders = {
        "tabular": {"name": "torch.nn.Linear", "in_features": 4, "out_features": 6},
        "image": {"name": "torch.nn.Linear", "in_features": 10, "out_features": 8},
    }
    concat = {"name": "concat", "fusion_dim": 8}
    network = Network({"tabular": {}, "image": {}}, 3, encoders=encoders, fusion=concat)
    assert network.feature_dims == {"image": 8, "tabular": 6}
    assert isinstance(network.encoders["image"], nn.Linear) and network.fusion.names == ("image", "tabular")
    batch = {"image": torch.randn(2, 10), "tabular": torch.randn(2, 4), "target": torch.zeros(2)}
    features = network.forward_features(batch)
    assert {name: f.shape for name, f in features.items()} == {"tabular": (2, 6), "image": (2, 8)}
    outputs = network(batch)
    assert outputs.shape == (2, 3)
    outputs.sum().backward()
    assert all(p.grad is not None for p in network.parameters())
    # Encoders and inputs must match, and the fusion must fit the number of inputs.
    with pytest.raises(ValueError, match=r"encoders \['tabular'\] name no input of the data \(image\)"):
        Network({"image": {}}, 3, encoders=encoders, fusion=concat)
    with pytest.raises(ValueError, match="fusion 'concat' combines at least two inputs"):
        Network({"image": {}}, 3, encoders={"image": encoders["image"]}, fusion=concat)
    with pytest.raises(KeyError, match="tabular"):
        network({"image": torch.randn(2, 10)})
