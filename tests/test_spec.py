"""The job spec: what loads, the defaults, and that every mistake is one clear UserError."""

from __future__ import annotations

import copy
import hashlib
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from rashomon.jobs import HYPERPARAMETERS, Job, UserError, load_job, parse_job
from rashomon.jobs._sections import ModelConfig, TrainConfig

JOBS = Path(__file__).resolve().parents[1] / "jobs"

FULL = """\
name: adult-mlp
dataset:
  source: adult
  target: income
  groups: [sex, race]
  exclude: []
  split: {val: 0.2, test: 0.2, seed: 0}
model:
  family: mlp
  hidden: [64]
  activation: relu
  dropout: 0.0
train:
  epochs: 20
  batch_size: 256
  optimizer: sgd
  lr: 0.1
  momentum: 0.9
  nesterov: false
  betas: [0.9, 0.999]
  eps: 1.0e-8
  weight_decay: 0.0
  schedule: constant
  dtype: float32
population:
  seeds: {init: 10, order: 10, data: 1}
  grid: {lr: [0.03, 0.1], weight_decay: [0.0, 1.0e-4]}
  sample: {n: 0, seed: 0, dropout: {uniform: [0.0, 0.5]}}
flatness: {enabled: true}
resources: {cpus_per_worker: 1, gpus_per_worker: 0, models_per_pack: auto}
output: {predictions: [val, test], weights: true}
search: {momentum: {uniform: [0.5, 0.99]}, epochs: {int: [5, 20]}}
"""


def minimal(**sections: Any) -> dict[str, Any]:
    return {"name": "job", "dataset": {"source": "adult"}, **sections}


def parse(document: dict[str, Any]) -> Job:
    return parse_job(document, "job.yaml")


def error_of(document: dict[str, Any]) -> str:
    with pytest.raises(UserError) as caught:
        parse(document)
    return str(caught.value)


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# --- what loads -------------------------------------------------------------------------------


def test_full_example_loads(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, FULL))
    assert job.name == "adult-mlp"
    assert job.dataset.groups == ("sex", "race")
    assert job.model.hidden == (64,)
    assert job.train.betas == (0.9, 0.999)
    assert job.population.grid.axes() == {"lr": (0.03, 0.1), "weight_decay": (0.0, 1e-4)}
    assert job.population.sample.distributions()["dropout"].kind == "uniform"
    assert job.search.distributions()["epochs"].args == (5, 20)
    assert job.base_dir == tmp_path.resolve()
    assert job.source == str(tmp_path / "job.yaml")


def test_defaults() -> None:
    job = parse(minimal())
    assert job.dataset.target is None
    assert job.dataset.groups == job.dataset.exclude == ()
    assert job.dataset.split.model_dump() == {"val": 0.2, "test": 0.2, "seed": 0}
    assert (job.model.family, job.model.activation, job.model.dropout) == ("mlp", "relu", 0.0)
    assert job.model.hidden is None and job.resolve({})["hidden"] == (64,)
    assert job.train == TrainConfig(
        epochs=20,
        batch_size=256,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        nesterov=False,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        schedule="constant",
        dtype="float32",
    )
    seeds = job.population.seeds
    assert (seeds.init, seeds.order, seeds.data, seeds.paired) == (10, 10, 1, False)
    assert job.population.grid.axes() == {} and job.population.grid.size == 1
    assert job.population.sample.n == 0 and job.population.sample.distributions() == {}
    assert job.flatness.enabled is True
    assert job.resources.model_dump() == {
        "cpus_per_worker": 1,
        "gpus_per_worker": 0,
        "models_per_pack": "auto",
    }
    assert job.output.predictions == ("val", "test") and job.output.weights is True
    assert job.search.distributions() == {}


def test_logistic_defaults_to_no_hidden_layers() -> None:
    job = parse(minimal(model={"family": "logistic"}))
    assert job.model.hidden is None and job.resolve({})["hidden"] == ()


def test_yaml_floats_without_a_dot(tmp_path: Path) -> None:
    """PyYAML reads `1e-3` as a string; job files must get the float everyone expects."""
    job = load_job(write(tmp_path, "name: j\ndataset: {source: adult}\ntrain: {lr: 1e-3}\n"))
    assert job.train.lr == 0.001


def test_misc_accepted_values() -> None:
    job = parse(
        minimal(
            train={"lr": 1},  # an int where a float is expected is fine
            population={"seeds": 1000},
            flatness={"enabled": False, "trace_probes": 64, "avg_sigma": 1},
            resources={"gpus_per_worker": 0.25, "models_per_pack": 64},
            output={"predictions": ["test", "train"], "weights": False},
        )
    )
    assert job.train.lr == 1.0 and isinstance(job.train.lr, float)
    assert job.population.seeds.paired and job.population.seeds.count == 1000
    assert job.flatness.enabled is False and job.flatness.trace_probes == 64
    assert job.flatness.avg_sigma == 1.0 and job.flatness.eig_iterations == 30
    assert job.resources.models_per_pack == 64
    assert job.output.predictions == ("train", "test")  # canonical order


def test_hyperparameter_table() -> None:
    assert list(HYPERPARAMETERS) == [
        *("family", "hidden", "activation", "dropout", "channels", "kernel", "stride", "pool"),
        *("epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov"),
        *("weight_decay", "schedule", "rho", "sam_normalize", "sam_adaptive", "label_noise"),
        "subspace_dim",
    ]
    per_model = {name for name, hp in HYPERPARAMETERS.items() if hp.per_model}
    assert per_model == {
        *("lr", "momentum", "weight_decay", "dropout"),
        *("rho", "sam_normalize", "sam_adaptive", "label_noise"),
    }
    for name, hp in HYPERPARAMETERS.items():
        section = ModelConfig if hp.section == "model" else TrainConfig
        assert name in section.model_fields
    assert HYPERPARAMETERS["hidden"].type is tuple and HYPERPARAMETERS["lr"].type is float


# --- job hash and YAML round trip --------------------------------------------------------------


def test_job_hash_is_stable_across_loads(tmp_path: Path) -> None:
    first, second = load_job(write(tmp_path, FULL)), load_job(write(tmp_path, FULL, "b.yaml"))
    assert first.job_hash == second.job_hash
    assert len(first.job_hash) == 64
    # Spelling the defaults out or leaving them implicit is the same job.
    spelled_out = minimal(
        train={"lr": 0.1, "epochs": 20},
        resources={"cpus_per_worker": 1, "gpus_per_worker": 0},
        output={"predictions": ["val", "test"]},
    )
    assert parse(minimal()).job_hash == parse(spelled_out).job_hash


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("name", "other"),
        ("dataset.source", "compas"),
        ("dataset.target", "label"),
        ("dataset.groups", ["sex"]),
        ("dataset.exclude", ["age"]),
        ("dataset.split.seed", 1),
        ("model.family", "logistic"),
        ("model.hidden", [32]),
        ("model.activation", "tanh"),
        ("model.dropout", 0.1),
        ("train.epochs", 21),
        ("train.lr", 0.2),
        ("train.betas", [0.8, 0.999]),
        ("train.eps", 1e-7),
        ("train.dtype", "float64"),
        ("population.seeds", 100),
        ("population.seeds", {"init": 10, "order": 10, "data": 2}),
        ("population.grid", {"lr": [0.1, 0.03]}),
        ("population.sample", {"n": 0, "seed": 1}),
        ("flatness", {"enabled": True, "trace_probes": 8}),
        ("resources.models_per_pack", 8),
        ("output.weights", False),
        ("search", {"lr": {"loguniform": [0.001, 0.1]}}),
    ],
)
def test_job_hash_changes_with_any_field(path: str, value: Any) -> None:
    document = minimal(model={"family": "mlp"})
    changed = copy.deepcopy(document)
    *parents, key = path.split(".")
    node = changed
    for part in parents:
        node = node.setdefault(part, {})
    node[key] = value
    assert parse(document).job_hash != parse(changed).job_hash


def test_bare_seed_count_hashes_apart_from_the_factorial() -> None:
    paired = parse(minimal(population={"seeds": 10}))
    factorial = parse(minimal(population={"seeds": {"init": 10, "order": 10, "data": 1}}))
    assert paired.job_hash != factorial.job_hash


@pytest.mark.parametrize(
    "document",
    [
        yaml.safe_load(FULL),
        minimal(),
        minimal(model={"family": "logistic"}, population={"seeds": 7}),
        minimal(population={"sample": {"n": 3, "hidden": {"choice": [[8], [16, 16]]}}}),
    ],
)
def test_to_yaml_round_trips(document: dict[str, Any]) -> None:
    job = parse(document)
    again = parse(yaml.safe_load(job.to_yaml()))
    assert again.job_hash == job.job_hash
    assert again == job


def test_base_dir_and_source_are_not_part_of_the_job(tmp_path: Path) -> None:
    job = parse_job(minimal(), "somewhere/job.yaml", base_dir=tmp_path)
    assert job.base_dir == tmp_path
    dumped = job.model_dump()
    assert "base_dir" not in dumped and "source" not in dumped
    assert job.job_hash == parse_job(minimal(), "elsewhere.yaml").job_hash
    assert "base_dir" in error_of(minimal(base_dir="/tmp"))  # not a settable key either


# --- every mistake is one UserError naming the place ----------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        # unknown keys, with the valid ones or a close match
        (minimal(epochs=3), "unknown key 'epochs' at the top level; valid keys: name, dataset"),
        (minimal(nmae="x"), "did you mean 'name'?"),
        (minimal(train={"epoch": 3}), "unknown key 'epoch' in train; did you mean 'epochs'?"),
        (minimal(dataset={"source": "a", "split": {"vall": 0.1}}), "in dataset.split"),
        (minimal(population={"seeds": {"inti": 3}}), "in population.seeds; did you mean 'init'"),
        # types: bools are not numbers, strings are not numbers, scalars are not mappings
        (minimal(train={"epochs": True}), "train.epochs: expected an integer, got true"),
        (minimal(train={"epochs": "ten"}), "train.epochs: expected an integer, got 'ten'"),
        (minimal(train={"epochs": 2.5}), "train.epochs: expected an integer, got 2.5"),
        (minimal(train={"lr": True}), "train.lr: expected a number, got true"),
        (minimal(train={"lr": "fast"}), "train.lr: expected a number, got 'fast'"),
        (minimal(train={"lr": float("inf")}), "train.lr: expected a finite number"),
        (minimal(train={"nesterov": 1}), "train.nesterov: expected true or false, got 1"),
        (minimal(train=5), "train: expected a mapping"),
        (minimal(dataset={"source": 3}), "dataset.source: expected a string, got 3"),
        (minimal(model={"hidden": 64}), "model.hidden: expected a list, got 64"),
        (minimal(model={"hidden": [64, True]}), "model.hidden[1]: expected an integer"),
        (minimal(flatness={"enabled": "yes"}), "flatness.enabled: expected true or false"),
        (minimal(flatness={"trace_probes": 1}), "flatness.trace_probes: must be >= 2 (got 1)"),
        (minimal(flatness={"avg_sigma": 0}), "flatness.avg_sigma: must be > 0 (got 0)"),
        (
            minimal(flatness={"probes": 8}),
            "unknown key 'probes' in flatness; did you mean 'trace_probes'",
        ),
        (minimal(output={"weights": "no"}), "output.weights: expected true or false"),
        # bounds
        (minimal(train={"epochs": 0}), "train.epochs: must be >= 1 (got 0)"),
        (minimal(train={"epochs": -3}), "train.epochs: must be >= 1 (got -3)"),
        (minimal(train={"batch_size": 0}), "train.batch_size: must be >= 1"),
        (minimal(train={"lr": -0.1}), "train.lr: must be > 0 (got -0.1)"),
        (minimal(train={"lr": 0}), "train.lr: must be > 0 (got 0)"),
        (minimal(train={"momentum": 1.0}), "train.momentum: must be < 1"),
        (minimal(train={"betas": [0.9, 1.0]}), "train.betas[1]: must be < 1"),
        (minimal(train={"betas": [0.9]}), "train.betas"),
        (minimal(train={"eps": 0}), "train.eps: must be > 0"),
        (minimal(train={"weight_decay": -1e-4}), "train.weight_decay: must be >= 0"),
        (minimal(model={"dropout": 1}), "model.dropout: must be < 1"),
        (minimal(model={"hidden": [64, 0]}), "model.hidden[1]: must be > 0"),
        (minimal(resources={"cpus_per_worker": 0}), "resources.cpus_per_worker: must be > 0"),
        (minimal(resources={"gpus_per_worker": -1}), "resources.gpus_per_worker: must be >= 0"),
        (minimal(resources={"models_per_pack": 0}), "resources.models_per_pack: expected 'auto'"),
        (minimal(resources={"models_per_pack": True}), "resources.models_per_pack"),
        (minimal(population={"seeds": 0}), "population.seeds: the number of seeds must be >= 1"),
        (minimal(population={"seeds": True}), "population.seeds: expected a number of seeds"),
        (minimal(population={"seeds": {"init": 0}}), "population.seeds.init: must be >= 1"),
        # choices
        (
            minimal(train={"optimizer": "sgdd"}),
            "train.optimizer: must be 'sgd', 'adam', 'adamw' or",
        ),
        (minimal(model={"activation": "Relu"}), "did you mean 'relu'?"),
        (minimal(output={"predictions": ["valid"]}), "output.predictions[0]: must be 'train'"),
        (minimal(output={"predictions": ["val", "val"]}), "output.predictions: 'val' is listed"),
        # split fractions
        (minimal(dataset={"source": "a", "split": {"val": 1.0}}), "dataset.split.val: must be < 1"),
        (minimal(dataset={"source": "a", "split": {"test": 0}}), "dataset.split.test: must be > 0"),
        (minimal(dataset={"source": "a", "split": {"val": 0.5, "test": 0.5}}), "val + test"),
        (minimal(dataset={"source": "a", "split": {"val": 0.9}}), "dataset.split.test: val + test"),
        # dataset columns
        (minimal(dataset={"source": "a", "groups": ["sex", "sex"]}), "dataset.groups: 'sex'"),
        (minimal(dataset={"source": "a", "target": "y", "exclude": ["y"]}), "dataset.exclude"),
        # cross-field rules
        (minimal(train={"optimizer": "adam", "nesterov": True}), "train.nesterov: nesterov needs"),
        (minimal(train={"momentum": 0, "nesterov": True}), "train.nesterov: nesterov needs mom"),
        (minimal(model={"family": "logistic", "hidden": [64]}), "model.hidden: a logistic model"),
        (minimal(model={"hidden": []}), "model.hidden: an mlp needs at least one hidden layer"),
        # required keys and the name
        ({"dataset": {"source": "a"}}, "name: required"),
        ({"name": "job"}, "dataset: required"),
        (minimal(dataset={"target": "y"}), "dataset.source: required"),
        ({"name": "my job", "dataset": {"source": "a"}}, "name: must be letters, digits"),
        ({"name": "..", "dataset": {"source": "a"}}, "name: must be letters"),
        ({"name": "a/b", "dataset": {"source": "a"}}, "folder name"),
        ({"name": 7, "dataset": {"source": "a"}}, "name: expected a string, got 7"),
    ],
)
def test_bad_input_names_the_key(document: dict[str, Any], expected: str) -> None:
    message = error_of(document)
    assert message.startswith("job.yaml: ")
    assert expected in message


@pytest.mark.parametrize(
    ("population", "expected"),
    [
        (
            {"grid": {"lrr": [0.1]}},
            "population.grid.lrr: unknown hyperparameter; did you mean 'lr'?",
        ),
        ({"grid": {"seed": [1, 2]}}, "population.grid.seed: unknown hyperparameter; valid: "),
        ({"grid": {"dtype": ["float64"]}}, "population.grid.dtype: unknown hyperparameter"),
        ({"grid": {"lr": [0.1, -1]}}, "population.grid.lr[1]: must be > 0 (got -1)"),
        ({"grid": {"epochs": [5, True]}}, "population.grid.epochs[1]: expected an integer"),
        ({"grid": {"hidden": [[8], [8, 0]]}}, "population.grid.hidden[1][1]: must be > 0"),
        ({"grid": {"optimizer": ["sgd", "rmsprop"]}}, "population.grid.optimizer[1]: must be"),
        ({"grid": {"lr": []}}, "population.grid.lr: must not be empty"),
        ({"grid": {"lr": 0.1}}, "population.grid.lr: expected a list, got 0.1"),
        ({"grid": {"lr": [0.1, 0.03, 0.1]}}, "population.grid.lr: 0.1 is listed twice"),
        ({"grid": {"lr": [1, 1.0]}}, "population.grid.lr: 1.0 is listed twice"),
        ({"grid": {"hidden": [[8], [8]]}}, "population.grid.hidden: [8] is listed twice"),
        (
            {"grid": {"lr": [0.1]}, "sample": {"n": 2, "lr": {"uniform": [0.1, 0.2]}}},
            "'lr' is in both population.grid and population.sample.lr",
        ),
        # distributions
        ({"sample": {"n": 1, "lr": {"loguniform": [0, 0.1]}}}, "sample.lr.loguniform[0]: must be"),
        ({"sample": {"n": 1, "lr": {"loguniform": [0.1, 0.01]}}}, "loguniform: needs 0 < low"),
        ({"sample": {"n": 1, "lr": {"uniform": [0.1, 0.1]}}}, "lr.uniform: needs low < high"),
        ({"sample": {"n": 1, "lr": {"uniform": [0.1]}}}, "lr.uniform: expected exactly 2 values"),
        ({"sample": {"n": 1, "epochs": {"int": [9, 3]}}}, "epochs.int: needs low <= high"),
        ({"sample": {"n": 1, "epochs": {"int": [0, 3]}}}, "epochs.int[0]: must be >= 1"),
        ({"sample": {"n": 1, "dropout": {"uniform": [0, 1]}}}, "dropout.uniform[1]: must be < 1"),
        ({"sample": {"n": 1, "lr": {"choice": []}}}, "sample.lr.choice: must not be empty"),
        ({"sample": {"n": 1, "hidden": {"choice": [[8], [0]]}}}, "hidden.choice[1][0]: must be"),
        ({"sample": {"n": 1, "lr": {}}}, "population.sample.lr: give exactly one distribution"),
        (
            {"sample": {"n": 1, "lr": {"uniform": [0.1, 0.2], "choice": [0.1]}}},
            "(got uniform and choice)",
        ),
        ({"sample": {"n": 1, "lr": {"int": [1, 2]}}}, "unknown distribution 'int' for lr"),
        ({"sample": {"n": 1, "optimizer": {"uniform": [0, 1]}}}, "optimizer takes choice"),
        ({"sample": {"n": 1, "lr": {"log_uniform": [1, 2]}}}, "did you mean 'loguniform'?"),
        ({"sample": {"n": 1, "lr": 0.1}}, "population.sample.lr: expected a mapping"),
        ({"sample": {"n": 1, "lrr": {"uniform": [0, 1]}}}, "sample.lrr: unknown hyperparameter"),
        ({"sample": {"n": -1}}, "population.sample.n: must be >= 0"),
        ({"sample": {"n": 3}}, "population.sample: n is 3 but no hyperparameter"),
    ],
)
def test_bad_population_names_the_key(population: dict[str, Any], expected: str) -> None:
    assert expected in error_of(minimal(population=population))


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (minimal(search={"lrr": {"uniform": [0.1, 0.2]}}), "search.lrr: unknown hyperparameter"),
        (minimal(search={"lr": {"uniform": [0.2, 0.1]}}), "search.lr.uniform: needs low < high"),
        (minimal(search={"n": 3}), "search.n: unknown hyperparameter"),
    ],
)
def test_bad_search_names_the_key(document: dict[str, Any], expected: str) -> None:
    assert expected in error_of(document)


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        (
            {"train": {"nesterov": True}, "population": {"grid": {"optimizer": ["sgd", "adam"]}}},
            "population.grid.optimizer[1] = 'adam': train.nesterov: nesterov needs optimizer 'sgd'",
        ),
        (
            {"population": {"grid": {"family": ["logistic"], "hidden": [[], [8]]}}},
            "population.grid.hidden[1] = [8]",
        ),
        (
            {
                "train": {"nesterov": True},
                "population": {"sample": {"n": 2, "momentum": {"uniform": [0.0, 0.9]}}},
            },
            "population.sample.momentum.uniform[0] = 0.0: train.nesterov: nesterov needs momentum",
        ),
        (
            {"train": {"nesterov": True}, "search": {"optimizer": {"choice": ["sgd", "adamw"]}}},
            "search.optimizer.choice[1] = 'adamw'",
        ),
    ],
)
def test_invalid_combinations_name_the_values(sections: dict[str, Any], expected: str) -> None:
    assert expected in error_of(minimal(**sections))


def test_family_grid_uses_each_familys_default_layers() -> None:
    job = parse(minimal(population={"grid": {"family": ["mlp", "logistic"]}}))
    assert job.resolve({"family": "logistic"})["hidden"] == ()
    assert job.resolve({"family": "mlp"})["hidden"] == (64,)


def test_a_family_axis_gives_each_family_the_base_settings_it_uses() -> None:
    """The base hidden layers are for the families with hidden layers, the cnn settings for cnn;
    logistic takes neither. Fixed to one family, a setting it does not use is an error."""
    model = {"hidden": [32], "channels": [8, 8], "kernel": 3}
    job = parse(minimal(model=model, population={"grid": {"family": ["logistic", "mlp", "cnn"]}}))
    cnn = {"channels": (8, 8), "kernel": 3, "stride": 1, "pool": 2}
    expected = {
        "logistic": {"hidden": ()} | dict.fromkeys(cnn),
        "mlp": {"hidden": (32,)} | dict.fromkeys(cnn),
        "cnn": {"hidden": (32,)} | cnn,
    }
    for family, values in expected.items():
        resolved = job.resolve({"family": family})
        assert {k: resolved[k] for k in values} == values, family
    assert parse(minimal(model={"family": "cnn"})).resolve({})["channels"] == (32, 32)
    assert "model.channels: channels is a cnn setting" in error_of(minimal(model=model))
    grid = {"family": ["mlp", "logistic"], "hidden": [[8], [16]]}
    assert "population.grid.family[1] = 'logistic'" in error_of(minimal(population={"grid": grid}))


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"family": "module"}, "model.module: family module needs the class"),
        ({"family": "module", "module": "my_models.Net"}, 'expected "package.module:ClassName"'),
        ({"module": "my_models:Net"}, "model.module: only family module uses it"),
        ({"kwargs": {"width": 2}}, "model.kwargs: only with model.module"),
        (
            {"family": "module", "module": "m:Net", "kwargs": {"n_classes": 2}},
            "model.kwargs: n_classes is passed by rashomon",
        ),
        (
            {"family": "module", "module": "m:Net", "kwargs": {"a b": 2}},
            "model.kwargs: 'a b' is not a Python keyword argument name",
        ),
        ({"family": "module", "module": "m:Net", "dropout": 0.1}, "model.dropout: a module model"),
        ({"family": "module", "module": "m:Net", "hidden": [8]}, "model.hidden: a module model"),
        ({"family": "cnn", "channels": []}, "model.channels: must not be empty"),
        ({"family": "cnn", "kernel": 0}, "model.kernel: must be >= 1"),
    ],
)
def test_bad_module_and_cnn_settings_name_the_key(model: dict[str, Any], expected: str) -> None:
    assert expected in error_of(minimal(model=model))


def test_module_jobs_record_and_pin_the_source_hash(tmp_path: Path) -> None:
    (tmp_path / "nets.py").write_text("class Net:\n    pass\n")
    model = {"family": "module", "module": "nets:Net", "kwargs": {"width": 4}}
    job = parse_job(minimal(model=model), str(tmp_path / "job.yaml"))
    sha256 = hashlib.sha256((tmp_path / "nets.py").read_bytes()).hexdigest()
    recorded = yaml.safe_load(job.to_yaml())["model"]
    assert recorded["source_sha256"] == sha256 and recorded["kwargs"] == {"width": 4}
    again = parse_job(yaml.safe_load(job.to_yaml()), str(tmp_path / "job.yaml"))
    assert again.job_hash == job.job_hash
    (tmp_path / "nets.py").write_text("class Net:\n    width = 2\n")
    edited = parse_job(minimal(model=model), str(tmp_path / "job.yaml"))
    assert edited.job_hash != job.job_hash
    pinned = parse_job(yaml.safe_load(job.to_yaml()), str(tmp_path / "job.yaml"))
    with pytest.raises(UserError, match=r"model.source_sha256: .*nets.py has sha256"):
        pinned.module_reference()


def test_resolve_rejects_bad_overrides() -> None:
    job = parse(minimal())
    with pytest.raises(UserError, match=r"job.yaml: trial 3: train.lr: must be > 0"):
        job.resolve({"lr": -1.0}, origin="trial 3")
    with pytest.raises(UserError, match=r"configuration lrr=0.1: lrr: unknown hyperparameter"):
        job.resolve({"lrr": 0.1})
    with pytest.raises(UserError, match=r"train.nesterov: nesterov needs optimizer"):
        job.resolve({"nesterov": True, "optimizer": "adam"})


def test_many_errors_are_one_message_with_at_most_five_lines() -> None:
    message = error_of(
        minimal(train={"epochs": 0, "batch_size": 0, "lr": 0, "eps": 0, "momentum": 2, "x": 1})
    )
    lines = message.splitlines()
    assert len(lines) == 6 and lines[-1] == "job.yaml: ... and 1 more problems"
    assert all(line.startswith("job.yaml: ") for line in lines)


# --- files and YAML ---------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope\.yaml: no such job file"):
        load_job(tmp_path / "nope.yaml")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is a directory"):
        load_job(tmp_path)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: j\ndataset:\n  source: adult\ntrain: {lr: 0.1\nmodel: {}\n")
    with pytest.raises(UserError) as caught:
        load_job(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: line ") and "invalid YAML" in message


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "name: j\ndataset: {source: adult}\ntrain:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(UserError, match=r"line 5, column 3: .*found the key 'lr' twice"):
        load_job(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "the job is empty"), ("- a\n- b\n", "got a list"), ("just text\n", "got a string")],
)
def test_non_mapping_document(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(UserError, match=expected):
        load_job(write(tmp_path, text))


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "name: j\ndataset: {source: adult}\ntrain: {lr: -0.1}\n", "adult.yaml")
    with pytest.raises(UserError, match=r"adult\.yaml: train\.lr: must be > 0 \(got -0\.1\)"):
        load_job(path)


@pytest.mark.parametrize("name", ["quickstart", "adult-mlp", "compas-mlp"])
def test_ready_made_jobs_load_and_round_trip(name: str) -> None:
    job = load_job(JOBS / f"{name}.yaml")
    assert job.name == name
    assert parse(yaml.safe_load(job.to_yaml())).job_hash == job.job_hash


def test_a_recorded_job_of_an_earlier_version_reads_in_todays_settings():
    """A results folder's job.yaml may predate a renamed setting: status and analyze still read
    it, while a job file written today with the old name is refused with the new one."""
    from rashomon.jobs import UserError, load_job_text

    text = "name: old\ndataset: {source: wine}\nflatness: {avg_samples: 16, avg_sigma: 0.05}\n"
    job = load_job_text(text, "DIR/job.yaml", recorded=True)
    assert job.flatness.avg_pairs == 8 and job.flatness.avg_sigma == 0.05
    with pytest.raises(UserError, match="avg_samples is now avg_pairs"):
        load_job_text(text, "job.yaml")
