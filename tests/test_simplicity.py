"""Simplicity statistics: the effective rank (Roy & Vetterli 2007) on hand-computed matrices, and
of every family's penultimate features and first-layer weights against the same matrices taken
from each model built alone as a torch.nn.Module."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from _data import linear_problem

from rashomon.engine.model import (
    ConvNet,
    FlatnessSettings,
    ModelSpec,
    PackSettings,
    TrainingData,
    build_family,
    curvature_rows,
    effective_rank,
    train_pack,
)
from rashomon.jobs import SIMPLICITY_COLUMNS, FlatnessConfig, ModuleRef


def numpy_rank(matrix: np.ndarray) -> float:
    singular = np.linalg.svd(matrix, compute_uv=False)
    p = singular / singular.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def test_effective_rank_of_hand_computed_matrices():
    matrices = torch.zeros(4, 4, 4, dtype=torch.float64)
    matrices[0] = torch.eye(4)  # four equal directions
    matrices[1] = torch.outer(torch.arange(1.0, 5.0), torch.ones(4))  # one direction
    matrices[2, 0, 0], matrices[2, 1, 1] = 3.0, 1.0  # p = (3/4, 1/4)
    ranks = effective_rank(matrices)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    np.testing.assert_allclose(ranks.numpy(), [4.0, 1.0, math.exp(h), 0.0], rtol=1e-12)
    random = torch.randn(5, 30, 7, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(
        effective_rank(random).numpy(), [numpy_rank(m) for m in random.double().numpy()], rtol=1e-10
    )
    assert effective_rank(2.5 * random).allclose(effective_rank(random))  # scale-free


def make_data(shape=(1, 8), n=300, classes=3) -> TrainingData:
    return linear_problem(3, n, math.prod(shape), classes, (200, 250), shape=shape)


BASE = PackSettings(
    "mlp", (6, 5), "relu", 2, 32, "sgd", False, "constant", (0.9, 0.999), 1e-8, "float64"
)
FLATNESS = FlatnessSettings.from_config(
    FlatnessConfig(), curvature_examples=64, trace_probes=2, adaptive_probes=2, avg_pairs=1
)


def _module(target: str) -> ModuleRef:
    from test_procedures import _net_reference

    reference = _net_reference()
    return dataclasses.replace(reference, target=target)


def alone(settings: PackSettings, data: TrainingData, parameters: dict, model: int):
    """(features on the curvature set, first weight matrix) of one model built as an nn.Module
    and loaded with its trained tensors."""
    rows = curvature_rows(data.split_indices["train"], FLATNESS)
    x = data.features[rows]
    state = {name: value[model] for name, value in parameters.items()}
    if settings.family in ("mlp", "logistic"):
        hidden = x
        weights = [state[f"layers.{i}.weight"] for i in range(len(settings.hidden) + 1)]
        biases = [state[f"layers.{i}.bias"][0] for i in range(len(settings.hidden) + 1)]
        for weight, bias in zip(weights[:-1], biases[:-1], strict=True):
            hidden = torch.relu(hidden @ weight + bias)
        return hidden, state["layers.0.weight"].T
    if settings.family == "cnn":
        net = ConvNet(
            data.shape,
            3,
            settings.channels,
            settings.kernel,
            settings.stride,
            settings.pool,
            settings.hidden,
            settings.activation,
        ).double()
        head, first = net.dense[-1], net.convs[0]
    else:
        net = settings.module.load_class()(in_shape=data.shape, n_classes=3).double()
        head = net.head if hasattr(net, "head") else None
        first = net.body[1] if hasattr(net, "head") else net.body
    net.load_state_dict(state)
    net.eval()
    captured = []
    if head is not None:
        head.register_forward_hook(lambda _m, args, _o: captured.append(args[0]))
    with torch.no_grad():
        net(x.view(-1, *data.shape))
    features = captured[0].flatten(1) if captured else None
    return features, first.weight.detach().reshape(first.weight.shape[0], -1)


CASES = {
    "mlp": BASE,
    "logistic": dataclasses.replace(BASE, family="logistic", hidden=()),
    "cnn": dataclasses.replace(
        BASE, family="cnn", hidden=(4,), channels=(3, 2), kernel=3, stride=1, pool=2
    ),
    "module": dataclasses.replace(
        BASE, family="module", hidden=(), activation="", module=_module("_nets:LayerNormNet")
    ),
    "functional head": dataclasses.replace(
        BASE, family="module", hidden=(), activation="", module=_module("_nets:FunctionalHead")
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_familys_effective_ranks_are_those_of_its_models_built_alone(case):
    settings = CASES[case]
    data = make_data()
    models = [ModelSpec(i, i, 0, 0.05, 0.9, 0.0, 0.0) for i in range(3)]
    result = train_pack(settings, models, data, flatness=FLATNESS)
    for index in range(3):
        features, weights = alone(settings, data, result.parameters, index)
        found = {name: result.metrics[name][index] for name in SIMPLICITY_COLUMNS}
        if features is None:
            assert np.isnan(found["feature_effective_rank"])
        else:
            assert found["feature_effective_rank"] == pytest.approx(
                numpy_rank(features.numpy()), rel=1e-9
            )
        assert found["weight_effective_rank"] == pytest.approx(
            numpy_rank(weights.numpy()), rel=1e-9
        )
    family = build_family(settings, data.example_shape, 3)
    if case == "functional head":
        assert family.head is None and family.first_layer == "body.weight"
    if case == "module":
        assert family.head == "head" and family.first_layer == "body.1.weight"
