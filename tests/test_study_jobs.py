"""The ready-made study jobs (issue #14 item 7): each loads, expands to its intended design —
every cohort of the column it is analysed by over the same seeds — and passes the checks `run`
makes before training; a slice of sam-vs-sgd trains and shows SAM with ρ = 0 is SGD."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import rashomon
from rashomon.engine.cli import main
from rashomon.engine.run._preflight import check_models
from rashomon.jobs import column_value, expand, load_job, parse_job, prepare_job_dataset

JOBS = Path(__file__).resolve().parents[1] / "jobs"

# job: (the column `analyze --by` compares, its values, models per value, seed triples)
STUDIES = {
    "sam-vs-sgd": ("hp_rho", [None, 0.0, 0.05, 0.2, 0.5, 1.0, 2.0], 16, (8, 2, 1)),
    "width-sweep": ("hp_hidden", ["[8]", "[32]", "[128]", "[512]"], 16, (8, 2, 1)),
    "intrinsic-dim": ("hp_subspace_dim", [0, 10, 100, 250, 500, 1000, 2000, 3000, 4000], 12,
                      (6, 2, 1)),
}  # fmt: skip

# sam-vs-sgd: each rho value is one procedure, so `--by hp_rho` compares procedures.
PROCEDURES = {
    None: ("sgd", None, None),
    0.0: ("sam", True, False),
    0.05: ("sam", True, False),
    0.2: ("sam", True, False),
    0.5: ("sam", False, False),
    2.0: ("sam", False, False),
    1.0: ("sam", True, True),
}


def design(name: str) -> pd.DataFrame:
    """One row per model of the job: its seeds, and its hp_ columns as the models table has them."""
    return pd.DataFrame(
        [
            {"model_id": v.model_id, "seeds": (v.init_seed, v.order_seed, v.data_seed)}
            | {f"hp_{k}": column_value(k, value) for k, value in v.hparams.items()}
            for v in expand(load_job(JOBS / f"{name}.yaml"))
        ]
    )


@pytest.mark.parametrize("name", list(STUDIES))
def test_a_study_expands_to_its_cohorts_each_over_the_same_seeds(name):
    by, values, per_cohort, (init, order, data) = STUDIES[name]
    models = design(name)
    assert models["model_id"].is_unique and len(models) == len(values) * per_cohort
    cohorts = models[by].astype(object).where(models[by].notna(), None)
    assert Counter(cohorts) == {value: per_cohort for value in values}
    seeds = {(i, o, d) for i in range(init) for o in range(order) for d in range(data)}
    for _, cohort in models.groupby(cohorts.map(repr)):
        assert set(cohort["seeds"]) == seeds and cohort["seeds"].is_unique


def test_sam_vs_sgd_names_each_procedure_by_its_rho():
    models = design("sam-vs-sgd")
    for _, row in models.iterrows():
        rho = None if pd.isna(row["hp_rho"]) else row["hp_rho"]
        sam = row["hp_optimizer"], row["hp_sam_normalize"], row["hp_sam_adaptive"]
        assert sam == PROCEDURES[rho]
    assert set(models["hp_lr"]) == {0.1} and set(models["hp_momentum"]) == {0.9}


def test_the_intrinsic_dimension_study_has_the_full_space_and_dimensions_below_it():
    job = load_job(JOBS / "intrinsic-dim.yaml")
    dataset = prepare_job_dataset(job)
    hidden = job.model.hidden[0]
    n_parameters = (dataset.n_features + 1) * hidden + (hidden + 1) * dataset.n_classes
    dims = set(design("intrinsic-dim")["hp_subspace_dim"])
    assert 0 in dims and 0 < max(dims) < n_parameters == 5110


@pytest.mark.parametrize("name", list(STUDIES))
def test_a_study_passes_the_checks_before_training_and_round_trips(name, tmp_path):
    job = load_job(JOBS / f"{name}.yaml")
    assert job.name == name
    assert parse_job(yaml.safe_load(job.to_yaml()), "job.yaml").job_hash == job.job_hash
    check_models(job, prepare_job_dataset(job))


SLICE = """\
name: sam-slice
dataset: {source: breast_cancer}
model: {family: mlp, hidden: [8]}
train: {epochs: 2, batch_size: 64, optimizer: sgd, lr: 0.1, momentum: 0.9}
flatness: {track: true, curvature_examples: 64, trace_probes: 2, adaptive_probes: 2}
"""


def test_a_slice_of_sam_vs_sgd_trains_and_sam_with_rho_zero_is_sgd(ray_cluster, tmp_path):
    """The study's population section on a small problem: SAM at ρ = 0 predicts as SGD (to
    rounding), and `analyze --by hp_rho` gives every procedure its own cohort."""
    population = yaml.safe_load((JOBS / "sam-vs-sgd.yaml").read_text())["population"]
    population["seeds"] = {"init": 2}
    document = yaml.safe_load(SLICE) | {"population": population}
    job = tmp_path / "slice.yaml"
    job.write_text(yaml.safe_dump(document))
    out = tmp_path / "out"
    assert main(["run", str(job), "--out", str(out), "--quiet"]) == 0
    models = pd.read_parquet(out / "models").set_index("model_id")
    assert len(models) == 14 and set(models["status"]) == {"ok"}
    # Pack invariance holds to rounding (tests/test_trainer.py): the two cohorts train in packs
    # of other sizes, so float32 sums may round apart; a missed ascent step would not be 1e-6.
    predictions = pd.read_parquet(out / "predictions").join(models, on="model_id")
    sgd = predictions[predictions["hp_optimizer"] == "sgd"]
    sam0 = predictions[predictions["hp_rho"] == 0.0]
    order = ["init_seed", "split", "example_id"]
    sgd, sam0 = sgd.sort_values(order), sam0.sort_values(order)
    assert len(sgd) == len(sam0) > 0
    np.testing.assert_allclose(sam0["prob_1"], sgd["prob_1"], rtol=0, atol=1e-6)
    sam = predictions[predictions["hp_rho"] == 0.2].sort_values(order)
    assert np.abs(sam["prob_1"].to_numpy() - sgd["prob_1"].to_numpy()).max() > 1e-3
    columns = ["hp_optimizer", "hp_rho", "init_seed"]
    history = pd.read_parquet(out / "history").join(models[columns], on="model_id")
    first = history[history["hp_optimizer"] == "sgd"].sort_values(["init_seed", "epoch"])
    second = history[history["hp_rho"] == 0.0].sort_values(["init_seed", "epoch"])
    assert len(first) == len(second) == 2 * 2
    np.testing.assert_allclose(second["hessian_top_eig"], first["hessian_top_eig"], rtol=1e-5)
    by_rho = rashomon.analyze(out, epsilon=1.0, by="hp_rho")
    assert list(by_rho.cohorts) == ["0.0", "0.05", "0.2", "0.5", "1.0", "2.0", "<missing>"]
    assert by_rho.cohorts["0.0"].overall == pytest.approx(by_rho.cohorts["<missing>"].overall)
