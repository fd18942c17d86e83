"""Learning curves (SPEC §5 ``history/``): the records against a per-model loop, the tracked
sharpness against the exact top Hessian eigenvalue, and the history files of a results folder —
written with the pack, checked like the others, read by analysis, old folders intact."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import textwrap

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from _data import linear_problem

from rashomon.analysis import open_results
from rashomon.analysis._cohorts import intrinsic_dimension
from rashomon.engine.cli import main
from rashomon.engine.model import (
    FlatnessSettings,
    ModelSpec,
    PackSettings,
    TrainingData,
    _families,
    _random,
    build_family,
    curvature_rows,
    train_pack,
    training_rows,
)
from rashomon.engine.store import HISTORY_SCHEMA, ResultsDir, history_table
from rashomon.jobs import FlatnessConfig, UserError

SETTINGS = PackSettings(
    family="mlp",
    hidden=(6,),
    activation="tanh",
    epochs=4,
    batch_size=32,
    optimizer="sgd",
    nesterov=False,
    schedule="cosine",
    betas=(0.9, 0.999),
    eps=1e-8,
    dtype="float64",
)


def make_data(dtype=torch.float64, n=400, d=7, classes=3) -> TrainingData:
    return linear_problem(2, n, d, classes, (250, 330), dtype=dtype)


def reference_history(settings: PackSettings, model: ModelSpec, data: TrainingData) -> dict:
    """One model trained with torch.nn and torch.optim, its records computed by hand: the
    size-weighted mean of the epoch's minibatch losses, the validation split after the epoch
    and the scheduler's learning rate at the epoch's last step."""
    arch = _families.Architecture(data.features.shape[1], settings.hidden, data.n_classes, "tanh")
    init = _families.init_parameters(arch, [model.init_seed], torch.float64, "cpu")
    first, second = torch.nn.Linear(7, 6).double(), torch.nn.Linear(6, 3).double()
    with torch.no_grad():
        for linear, weight, bias in ((first, init[0], init[1]), (second, init[2], init[3])):
            linear.weight.copy_(weight[0].T)
            linear.bias.copy_(bias[0, 0])
    net = torch.nn.Sequential(first, torch.nn.Tanh(), second)
    optimizer = torch.optim.SGD(net.parameters(), lr=model.lr, momentum=model.momentum)
    rows = training_rows([model], data.split_indices["train"])[0]
    total = settings.epochs * math.ceil(len(rows) / settings.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    val = data.split_indices["val"]
    records: dict[str, list] = {"train_loss": [], "val_loss": [], "val_acc": [], "lr": []}
    for epoch in range(settings.epochs):
        generator = _random.generator(_random.ORDER, model.order_seed, epoch)
        order = rows[torch.randperm(len(rows), generator=generator)]
        seen = 0.0
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            loss = torch.nn.functional.cross_entropy(net(data.features[batch]), data.labels[batch])
            seen += loss.item() * len(batch)
            last_lr = optimizer.param_groups[0]["lr"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        with torch.no_grad():
            logits = net(data.features[val])
        records["train_loss"].append(seen / len(order))
        records["val_loss"].append(
            torch.nn.functional.cross_entropy(logits, data.labels[val]).item()
        )
        records["val_acc"].append((logits.argmax(1) == data.labels[val]).double().mean().item())
        records["lr"].append(last_lr)
    return records


def test_the_records_of_every_epoch_match_a_per_model_loop():
    data = make_data()
    models = [ModelSpec(i, i + 2, i % 2, 0.05 * (i + 1), 0.9, 0.0, 0.0) for i in range(3)]
    result = train_pack(SETTINGS, models, data)
    for name in ("train_loss", "val_loss", "val_acc", "lr"):
        assert result.history[name].shape == (3, SETTINGS.epochs)
    assert "hessian_top_eig" not in result.history
    for index, model in enumerate(models):
        expected = reference_history(SETTINGS, model, data)
        for name, values in expected.items():
            np.testing.assert_allclose(
                result.history[name][index], values, rtol=1e-10, atol=1e-12, err_msg=name
            )
    for name in ("val_loss", "val_acc"):  # the last epoch's are the models table's own
        assert np.array_equal(result.history[name][:, -1], result.metrics[name])


def exact_top_eigenvalue(settings, parameters, model: int, data, rows) -> float:
    """The largest eigenvalue of the full Hessian (torch.func.hessian) of one model's mean
    cross-entropy on the curvature set."""
    family = build_family(settings, (data.features.shape[1],), data.n_classes)
    tensors = [parameters[name][model : model + 1] for name in family.parameter_names()]
    sizes = [t.numel() for t in tensors]

    def loss(flat):
        parts = [p.view(t.shape) for p, t in zip(flat.split(sizes), tensors, strict=True)]
        logits = family.forward(parts, data.features[rows])[0]
        return torch.nn.functional.cross_entropy(logits, data.labels[rows])

    flat = torch.cat([t.flatten() for t in tensors])
    return torch.linalg.eigvalsh(torch.func.hessian(loss)(flat))[-1].item()


def test_the_tracked_sharpness_is_the_top_hessian_eigenvalue_at_every_epoch():
    data = make_data()
    settings = dataclasses.replace(SETTINGS, schedule="constant", epochs=3)
    flatness = FlatnessSettings.from_config(FlatnessConfig(track=True), curvature_examples=128)
    rows = curvature_rows(data.split_indices["train"], flatness)
    models = [ModelSpec(i, i, 0, 0.3, 0.9, 0.0, 0.0) for i in range(3)]
    tracked = train_pack(settings, models, data, flatness=flatness).history["hessian_top_eig"]
    for epochs in range(1, 4):  # a constant schedule: the first epochs of a longer run
        parameters = train_pack(dataclasses.replace(settings, epochs=epochs), models, data)
        for model in range(3):
            exact = exact_top_eigenvalue(settings, parameters.parameters, model, data, rows)
            assert tracked[model, epochs - 1] == pytest.approx(exact, rel=2e-3), (model, epochs)
    alone = train_pack(settings, models[1:2], data, flatness=flatness).history["hessian_top_eig"]
    np.testing.assert_allclose(alone[0], tracked[1], rtol=1e-9)


def test_a_diverged_model_records_nan_sharpness_and_leaves_its_pack_mates_records_alone():
    data = make_data(torch.float32)
    settings = dataclasses.replace(
        SETTINGS, dtype="float32", activation="relu", schedule="constant", epochs=3
    )
    flatness = FlatnessSettings.from_config(FlatnessConfig(track=True), curvature_examples=64)
    healthy = [ModelSpec(i, i, 0, 0.05, 0.9, 0.0, 0.0) for i in range(3)]
    exploding = dataclasses.replace(healthy[0], lr=1e8)
    without = train_pack(settings, healthy, data, flatness=flatness)
    with_it = train_pack(settings, [healthy[0], exploding, *healthy[1:]], data, flatness=flatness)
    assert with_it.status == ["ok", "diverged", "ok", "ok"]
    assert np.isnan(with_it.history["hessian_top_eig"][1, -1])
    for name, values in without.history.items():
        kept = np.delete(with_it.history[name], 1, axis=0)
        np.testing.assert_allclose(kept, values, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("family", ["cnn", "module"])
def test_every_family_records_its_learning_curves_and_tracked_sharpness(family):
    from test_procedures import _net_reference

    data = dataclasses.replace(make_data(d=8), shape=(1, 8))
    settings = dataclasses.replace(SETTINGS, family=family, hidden=(), activation="relu", epochs=2)
    if family == "cnn":
        settings = dataclasses.replace(settings, channels=(2,), kernel=3, stride=1, pool=2)
    else:
        settings = dataclasses.replace(settings, module=_net_reference())
    flatness = FlatnessSettings.from_config(FlatnessConfig(track=True), curvature_examples=64)
    models = [ModelSpec(i, i, 0, 0.05, 0.9, 0.0, 0.0) for i in range(2)]
    result = train_pack(settings, models, data, flatness=flatness)
    for name, values in result.history.items():
        assert values.shape == (2, 2) and np.isfinite(values).all(), name
    np.testing.assert_allclose(
        result.history["hessian_top_eig"][:, -1], result.metrics["hessian_top_eig"], rtol=2e-3
    )


# --- history files -----------------------------------------------------------------------------

JOB = """
name: curves
dataset: {source: breast_cancer, target: target, split: {val: 0.25, test: 0.25, seed: 0}}
model: {family: mlp, hidden: [8]}
train: {epochs: 3, batch_size: 64, lr: 0.05, label_noise: 0.1}
population:
  seeds: {init: 2, order: 2}
  grid:
    - {optimizer: [sgd]}
    - {optimizer: [sam], rho: [0.05], subspace_dim: [0, 20]}
flatness: {track: true, curvature_examples: 64, trace_probes: 4, adaptive_probes: 4}
resources: {models_per_pack: 4}
"""


@pytest.fixture(scope="module")
def trained(ray_cluster, tmp_path_factory):
    folder = tmp_path_factory.mktemp("curves")
    (folder / "job.yaml").write_text(textwrap.dedent(JOB))
    out = folder / "out"
    assert main(["run", str(folder / "job.yaml"), "--out", str(out), "--quiet"]) == 0
    return folder / "job.yaml", out


def test_a_run_writes_one_history_row_per_model_and_epoch(trained):
    _, out = trained
    results = open_results(out)
    history, models = results.history, results.models
    assert len(history) == 3 * len(models) == 36
    assert (
        history.groupby("model_id")["epoch"].apply(list)
        == pd.Series([[1, 2, 3]] * 12, index=sorted(models["model_id"]))
    ).all()
    assert history["hessian_top_eig"].notna().all()
    last = history[history["epoch"] == 3].set_index("model_id").loc[models["model_id"]]
    assert np.array_equal(last["val_acc"].to_numpy(), models["val_acc"].to_numpy())
    on_disk = pd.read_parquet(out / "history")
    assert len(on_disk) == 36 and list(on_disk.columns) == HISTORY_SCHEMA.names
    assert len(pd.read_parquet(out / "models")) == 12  # histories are not models


@pytest.mark.parametrize("damage", ["missing", "rows lost", "truncated"])
def test_a_damaged_history_is_reported_and_its_pack_trained_again(
    trained, tmp_path, capsys, damage
):
    job, original = trained
    out = shutil.copytree(original, tmp_path / "out")
    pack = sorted(p.stem for p in (out / "history").iterdir())[0]
    path = out / "history" / f"{pack}.parquet"
    expected = pq.read_table(path)
    if damage == "missing":
        path.unlink()
    elif damage == "rows lost":
        pq.write_table(pq.read_table(path).slice(1), path)
    else:
        path.write_bytes(path.read_bytes()[:-40])
    assert main(["status", str(out)]) == 2
    assert f"pack {pack} damaged: history file" in capsys.readouterr().out
    with pytest.raises(UserError, match="damaged pack"):
        open_results(out).history  # noqa: B018
    assert main(["run", str(job), "--out", str(out), "--quiet"]) == 0
    assert "4 models trained" in capsys.readouterr().out
    again = pq.read_table(path).replace_schema_metadata(None)
    assert again.equals(expected.replace_schema_metadata(None))  # the same pack, retrained
    assert main(["status", str(out)]) == 0


def test_a_pack_written_before_histories_is_intact_without_one(trained, tmp_path, capsys):
    _, original = trained
    out = shutil.copytree(original, tmp_path / "out")
    store = ResultsDir(out)
    pack = store.pack_ids()[0]
    models = pq.read_table(out / "models" / f"{pack}.parquet")
    metadata = {k: v for k, v in models.schema.metadata.items() if k != b"history"}
    old = models.drop_columns(
        ["feature_effective_rank", "weight_effective_rank", "hp_rho", "hp_label_noise"]
    ).replace_schema_metadata(metadata)
    pq.write_table(old, out / "models" / f"{pack}.parquet")
    (out / "history" / f"{pack}.parquet").unlink()
    assert main(["status", str(out)]) == 0
    assert "damaged" not in capsys.readouterr().out
    results = open_results(out)
    assert len(results.history) == 3 * (len(results.models) - old.num_rows)


def test_a_killed_writers_history_is_removed_and_a_foreign_one_set_aside(trained, tmp_path):
    _, original = trained
    out = shutil.copytree(original, tmp_path / "out")
    store = ResultsDir(out)
    pack = store.pack_ids()[0]
    (out / "models" / f"{pack}.parquet").unlink()  # killed before the commit
    foreign = "0123456789abcdef"
    pq.write_table(pa.table({"x": [1]}), out / "history" / f"{foreign}.parquet")
    store.remove_uncommitted()
    assert not (out / "history" / f"{pack}.parquet").exists()
    assert not (out / "history" / f"{foreign}.parquet").exists()  # not provably ours:
    assert (out / "quarantine" / "history" / f"{foreign}.parquet").exists()  # set aside


def test_history_table_lays_models_out_contiguously_with_epochs_in_order():
    columns = {
        "train_loss": np.array([[1.0, 2.0], [3.0, 4.0]]),
        "val_loss": np.zeros((2, 2)),
        "val_acc": np.ones((2, 2)),
        "lr": np.full((2, 2), 0.1),
    }
    table = history_table(["b", "a"], columns)
    assert table.schema.equals(HISTORY_SCHEMA)
    assert table["model_id"].to_pylist() == ["b", "b", "a", "a"]
    assert table["epoch"].to_pylist() == [1, 2, 1, 2]
    assert table["train_loss"].to_pylist() == [1.0, 2.0, 3.0, 4.0]
    assert table["hessian_top_eig"].null_count == 4


# --- analysis ----------------------------------------------------------------------------------


def test_d_int90_is_the_smallest_dimension_reaching_ninety_percent_of_the_full_space():
    models = pd.DataFrame(
        {
            "hp_subspace_dim": [0, 0, 10, 100, 100, 1000, None, 30],
            "val_acc": [0.8, 0.9, 0.5, 0.77, 0.75, 0.84, 0.85, 0.99],
            "status": ["ok"] * 7 + ["diverged"],  # a diverged model counts in no cohort
        }
    )
    found = intrinsic_dimension(models)
    assert found["full_space_val_acc"] == pytest.approx(0.85)  # null: trained before subspaces
    assert found["threshold"] == pytest.approx(0.765)
    assert found["val_acc_by_dim"] == pytest.approx(
        {"0": 0.85, "10": 0.5, "100": 0.76, "1000": 0.84}
    )
    assert found["d_int90"] == 1000  # 100 falls short: 0.76 < 0.765
    exact = models.assign(val_acc=[0.8, 0.8, 0.5, 0.72, 0.72, 0.84, 0.8, 0.99])
    assert intrinsic_dimension(exact)["d_int90"] == 100  # 0.72 = 0.9 × 0.8 reaches it
    none = intrinsic_dimension(models[models["hp_subspace_dim"].fillna(0) > 0])
    assert none["d_int90"] is None and "no full-space cohort" in none["reason"]
    high = intrinsic_dimension(models.assign(val_acc=[1.0, 1.0, 0, 0, 0, 0, 1.0, 1.0]))
    assert high["d_int90"] is None and "no subspace dimension reaches 90%" in high["reason"]


def test_analyze_by_subspace_dim_reports_d_int90_of_the_run(trained, capsys):
    _, out = trained
    capsys.readouterr()
    assert main(["analyze", str(out), "--by", "hp_subspace_dim", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["intrinsic_dimension"]
    models = pd.read_parquet(out / "models")
    means = models[models["status"] == "ok"].groupby("hp_subspace_dim")["val_acc"].mean()
    assert found["full_space_val_acc"] == pytest.approx(means[0], rel=1e-12)
    assert found["d_int90"] == (20 if means[20] >= 0.9 * means[0] else None)
    assert main(["analyze", str(out), "--by", "hp_subspace_dim"]) == 0
    assert "intrinsic dimension d_int90" in capsys.readouterr().out
    assert main(["analyze", str(out), "--by", "hp_optimizer", "--json"]) == 0
    assert "intrinsic_dimension" not in json.loads(capsys.readouterr().out)


def test_the_report_draws_learning_curves_sharpness_and_simplicity(trained, tmp_path):
    _, out = trained
    page = tmp_path / "report.html"
    assert main(["report", str(out), "--html", str(page), "--by", "hp_subspace_dim"]) == 0
    text = page.read_text()
    for title in (
        "Learning curves",
        "Sharpness through training",
        "Simplicity",
        "Intrinsic dimension",
    ):
        start = text.index(title)
        assert "<svg" in text[start : text.index("<h", start + len(title))], title
    assert "2(1 + β)/η" in text and "λ_max" in text


def test_the_report_of_a_run_without_curves_says_so(trained, tmp_path):
    _, original = trained
    out = shutil.copytree(original, tmp_path / "out")
    for pack in ResultsDir(out).pack_ids():
        models = pq.read_table(out / "models" / f"{pack}.parquet")
        metadata = {k: v for k, v in models.schema.metadata.items() if k != b"history"}
        pq.write_table(models.replace_schema_metadata(metadata), out / "models" / f"{pack}.parquet")
        (out / "history" / f"{pack}.parquet").unlink()
    page = tmp_path / "report.html"
    assert main(["report", str(out), "--html", str(page)]) == 0
    text = page.read_text()
    assert "No learning curves in this results folder" in text
    assert "Sharpness was not tracked through training" in text
