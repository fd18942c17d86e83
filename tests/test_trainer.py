"""The batched trainer: pack invariance, determinism, divergence isolation and exactness
against stock PyTorch, on small synthetic problems (no Ray but for one end-to-end run)."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from _data import linear_problem

from rashomon.engine.cli import main
from rashomon.engine.model import (
    FlatnessSettings,
    ModelSpec,
    PackSettings,
    TrainingData,
    _families,
    _random,
    train_pack,
    training_rows,
)
from rashomon.jobs import FLATNESS_COLUMNS, FlatnessConfig

SETTINGS = PackSettings(
    family="mlp",
    hidden=(8, 6),
    activation="tanh",
    epochs=3,
    batch_size=32,
    optimizer="sgd",
    nesterov=True,
    schedule="cosine",
    betas=(0.9, 0.999),
    eps=1e-8,
    dtype="float64",
)


def make_data(dtype=torch.float64, n=500, d=7, classes=3) -> TrainingData:
    return linear_problem(0, n, d, classes, (300, 400), dtype=dtype)


def population(n: int) -> list[ModelSpec]:
    return [
        ModelSpec(
            init_seed=i % 5,
            order_seed=i % 7,
            data_seed=i % 3,
            lr=0.02 * (1 + i % 4),
            momentum=0.5 + 0.1 * (i % 4),
            weight_decay=1e-3 * (i % 2),
            dropout=0.1 * (i % 3),
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_model_trained_in_pack_of_64_equals_model_trained_alone(optimizer):
    data = make_data()
    settings = dataclasses.replace(SETTINGS, optimizer=optimizer, nesterov=optimizer == "sgd")
    models = population(64)
    pack = train_pack(settings, models, data, ("val", "test"))
    for i in (0, 1, 13, 63):
        alone = train_pack(settings, [models[i]], data, ("val", "test"))
        for split in ("val", "test"):
            difference = np.abs(pack.probabilities[split][i] - alone.probabilities[split][0])
            assert difference.max() <= 1e-9
        for name, value in pack.parameters.items():
            assert torch.allclose(value[i], alone.parameters[name][0], rtol=0, atol=1e-9)


def test_same_pack_twice_is_bitwise_identical():
    data = make_data(torch.float32)
    settings = dataclasses.replace(SETTINGS, dtype="float32")
    first = train_pack(settings, population(16), data)
    second = train_pack(settings, population(16), data)
    for split in ("val", "test"):
        assert np.array_equal(first.probabilities[split], second.probabilities[split])
    assert all(np.array_equal(first.metrics[k], second.metrics[k]) for k in first.metrics)


def test_diverging_model_is_frozen_and_leaves_its_pack_mates_bitwise_unchanged():
    data = make_data(torch.float32)
    settings = dataclasses.replace(
        SETTINGS, dtype="float32", activation="relu", optimizer="sgd", schedule="constant"
    )
    healthy = population(6)
    exploding = dataclasses.replace(healthy[0], lr=1e6)
    without = train_pack(settings, healthy, data)
    with_it = train_pack(settings, [*healthy[:3], exploding, *healthy[3:]], data)
    assert with_it.status == ["ok"] * 3 + ["diverged"] + ["ok"] * 3
    assert without.status == ["ok"] * 6
    for split in ("val", "test"):
        kept = np.delete(with_it.probabilities[split], 3, axis=0)
        assert np.array_equal(kept, without.probabilities[split])
    for name, value in without.parameters.items():
        kept = torch.cat([with_it.parameters[name][:3], with_it.parameters[name][4:]])
        assert torch.equal(kept, value)


LAST_STEP = dataclasses.replace(
    SETTINGS, dtype="float32", activation="relu", schedule="constant", epochs=1, batch_size=1000
)  # one full-batch step per model


def test_a_model_whose_last_update_overflows_is_diverged_and_its_pack_mates_unchanged():
    data = make_data(torch.float32)
    flatness = FlatnessSettings.from_config(FlatnessConfig(), curvature_examples=64)
    healthy = population(4)
    overflowing = [dataclasses.replace(healthy[0], lr=lr, dropout=0.0) for lr in (1e20, 1e37)]
    without = train_pack(LAST_STEP, healthy, data, flatness=flatness)
    with_them = train_pack(LAST_STEP, [*healthy[:2], *overflowing, *healthy[2:]], data,
                           flatness=flatness)  # fmt: skip
    assert without.status == ["ok"] * 4
    assert with_them.status == ["ok", "ok", "diverged", "diverged", "ok", "ok"]
    kept = [0, 1, 4, 5]
    for split in ("val", "test"):
        assert np.array_equal(with_them.probabilities[split][kept], without.probabilities[split])
    for name, value in without.parameters.items():
        assert torch.equal(with_them.parameters[name][kept], value)
    for name in FLATNESS_COLUMNS:
        assert np.isnan(with_them.metrics[name][2:4]).all(), name
        np.testing.assert_allclose(with_them.metrics[name][kept], without.metrics[name],
                                   rtol=1e-5, err_msg=name)  # fmt: skip


def test_a_last_step_divergence_keeps_what_one_more_step_would_have_frozen():
    """The final update is kept, as every update that leads to a non-finite loss is: a model
    diverging on its last step is stored as the same model trained one step longer."""
    data = make_data(torch.float32)
    model = ModelSpec(0, 0, 0, lr=1e37, momentum=0.9, weight_decay=0.0, dropout=0.0)
    last = train_pack(LAST_STEP, [model], data)
    longer = train_pack(dataclasses.replace(LAST_STEP, epochs=2), [model], data)
    assert last.status == longer.status == ["diverged"]
    for name, value in longer.parameters.items():
        torch.testing.assert_close(last.parameters[name], value, rtol=0, atol=0, equal_nan=True)


OVERFLOWING_JOB = """
name: last-step
dataset: {source: wine, split: {val: 0.25, test: 0.25, seed: 1}}
model: {family: mlp, hidden: [8], activation: relu}
train: {epochs: 1, batch_size: 1000, optimizer: sgd, lr: 0.1}
population:
  seeds: {init: 2}
  grid: {lr: [0.1, 1.0e+20, 1.0e+37]}
resources: {cpus_per_worker: 1, models_per_pack: 6}
"""


def test_run_then_analyze_a_population_whose_last_step_overflows(ray_cluster, tmp_path, capsys):
    (tmp_path / "job.yaml").write_text(textwrap.dedent(OVERFLOWING_JOB))
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "job.yaml"), "--out", str(out), "--quiet"]) == 0
    models = pd.read_parquet(out / "models")
    assert models.groupby("hp_lr")["status"].unique().map(list).to_dict() == {
        0.1: ["ok"],
        1e20: ["diverged"],
        1e37: ["diverged"],
    }
    capsys.readouterr()
    assert main(["analyze", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_models"] == 2 and result["excluded_models"] == {"diverged": 4}
    ok = models.loc[models["status"] == "ok", "model_id"]
    assert result["baseline_model_id"] in set(ok)


def _stock_pytorch_probabilities(settings, model, data):
    """The same model trained with torch.nn + torch.optim, batches in the same order."""
    arch = _families.Architecture(data.features.shape[1], settings.hidden, data.n_classes, "tanh")
    init = _families.init_parameters(arch, [model.init_seed], torch.float64, "cpu")
    widths = arch.widths
    layers = []
    for i in range(len(widths) - 1):
        linear = torch.nn.Linear(widths[i], widths[i + 1]).double()
        with torch.no_grad():
            linear.weight.copy_(init[2 * i][0].T)
            linear.bias.copy_(init[2 * i + 1][0, 0])
        layers += [linear, torch.nn.Tanh()]
    net = torch.nn.Sequential(*layers[:-1])
    kwargs = {"lr": model.lr, "weight_decay": model.weight_decay}
    optimizer = {
        "sgd": lambda: torch.optim.SGD(
            net.parameters(), momentum=model.momentum, nesterov=settings.nesterov, **kwargs
        ),
        "adam": lambda: torch.optim.Adam(net.parameters(), **kwargs),
        "adamw": lambda: torch.optim.AdamW(net.parameters(), **kwargs),
    }[settings.optimizer]()
    rows = training_rows([model], data.split_indices["train"])[0]
    total_steps = settings.epochs * -(-len(rows) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    for epoch in range(settings.epochs):
        generator = _random.generator(_random.ORDER, model.order_seed, epoch)
        order = rows[torch.randperm(len(rows), generator=generator)]
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            loss = torch.nn.functional.cross_entropy(net(data.features[batch]), data.labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if settings.schedule == "cosine":
                schedule.step()
    with torch.no_grad():
        return torch.softmax(net(data.features[data.split_indices["test"]]), -1).numpy()


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("data_seed", [0, 2])
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_matches_torch_optim_step_for_step(optimizer, data_seed, schedule):
    data = make_data()
    settings = dataclasses.replace(
        SETTINGS, optimizer=optimizer, nesterov=optimizer == "sgd", schedule=schedule
    )
    model = ModelSpec(3, 4, data_seed, lr=0.05, momentum=0.9, weight_decay=1e-2, dropout=0.0)
    ours = train_pack(settings, [model], data, ("test",)).probabilities["test"][0]
    reference = _stock_pytorch_probabilities(settings, model, data)
    assert np.abs(ours - reference).max() < 1e-6  # ours are stored as float32


def test_each_seed_axis_drives_its_own_randomness():
    data = make_data()
    base = ModelSpec(0, 0, 0, 0.05, 0.9, 0.0, 0.2)
    variants = [
        base,
        dataclasses.replace(base, init_seed=1),
        dataclasses.replace(base, order_seed=1),
        dataclasses.replace(base, data_seed=1),
    ]
    arch = _families.Architecture(data.features.shape[1], SETTINGS.hidden, data.n_classes, "tanh")
    initial = _families.init_parameters(arch, [0, 1, 0, 0, 1], torch.float64, "cpu")
    assert torch.equal(initial[0][0], initial[0][2])  # the same init seed, the same start
    assert torch.equal(initial[0][1], initial[0][4])
    assert not torch.equal(initial[0][0], initial[0][1])
    result = train_pack(SETTINGS, variants, data)
    test = result.probabilities["test"]
    assert all(not np.array_equal(test[0], test[i]) for i in (1, 2, 3))


def test_data_seed_zero_is_the_full_split_and_others_are_bootstrap_resamples():
    train = torch.arange(100, 200)
    rows = training_rows([ModelSpec(0, 0, s, 0.1, 0, 0, 0) for s in (0, 1, 2, 1)], train)
    assert torch.equal(rows[0], train)
    assert torch.equal(rows[1], rows[3])
    assert not torch.equal(rows[1], rows[2])
    for resample in rows[1:]:
        assert resample.min() >= 100 and resample.max() < 200
        assert len(torch.unique(resample)) < 100  # drawn with replacement


def test_dropout_free_model_is_unaffected_by_dropout_in_its_pack():
    data = make_data()
    plain = ModelSpec(1, 2, 0, 0.05, 0.9, 0.0, 0.0)
    alone = train_pack(SETTINGS, [plain], data)
    mixed = train_pack(SETTINGS, [dataclasses.replace(plain, dropout=0.5), plain], data)
    assert np.array_equal(alone.probabilities["test"][0], mixed.probabilities["test"][1])
    assert not np.array_equal(mixed.probabilities["test"][0], mixed.probabilities["test"][1])


def test_logistic_family_learns_a_linearly_separable_problem():
    data = make_data(torch.float32)
    settings = dataclasses.replace(
        SETTINGS, family="logistic", hidden=(), dtype="float32", epochs=30
    )
    result = train_pack(settings, [ModelSpec(0, 0, 0, 0.1, 0.9, 0.0, 0.0)], data)
    assert set(result.parameters) == {"layers.0.weight", "layers.0.bias"}
    assert result.metrics["test_acc"][0] > 0.9


def test_metrics_agree_with_the_stored_probabilities():
    data = make_data()
    result = train_pack(SETTINGS, population(4), data, ("test",))
    probabilities = result.probabilities["test"]
    labels = data.labels[data.split_indices["test"]].numpy()
    accuracy = (probabilities.argmax(-1) == labels).mean(axis=1)
    log_loss = -np.log(probabilities[:, np.arange(len(labels)), labels]).mean(axis=1)
    assert np.allclose(result.metrics["test_acc"], accuracy)
    assert np.allclose(result.metrics["test_loss"], log_loss, rtol=1e-5)


def test_flatness_statistics_are_per_model_and_nan_for_a_diverged_model():
    data = make_data(torch.float32)
    settings = dataclasses.replace(
        SETTINGS, dtype="float32", activation="relu", schedule="constant"
    )
    flatness = FlatnessSettings.from_config(FlatnessConfig(), curvature_examples=64)
    healthy = population(4)
    exploding = dataclasses.replace(healthy[0], lr=1e6, dropout=0.0)
    pack = train_pack(settings, [*healthy, exploding], data, flatness=flatness)
    assert pack.status[-1] == "diverged"
    for name in FLATNESS_COLUMNS:
        assert np.isfinite(pack.metrics[name][:4]).all() and np.isnan(pack.metrics[name][4]), name
    alone = train_pack(settings, healthy[2:3], data, flatness=flatness)
    for name in FLATNESS_COLUMNS:
        assert alone.metrics[name][0] == pytest.approx(pack.metrics[name][2], rel=1e-5), name
    assert train_pack(settings, healthy[:1], data).metrics.keys().isdisjoint(FLATNESS_COLUMNS)


def test_a_pack_reports_the_seconds_of_each_phase_and_slices_add_theirs_up():
    """The estimate scales each phase by its own work: training, evaluation and flatness are
    timed apart, within the pack's seconds; a pack trained in slices sums its slices'."""
    data = make_data(torch.float32)
    settings = dataclasses.replace(SETTINGS, dtype="float32")
    flatness = FlatnessSettings.from_config(FlatnessConfig(), curvature_examples=32)
    whole = train_pack(settings, population(4), data, flatness=flatness)
    assert list(whole.timings) == ["training", "evaluation", "flatness"]
    assert all(seconds > 0 for seconds in whole.timings.values())
    assert sum(whole.timings.values()) <= whole.seconds
    sliced = train_pack(settings, population(4), data, flatness=flatness, max_models=3)
    assert sum(sliced.timings.values()) <= sliced.seconds
    assert all(seconds > 0 for seconds in sliced.timings.values())
