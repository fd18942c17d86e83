"""Linear mode connectivity: interpolation paths, barrier heights, and pairs sampled from a results
folder built by hand (no Ray) with random weights."""

from __future__ import annotations

import json
import shutil
import textwrap
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from _svg import figures, size, texts
from _synthetic import write_examples, write_pack
from safetensors.torch import save_file

from rashomon.analysis import _connectivity as connectivity
from rashomon.analysis import open_results, rashomon_set
from rashomon.analysis._connectivity import (
    barrier_height,
    connectivity_section,
    interpolation_path,
    linear_mode_connectivity,
)
from rashomon.engine.model import Architecture, forward, init_parameters
from rashomon.jobs import UserError, load_job, prepare_job_dataset

JOB = """
name: tiny
dataset: {source: wine, split: {val: 0.25, test: 0.25, seed: 1}}
model: {family: mlp, hidden: [8], activation: relu}
train: {epochs: 3, batch_size: 16, optimizer: sgd, lr: 0.05, momentum: 0.9}
population:
  seeds: {init: 3, order: 2, data: 2}
  grid: {lr: [0.05, 1000000.0], dropout: [0.0, 0.3]}
resources: {cpus_per_worker: 1, models_per_pack: 5}
output: {predictions: [val, test], weights: true}
"""
# pack -> (hidden widths, model ids, val_acc, status); m6 diverged, so never sampled
PACKS = {
    "p0": ((8,), ["m0", "m1", "m2", "m3"], [0.9, 0.895, 0.893, 0.85], ["ok"] * 4),
    "p1": ((8,), ["m4", "m5", "m6"], [0.8, 0.7, 0.95], ["ok", "ok", "diverged"]),
    "p2": ((4,), ["m7", "m8"], [0.6, 0.55], ["ok", "ok"]),
}
MEMBERS = ["m0", "m1", "m2"]  # within ε = 0.01 of the best ok val_acc
HIDDEN = {m: hidden for hidden, ids, _, _ in PACKS.values() for m in ids}


def one(params: list[torch.Tensor], i: int = 0) -> list[torch.Tensor]:
    return [p[i] for p in params]


def mean_loss_and_error(arch, params, inputs, labels) -> tuple[float, float]:
    logits = forward(arch, [p.unsqueeze(0) for p in params], inputs)[0]
    error = (logits.argmax(-1) != labels).double().mean()
    return float(F.cross_entropy(logits.double(), labels)), float(error)


def test_a_model_with_itself_has_a_flat_path_and_no_barrier():
    arch = Architecture(5, (7, 6), 3, "tanh")
    params = one(init_parameters(arch, [3], torch.float32, torch.device("cpu")))
    inputs, labels = torch.randn(50, 5), torch.randint(0, 3, (50,))
    path = interpolation_path(arch, params, params, inputs, labels)
    assert list(path.columns) == ["t", "loss", "error"] and len(path) == 25
    assert path["t"].iloc[0] == 0.0 and path["t"].iloc[-1] == 1.0
    assert (path["loss"] == path["loss"].iloc[0]).all()
    assert (path["error"] == path["error"].iloc[0]).all()
    assert barrier_height(path) == pytest.approx((0.0, 0.0), abs=1e-12)


def test_path_ends_are_each_models_own_loss_and_error():
    arch = Architecture(6, (10, 5), 4, "relu")
    a, b = (
        [2 * p for p in one(init_parameters(arch, [seed], torch.float32, torch.device("cpu")))]
        for seed in (1, 2)
    )
    inputs, labels = torch.randn(300, 6), torch.randint(0, 4, (300,))
    path = interpolation_path(arch, a, b, inputs, labels, n_points=9)
    for row, params in ((0, a), (-1, b)):
        loss, error = mean_loss_and_error(arch, params, inputs, labels)
        assert path["loss"].iloc[row] == pytest.approx(loss, rel=1e-6)
        assert path["error"].iloc[row] == pytest.approx(error, abs=1e-12)
    assert path["loss"].iloc[0] != pytest.approx(path["loss"].iloc[-1])


def test_logistic_paths_are_convex_so_their_loss_barrier_vanishes():
    arch = Architecture(5, (), 3)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(400, 5, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (400,), generator=generator)
    for _ in range(5):
        a, b = ([4 * torch.randn(5, 3, generator=generator, dtype=torch.float64),
                 torch.randn(1, 3, generator=generator, dtype=torch.float64)]
                for _ in range(2))  # fmt: skip
        path = interpolation_path(arch, a, b, inputs, labels)
        assert np.diff(path["loss"].to_numpy(), 2).min() >= -1e-12
        assert 0.0 <= barrier_height(path)[0] <= 1e-12


def permuted_relu_pair(scale: float = 6.0):
    """|x| − 1 as a 1-hidden-layer ReLU net (relu(x) + relu(−x)), and the same net with its two
    hidden units swapped: one function, but the midpoint of their weights is the zero net."""
    arch = Architecture(1, (2,), 2, "relu")
    head = [torch.tensor([[0.0, scale], [0.0, scale]]), torch.tensor([[0.0, -scale]])]
    a = [torch.tensor([[1.0, -1.0]]), torch.zeros(1, 2), *head]
    b = [torch.tensor([[-1.0, 1.0]]), torch.zeros(1, 2), *head]
    inputs = torch.tensor([[-2.0], [-1.5], [1.5], [2.0], [-0.5], [0.0], [0.5]])
    labels = torch.tensor([1, 1, 1, 1, 0, 0, 0])
    return arch, a, b, inputs, labels


def test_permuted_hidden_units_give_equal_ends_and_a_barrier_between():
    arch, a, b, inputs, labels = permuted_relu_pair()
    torch.testing.assert_close(forward(arch, [p[None] for p in a], inputs),
                               forward(arch, [p[None] for p in b], inputs))  # fmt: skip
    path = interpolation_path(arch, a, b, inputs, labels)
    assert path["loss"].iloc[0] == path["loss"].iloc[-1] < 0.1
    assert path["error"].iloc[0] == path["error"].iloc[-1] == 0.0
    loss_barrier, error_barrier = barrier_height(path)
    assert loss_barrier > 2.0
    assert error_barrier == pytest.approx(4 / 7)  # the zero net at t = 0.5 says "0" everywhere


def test_random_permutation_of_hidden_units_keeps_each_end():
    arch = Architecture(4, (12,), 3, "gelu")
    w0, b0, w1, b1 = one(init_parameters(arch, [5], torch.float64, torch.device("cpu")))
    order = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    permuted = [w0[:, order], b0[:, order], w1[order], b1]
    inputs, labels = torch.randn(80, 4, dtype=torch.float64), torch.randint(0, 3, (80,))
    path = interpolation_path(arch, [w0, b0, w1, b1], permuted, inputs, labels)
    assert path["loss"].iloc[-1] == pytest.approx(path["loss"].iloc[0], rel=1e-12)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("connectivity") / "run"
    root.mkdir()
    (root / "job.yaml").write_text(textwrap.dedent(JOB))
    dataset = prepare_job_dataset(load_job(root / "job.yaml"))
    names = np.array(["train", "val", "test"], dtype=object)
    examples = pd.DataFrame(
        {"example_id": dataset.example_ids, "split": names[dataset.split], "label": dataset.labels}
    )
    write_examples(root, examples, dataset.classes)
    test_ids = dataset.example_ids[dataset.indices("test")]
    (root / "weights").mkdir()
    rng = np.random.default_rng(0)
    for seed, (pack_id, (hidden, ids, val_acc, status)) in enumerate(PACKS.items()):
        models = pd.DataFrame(
            {
                "model_id": ids,
                "init_seed": range(len(ids)),
                "hp_family": "mlp",
                "hp_hidden": json.dumps(list(hidden)),
                "hp_activation": "relu",
                "val_acc": val_acc,
                "val_loss": 1.0 - np.asarray(val_acc),
                "status": status,
            }
        )
        probabilities = rng.dirichlet(np.ones(3), (len(ids), len(test_ids))).astype(np.float32)
        pack_id = write_pack(root, pack_id, models, {"test": probabilities}, {"test": test_ids})
        arch = Architecture(dataset.n_features, hidden, dataset.n_classes)
        params = init_parameters(arch, range(10 * seed, 10 * seed + len(ids)), torch.float32,
                                 torch.device("cpu"))  # fmt: skip
        metadata = {"model_ids": json.dumps(ids), "hidden": json.dumps(list(hidden)),
                    "activation": "relu"}  # fmt: skip
        weights = dict(zip(arch.parameter_names(), params, strict=True))
        save_file(weights, str(root / "weights" / f"{pack_id}.safetensors"), metadata)
    return root, dataset


def saved_model(root, dataset, model_id: str) -> tuple[Architecture, list[torch.Tensor]]:
    pack_id = next(p for p, (_, ids, _, _) in PACKS.items() if model_id in ids)
    hidden, ids = PACKS[pack_id][:2]
    arch = Architecture(dataset.n_features, hidden, dataset.n_classes)
    seed = list(PACKS).index(pack_id)
    params = init_parameters(arch, [10 * seed + ids.index(model_id)], torch.float32,
                             torch.device("cpu"))  # fmt: skip
    return arch, one(params)


def pair_set(frame: pd.DataFrame) -> set[frozenset[str]]:
    return {frozenset(p) for p in zip(frame["model_a"], frame["model_b"], strict=True)}


def test_every_pair_inside_and_reaching_outside_is_drawn_once_per_architecture(folder):
    root, _ = folder
    pairs = linear_mode_connectivity(root, n_pairs=100)
    assert rashomon_set(open_results(root).models).model_ids == MEMBERS
    assert pairs["inside"].dtype == bool and len(pairs) == len(pair_set(pairs))
    assert pair_set(pairs[pairs["inside"]]) == {frozenset(p) for p in combinations(MEMBERS, 2)}
    wide = ["m0", "m1", "m2", "m3", "m4", "m5"]
    reaching = {frozenset(p) for p in combinations(wide, 2) if not set(p) <= set(MEMBERS)}
    assert pair_set(pairs[~pairs["inside"]]) == reaching | {frozenset(("m7", "m8"))}
    assert all(
        HIDDEN[a] == HIDDEN[b] for a, b in zip(pairs["model_a"], pairs["model_b"], strict=True)
    )


def test_sampled_pairs_are_deterministic_and_match_interpolation_path(folder, monkeypatch):
    root, dataset = folder
    pairs = linear_mode_connectivity(open_results(root), n_pairs=2, seed=3)
    assert list(pairs.columns) == ["model_a", "model_b", "inside", "loss_barrier",
                                   "error_barrier", "t", "loss", "error"]  # fmt: skip
    assert pairs["inside"].tolist() == [True, True, False, False]
    pd.testing.assert_frame_equal(pairs, linear_mode_connectivity(root, n_pairs=2, seed=3))
    assert pair_set(linear_mode_connectivity(root, n_pairs=2, seed=4)) != pair_set(pairs)
    rows = dataset.indices("test")
    inputs, labels = (
        torch.from_numpy(dataset.features[rows]),
        torch.from_numpy(dataset.labels[rows]),
    )
    for row in pairs.itertuples():
        (arch, a), (_, b) = (
            saved_model(root, dataset, row.model_a),
            saved_model(root, dataset, row.model_b),
        )
        path = interpolation_path(arch, a, b, inputs, labels)
        np.testing.assert_allclose(row.t, path["t"])
        np.testing.assert_allclose(row.loss, path["loss"], rtol=1e-6)
        np.testing.assert_allclose(row.error, path["error"], atol=1e-12)
        assert (row.loss_barrier, row.error_barrier) == pytest.approx(
            barrier_height(path), abs=1e-6
        )
    monkeypatch.setattr(connectivity, "_ACTIVATION_ELEMENTS", 1)
    monkeypatch.setattr(connectivity, "_PARAMETER_ELEMENTS", 1)
    chunked = linear_mode_connectivity(root, n_pairs=2, seed=3)
    np.testing.assert_allclose(np.stack(chunked["loss"]), np.stack(pairs["loss"]), rtol=1e-6)
    np.testing.assert_array_equal(np.stack(chunked["error"]), np.stack(pairs["error"]))


def test_report_section_draws_paths_and_tabulates_barriers(folder):
    root, _ = folder
    results = open_results(root)
    section = connectivity_section(results, rashomon_set(results.models), n_pairs=3)
    assert section.count("<figure><svg") == 1 and "<table" in section
    assert "both in the Rashomon set" in section and "one or both outside" in section
    (svg,) = figures(section)
    width, height = size(svg)
    laid_out = texts(svg)
    assert "test loss along the path" in [text.content for text in laid_out]
    for text in laid_out:
        x0, y0, x1, y1 = text.box
        assert x0 >= -0.5 and y0 >= -0.5 and x1 <= width + 0.5 and y1 <= height + 0.5, text
        assert text.css_px >= 10, text


def test_a_folder_without_weights_is_refused(folder, tmp_path):
    root, _ = folder
    copy = shutil.copytree(root, tmp_path / "run", ignore=shutil.ignore_patterns("weights"))
    with pytest.raises(UserError, match=r"no saved weights .*output\.weights: true"):
        linear_mode_connectivity(copy)
    results = open_results(copy)
    section = connectivity_section(results, rashomon_set(results.models))
    assert section.startswith("<p>") and "output.weights" in section


def test_a_dataset_that_cannot_be_prepared_or_changed_is_refused(folder, tmp_path):
    root, _ = folder
    copy = shutil.copytree(root, tmp_path / "run")
    job = copy / "job.yaml"
    job.write_text(job.read_text().replace("source: wine", "source: wines"))
    with pytest.raises(UserError, match=r"cannot prepare the job's dataset.*not a built-in"):
        linear_mode_connectivity(copy)
    job.write_text("# dataset_fingerprint: 0123abcd\n" + textwrap.dedent(JOB))
    with pytest.raises(UserError, match="dataset file changed since the run"):
        linear_mode_connectivity(copy)
