"""Expansion into model variants: exact order and count, reproducible draws, stable unique ids."""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from rashomon.jobs import HYPERPARAMETERS, Job, UserError, load_job, parse_job
from rashomon.jobs._expand import (
    ModelVariant,
    cohort,
    count_models,
    expand,
    iter_variants,
    model_id,
    sample_draws,
    sample_variants,
)
from rashomon.jobs._text import canonical_json

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def job_of(**sections: Any) -> Job:
    return parse_job({"name": "job", "dataset": {"source": "adult"}, **sections}, "job.yaml")


def seeds_and(variants: list[ModelVariant], name: str) -> list[tuple[Any, ...]]:
    return [(v.init_seed, v.order_seed, v.data_seed, v.hparams[name]) for v in variants]


# --- order and count ---------------------------------------------------------------------------


def test_order_configurations_outer_seeds_inner() -> None:
    job = job_of(
        population={"seeds": {"init": 2, "order": 2, "data": 2}, "grid": {"lr": [0.3, 0.1]}}
    )
    assert seeds_and(expand(job), "lr") == [
        (0, 0, 0, 0.3), (0, 0, 1, 0.3), (0, 1, 0, 0.3), (0, 1, 1, 0.3),
        (1, 0, 0, 0.3), (1, 0, 1, 0.3), (1, 1, 0, 0.3), (1, 1, 1, 0.3),
        (0, 0, 0, 0.1), (0, 0, 1, 0.1), (0, 1, 0, 0.1), (0, 1, 1, 0.1),
        (1, 0, 0, 0.1), (1, 0, 1, 0.1), (1, 1, 0, 0.1), (1, 1, 1, 0.1),
    ]  # fmt: skip


def test_grid_keys_in_sorted_order_values_as_given() -> None:
    job = job_of(population={"seeds": 1, "grid": {"weight_decay": [0.01, 0.0], "lr": [0.3, 0.1]}})
    assert [(v.hparams["lr"], v.hparams["weight_decay"]) for v in expand(job)] == [
        (0.3, 0.01), (0.3, 0.0), (0.1, 0.01), (0.1, 0.0),
    ]  # fmt: skip


def test_bare_int_seeds_pair_init_and_order_on_the_full_data() -> None:
    variants = expand(job_of(population={"seeds": 4}))
    assert [(v.init_seed, v.order_seed, v.data_seed) for v in variants] == [
        (0, 0, 0), (1, 1, 0), (2, 2, 0), (3, 3, 0),
    ]  # fmt: skip


def test_no_grid_is_one_configuration_of_the_base() -> None:
    job = job_of(train={"lr": 0.05}, population={"seeds": {"init": 3}})
    variants = expand(job)
    assert [(v.init_seed, v.order_seed, v.data_seed) for v in variants] == [
        (0, 0, 0), (1, 0, 0), (2, 0, 0),
    ]  # fmt: skip
    assert {v.hparams["lr"] for v in variants} == {0.05}


def test_hparams_hold_all_resolved_hyperparameters_read_only() -> None:
    (variant,) = expand(job_of(population={"seeds": 1}))
    assert list(variant.hparams) == list(HYPERPARAMETERS)
    assert variant.hparams["hidden"] == (64,)
    assert variant.trial is None
    with pytest.raises(TypeError):
        variant.hparams["lr"] = 1.0  # type: ignore[index]


def test_sample_crossed_with_grid_and_seeds() -> None:
    job = job_of(
        population={
            "seeds": {"init": 2},
            "grid": {"lr": [0.1, 0.01]},
            "sample": {"n": 3, "seed": 5, "weight_decay": {"loguniform": [1e-5, 1e-2]}},
        }
    )
    variants = expand(job)
    assert len(variants) == count_models(job) == 2 * 3 * 2
    draws = [d["weight_decay"] for d in sample_draws(job)]
    expected = [
        (init, lr, wd) for lr in (0.1, 0.01) for wd in draws for init in (0, 1)
    ]  # same draws for every grid point
    assert [(v.init_seed, v.hparams["lr"], v.hparams["weight_decay"]) for v in variants] == expected


@pytest.mark.parametrize(
    "population",
    [
        {},
        {"seeds": 17},
        {"seeds": {"init": 3, "order": 2, "data": 5}},
        {"seeds": 2, "grid": {"lr": [0.1, 0.2, 0.3], "hidden": [[8], [8, 8]], "epochs": [1, 2]}},
        {"seeds": {"order": 3}, "sample": {"n": 4, "lr": {"uniform": [0.01, 0.1]}}},
        {
            "seeds": 2,
            "grid": {"dropout": [0.0, 0.5]},
            "sample": {"n": 3, "epochs": {"int": [1, 9]}},
        },
    ],
)
def test_count_models_matches_expand(population: dict[str, Any]) -> None:
    job = job_of(population=population)
    variants = expand(job)
    assert count_models(job) == len(variants) == len(list(iter_variants(job)))
    assert variants == list(iter_variants(job))


def test_count_models_of_a_million_models_is_arithmetic_and_iteration_lazy() -> None:
    job = job_of(
        population={
            "seeds": {"init": 100, "order": 100, "data": 10},
            "grid": {"lr": [0.01, 0.1], "weight_decay": [0.0, 1e-4, 1e-3, 1e-2, 1e-1]},
        }
    )
    tracemalloc.start()
    assert count_models(job) == 1_000_000
    first = list(itertools.islice(iter_variants(job), 1000))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20  # a million materialised variants would take hundreds of MB
    assert first[-1].init_seed == 0 and first[-1].order_seed == 99 and first[-1].data_seed == 9


def test_iteration_over_a_huge_sample_is_lazy() -> None:
    """10¹² sample draws: the first variants come without generating (or storing) the rest."""
    job = job_of(population={"seeds": 2, "sample": {"n": 10**12, "lr": {"uniform": [0.01, 0.1]}}})
    tracemalloc.start()
    first = list(itertools.islice(iter_variants(job), 10_000))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20
    uniforms = np.random.default_rng(0).random(5000)
    assert [v.hparams["lr"] for v in first[::2]] == list(0.01 + uniforms * (0.1 - 0.01))


@pytest.mark.parametrize(
    "population",
    [
        {"seeds": {"init": 3, "order": 2, "data": 5}},
        {"seeds": 7, "grid": {"lr": [0.1, 0.2, 0.3], "hidden": [[8], [8, 8]], "epochs": [1, 2]}},
        {
            "seeds": {"init": 2, "data": 3},
            "grid": {"dropout": [0.0, 0.5], "lr": [0.1, 0.01, 0.001]},
            "sample": {"n": 5, "weight_decay": {"loguniform": [1e-5, 1e-2]}},
        },
    ],
)
@pytest.mark.parametrize("k", [1, 2, 7, 13])
def test_sample_variants_are_the_expansion_at_evenly_spread_positions(
    population: dict[str, Any], k: int
) -> None:
    job = job_of(population=population)
    variants = expand(job)
    n = len(variants)
    positions = [0] if k == 1 else sorted({round_down(j * (n - 1), k - 1) for j in range(k)})
    assert sample_variants(job, k) == [variants[p] for p in positions]
    assert sample_variants(job, n) == sample_variants(job, n + 5) == variants
    assert sample_variants(job, 0) == []


def round_down(numerator: int, denominator: int) -> int:
    return numerator // denominator


def test_sample_variants_of_a_huge_population_without_expanding_it() -> None:
    """10⁷ seeds × a 10¹² grid × 10⁹ draws: each variant is found from its position alone."""
    grid: dict[str, list[Any]] = {
        "batch_size": list(range(1, 1001)),
        "dropout": [0.0009 * i for i in range(1000)],
        "lr": [0.001 * (i + 1) for i in range(1000)],
        "momentum": [0.0009 * i for i in range(1000)],
    }  # axes in sorted order: the last varies fastest
    sample = {"n": 10**9, "seed": 3, "weight_decay": {"uniform": [0.0, 0.1]}}
    job = job_of(population={"seeds": 10**7, "grid": grid, "sample": sample})
    total = count_models(job)
    assert total == 10**12 * 10**9 * 10**7
    tracemalloc.start()
    variants = sample_variants(job, 3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20
    assert variants[0] == next(iter_variants(job))
    for variant, position in zip(variants, [0, (total - 1) // 2, total - 1], strict=True):
        configuration, seed = divmod(position, 10**7)
        point, draw = divmod(configuration, 10**9)
        digits = [(point // 1000**power) % 1000 for power in (3, 2, 1, 0)]
        assert {name: variant.hparams[name] for name in grid} == {
            name: values[digit] for (name, values), digit in zip(grid.items(), digits, strict=True)
        }
        rng = np.random.default_rng(3)
        rng.bit_generator.advance(draw)  # one 64-bit output per uniform
        assert variant.hparams["weight_decay"] == 0.1 * rng.random()
        assert (variant.init_seed, variant.order_seed, variant.data_seed) == (seed, seed, 0)
        assert variant.model_id == model_id(
            job.dataset.identity(), variant.hparams, job.train.fixed_settings(), seed, seed, 0
        )


def test_draws_are_rows_of_one_uniform_matrix_across_chunks() -> None:
    """Draws are generated a chunk at a time; they are still the rows of one (n, k) matrix."""
    dists = {"lr": {"uniform": [0.5, 1.0]}, "dropout": {"uniform": [0.0, 0.5]}}
    draws = sample_draws(sampled(10_000, seed=11, **dists))
    matrix = np.random.default_rng(11).random((10_000, 2))  # columns in sorted name order
    assert [d["dropout"] for d in draws] == list(0.5 * matrix[:, 0])
    assert [d["lr"] for d in draws] == list(0.5 + matrix[:, 1] * 0.5)


# --- sample draws ------------------------------------------------------------------------------


lr_range = {"uniform": [0.01, 0.1]}  # a continuous companion, so discrete draws may repeat


def sampled(n: int, seed: int = 0, **distributions: Any) -> Job:
    return job_of(population={"seeds": 1, "sample": {"n": n, "seed": seed, **distributions}})


def test_draws_are_reproducible_and_depend_on_the_seed() -> None:
    dists = {"lr": {"loguniform": [1e-4, 1e-1]}, "epochs": {"int": [1, 50]}}
    assert sample_draws(sampled(20, **dists)) == sample_draws(sampled(20, **dists))
    assert sample_draws(sampled(20, **dists)) != sample_draws(sampled(20, seed=1, **dists))


def test_raising_n_keeps_earlier_draws() -> None:
    """Extending a sampled population keeps the models (and ids) already trained."""
    dists = {"lr": {"loguniform": [1e-4, 1e-1]}, "dropout": {"uniform": [0.0, 0.5]}}
    small, large = expand(sampled(10, **dists)), expand(sampled(25, **dists))
    assert [v.model_id for v in small] == [v.model_id for v in large[:10]]


def test_loguniform_within_bounds_and_spread_on_the_log_scale() -> None:
    values = [d["lr"] for d in sample_draws(sampled(2000, lr={"loguniform": [1e-4, 1.0]}))]
    assert all(isinstance(v, float) and 1e-4 <= v <= 1.0 for v in values)
    decades = [sum(10**-k <= v < 10 ** (1 - k) for v in values) for k in (4, 3, 2, 1)]
    assert all(400 < count < 600 for count in decades)  # ~500 per decade


def test_uniform_within_bounds() -> None:
    values = [d["dropout"] for d in sample_draws(sampled(500, dropout={"uniform": [0.1, 0.4]}))]
    assert all(0.1 <= v <= 0.4 for v in values)
    assert min(values) < 0.12 and max(values) > 0.38


def test_int_is_inclusive() -> None:
    values = [d["epochs"] for d in sample_draws(sampled(200, epochs={"int": [3, 5]}, lr=lr_range))]
    assert set(values) == {3, 4, 5} and all(type(v) is int for v in values)


def test_choice_draws_only_listed_values() -> None:
    dists = {"hidden": {"choice": [[8], [16, 16], [32]]}, "lr": lr_range}
    values = [d["hidden"] for d in sample_draws(sampled(200, **dists))]
    assert set(values) == {(8,), (16, 16), (32,)}


def test_repeated_discrete_draws_are_rejected() -> None:
    with pytest.raises(UserError, match=r"population.sample: draws \d+ and \d+ are the same"):
        expand(sampled(3, optimizer={"choice": ["sgd", "adam", "adamw"]}))
    with pytest.raises(UserError, match="3 draws from only 2 possible configurations"):
        expand(sampled(3, epochs={"int": [1, 2]}))


# --- model ids ---------------------------------------------------------------------------------


def test_ids_are_16_hex_unique_and_stable() -> None:
    job = load_job(JOBS / "adult-mlp.yaml")
    first, second = expand(job), expand(load_job(JOBS / "adult-mlp.yaml"))
    ids = [v.model_id for v in first]
    assert ids == [v.model_id for v in second]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


def test_model_id_is_the_hash_of_everything_that_determines_the_model() -> None:
    job = job_of(population={"seeds": {"init": 2, "order": 2, "data": 2}})
    for variant in expand(job):
        document = {
            "dataset": job.dataset.identity(),
            "extra": job.train.fixed_settings(),
            "hparams": {  # the settings a family or optimizer does not use (null), no label
                # noise and the full space (the ids of the models before them) are not part of it
                k: list(v) if k == "hidden" else v
                for k, v in variant.hparams.items()
                if v is not None and (k, v) not in {("label_noise", 0.0), ("subspace_dim", 0)}
            },
            "seeds": {
                "init": variant.init_seed,
                "order": variant.order_seed,
                "data": variant.data_seed,
            },
        }
        expected = hashlib.sha256(canonical_json(document).encode()).hexdigest()[:16]
        assert variant.model_id == expected
        seeds = (variant.init_seed, variant.order_seed, variant.data_seed)
        identity, extra = job.dataset.identity(), job.train.fixed_settings()
        assert model_id(identity, variant.hparams, extra, *seeds) == expected


def ids_by_config(job: Job) -> dict[tuple[Any, ...], str]:
    return {
        (v.init_seed, v.order_seed, v.data_seed, v.hparams["lr"]): v.model_id for v in expand(job)
    }


def test_changing_one_grid_value_changes_exactly_its_ids() -> None:
    before = ids_by_config(job_of(population={"seeds": 3, "grid": {"lr": [0.1, 0.3]}}))
    after = ids_by_config(job_of(population={"seeds": 3, "grid": {"lr": [0.1, 0.2]}}))
    kept = {key: i for key, i in before.items() if key[3] == 0.1}
    assert {key: i for key, i in after.items() if key[3] == 0.1} == kept
    new = {i for key, i in after.items() if key[3] == 0.2}
    assert len(new) == 3 and not new & set(before.values())


def test_adding_a_seed_keeps_existing_ids() -> None:
    before = ids_by_config(job_of(population={"seeds": {"init": 2, "order": 2}}))
    after = ids_by_config(job_of(population={"seeds": {"init": 3, "order": 2}}))
    assert {k: after[k] for k in before} == before
    assert len(set(after.values())) == 6


def test_each_seed_changes_the_id() -> None:
    base = job_of(population={"seeds": 1})
    (variant,) = expand(base)
    hparams = variant.hparams
    identity, extra = base.dataset.identity(), base.train.fixed_settings()
    ids = {
        model_id(identity, hparams, extra, *s) for s in [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
    }
    assert len(ids) == 4


@pytest.mark.parametrize(
    "sections",
    [
        {"dataset": {"source": "compas"}},
        {"dataset": {"source": "adult", "exclude": ["age"]}},
        {"dataset": {"source": "adult", "split": {"seed": 1}}},
        {"model": {"hidden": [32]}},
        {"model": {"dropout": 0.1}},
        {"train": {"lr": 0.2}},
        {"train": {"epochs": 3}},
        {"train": {"betas": [0.8, 0.999]}},
        {"train": {"eps": 1e-6}},
        {"train": {"dtype": "float64"}},
    ],
)
def test_anything_that_changes_training_changes_the_id(sections: dict[str, Any]) -> None:
    base = expand(job_of(population={"seeds": 1}))[0].model_id
    assert expand(job_of(population={"seeds": 1}, **sections))[0].model_id != base


@pytest.mark.parametrize(
    "sections",
    [
        {"dataset": {"source": "adult", "groups": ["sex"]}},
        {"dataset": {"source": "adult", "target": "income"}},  # the built-in's own target
        {"name": "renamed"},
        {"resources": {"models_per_pack": 8}},
        {"output": {"weights": False}},
        {"flatness": {"enabled": False}},
        {"model": {"hidden": [64]}},  # the default spelled out
    ],
)
def test_settings_that_do_not_change_training_keep_the_id(sections: dict[str, Any]) -> None:
    base = expand(job_of(population={"seeds": 1}))[0].model_id
    assert expand(job_of(population={"seeds": 1}, **sections))[0].model_id == base


def test_expansion_judges_every_configuration() -> None:
    """parse_job rejects bad combinations up front; expansion still checks each one itself."""
    document = {
        "name": "job",
        "dataset": {"source": "adult"},
        "train": {"nesterov": True},
        "population": {"seeds": 1, "grid": {"optimizer": ["sgd", "adam"]}},
    }
    job = Job.model_validate(document)  # skips parse_job's combination check
    variants = iter_variants(job)
    assert next(variants).hparams["optimizer"] == "sgd"
    with pytest.raises(UserError, match=r"population.grid point optimizer='adam': train.nesterov"):
        next(variants)


def test_cohort_judges_its_overrides() -> None:
    job = job_of(train={"nesterov": True}, population={"seeds": 1})
    with pytest.raises(UserError, match=r"trial 7: train.nesterov: nesterov needs optimizer"):
        cohort(job, {"optimizer": "adam"}, trial=7)


def test_cohort_is_one_configuration_times_the_seeds() -> None:
    job = job_of(population={"seeds": {"init": 2, "order": 3}})
    variants = cohort(job, {"lr": 0.05}, trial=4)
    assert len(variants) == 6 and {v.trial for v in variants} == {4}
    same = expand(job_of(train={"lr": 0.05}, population={"seeds": {"init": 2, "order": 3}}))
    assert [v.model_id for v in variants] == [v.model_id for v in same]


# --- ready-made jobs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "models"), [("quickstart", 128), ("adult-mlp", 1024), ("compas-mlp", 1080)]
)
def test_ready_made_jobs_have_the_stated_counts(name: str, models: int) -> None:
    job = load_job(JOBS / f"{name}.yaml")
    variants = expand(job)
    assert count_models(job) == len(variants) == models
    assert len({v.model_id for v in variants}) == models
    assert (
        math.prod(len(v) for v in job.population.grid.axes().values())
        * (job.population.seeds.count)
        == models
    )


def test_a_family_axis_keeps_the_ids_each_family_has_alone() -> None:
    """The settings a family does not use are not part of its models' ids: the mlp models of a
    job that also trains cnns are the models of the mlp job."""
    alone = job_of(model={"hidden": [16]}, population={"seeds": 3})
    axis = job_of(
        model={"hidden": [16], "channels": [8, 8], "kernel": 3},
        population={"seeds": 3, "grid": {"family": ["cnn", "mlp"]}},
    )
    variants = expand(axis)
    mlp = [v.model_id for v in variants if v.hparams["family"] == "mlp"]
    assert mlp == [v.model_id for v in expand(alone)]
    cnn = [v for v in variants if v.hparams["family"] == "cnn"]
    assert cnn[0].hparams["channels"] == (8, 8) and not set(mlp) & {v.model_id for v in cnn}
    wider = job_of(model={"family": "cnn", "hidden": [16], "channels": [8, 16], "kernel": 3},
                   population={"seeds": 3})  # fmt: skip
    assert not {v.model_id for v in cnn} & {v.model_id for v in expand(wider)}


# --- sam, label noise, subspaces and lists of grids ---------------------------------------------

SAM_NAMES = ("rho", "sam_normalize", "sam_adaptive")


def test_a_list_of_grids_joins_them_in_order_each_crossed_with_the_sample_and_the_seeds() -> None:
    job = job_of(
        population={
            "seeds": {"init": 2},
            "grid": [
                {"optimizer": ["sgd"], "lr": [0.1, 0.3]},
                {"optimizer": ["sam"], "rho": [0.05, 0.1], "sam_normalize": [True, False]},
            ],
            "sample": {"n": 2, "weight_decay": {"loguniform": [1e-5, 1e-3]}},
        }
    )
    variants = expand(job)
    assert count_models(job) == len(variants) == (2 + 4) * 2 * 2
    configurations = [
        (v.hparams["optimizer"], v.hparams["lr"], v.hparams["rho"], v.hparams["sam_normalize"])
        for v in variants[::4]
    ]
    assert configurations == [
        ("sgd", 0.1, None, None), ("sgd", 0.3, None, None),
        ("sam", 0.1, 0.05, True), ("sam", 0.1, 0.05, False),
        ("sam", 0.1, 0.1, True), ("sam", 0.1, 0.1, False),
    ]  # fmt: skip
    assert [v.hparams["weight_decay"] for v in variants[:4]] == [
        variants[0].hparams["weight_decay"]
    ] * 2 + [variants[2].hparams["weight_decay"]] * 2
    ids = [v.model_id for v in variants]
    assert len(set(ids)) == len(ids)
    positions = [j * (len(ids) - 1) // 6 for j in range(7)]
    assert [v.model_id for v in sample_variants(job, 7)] == [ids[p] for p in positions]
    assert list(iter_variants(job)) == variants


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (
            [{"lr": [0.1]}, {"lr": [0.3, 0.1]}],
            "population.grid[1] point lr=0.1 is the same configuration as population.grid[0] "
            "point lr=0.1",
        ),
        ([], "population.grid: an empty list has no models"),
        ([{"lr": [0.1]}, {"lrr": [0.1]}], "population.grid[1].lrr: unknown hyperparameter"),
        ([{"lr": [0.1]}, {"lr": [-1.0]}], "population.grid[1].lr[0]: must be > 0"),
        (
            [{"optimizer": ["sgd"], "rho": [0.1]}],
            "population.grid[0].optimizer[0] = 'sgd', population.grid[0].rho[0] = 0.1: "
            "train.rho: rho is a setting of optimizer sam",
        ),
    ],
)
def test_a_list_of_grids_names_the_grid_at_fault(grid: list, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        expand(job_of(population={"seeds": 1, "grid": grid}))


def test_sam_settings_default_for_sam_models_and_are_null_for_the_others() -> None:
    job = job_of(
        train={"optimizer": "sgd", "rho": 0.2},
        population={"seeds": 1, "grid": {"optimizer": ["sgd", "sam", "adam"]}},
    )  # the base rho is meant for the sam models of the optimizer axis
    resolved = [{k: v.hparams[k] for k in ("optimizer", *SAM_NAMES)} for v in expand(job)]
    assert resolved == [
        {"optimizer": "sgd", "rho": None, "sam_normalize": None, "sam_adaptive": None},
        {"optimizer": "sam", "rho": 0.2, "sam_normalize": True, "sam_adaptive": False},
        {"optimizer": "adam", "rho": None, "sam_normalize": None, "sam_adaptive": None},
    ]
    defaults = expand(job_of(train={"optimizer": "sam"}, population={"seeds": 1}))[0].hparams
    assert (defaults["rho"], defaults["sam_normalize"], defaults["sam_adaptive"]) == (
        0.05,
        True,
        False,
    )


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"train": {"rho": 0.1}}, "train.rho: rho is a setting of optimizer sam"),
        ({"train": {"optimizer": "adam", "sam_normalize": False}}, "train.sam_normalize:"),
        ({"train": {"label_noise": 1.5}}, "train.label_noise: must be <= 1"),
        ({"train": {"subspace_dim": -1}}, "train.subspace_dim: must be >= 0"),
        (
            {"train": {"optimizer": "sam", "sam_adaptive": True, "subspace_dim": 10}},
            "train.sam_adaptive: sam_adaptive (ASAM) scales each weight",
        ),
        ({"train": {"optimizer": "adam", "nesterov": True}}, "nesterov needs optimizer 'sgd'"),
        ({"flatness": {"enabled": False, "track": True}}, "flatness: track: true records"),
    ],
)
def test_the_new_settings_refuse_what_cannot_be_trained(sections: dict, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        expand(job_of(population={"seeds": 1}, **sections))


def test_sam_nesterov_label_noise_and_subspace_are_hyperparameters_of_grids() -> None:
    job = job_of(
        train={"optimizer": "sam", "nesterov": True},
        population={
            "seeds": 1,
            "grid": {"label_noise": [0.0, 0.2], "subspace_dim": [0, 50], "sam_adaptive": [False]},
        },
    )
    variants = expand(job)
    assert [(v.hparams["label_noise"], v.hparams["subspace_dim"]) for v in variants] == [
        (0.0, 0), (0.0, 50), (0.2, 0), (0.2, 50),
    ]  # fmt: skip
    assert len({v.model_id for v in variants}) == 4


def test_the_ids_and_hashes_of_jobs_without_the_new_settings_are_unchanged() -> None:
    """Pinned from the release before sam, label noise and subspaces: a rerun of a folder
    written then finds its models (ids) and its job (hash)."""
    job = load_job(JOBS / "quickstart.yaml")
    variants = expand(job)
    assert job.job_hash[:12] == "3004cb18fd50"
    assert (variants[0].model_id, variants[-1].model_id) == ("82ffe31e167368c5", "43f2c672eb70549d")
    spelled = job_of(train={"label_noise": 0.0, "subspace_dim": 0}, population={"seeds": 2})
    plain = job_of(population={"seeds": 2})
    assert spelled.job_hash == plain.job_hash
    assert [v.model_id for v in expand(spelled)] == [v.model_id for v in expand(plain)]
    assert job_of(flatness={"track": False}).job_hash == job_of().job_hash


def test_a_list_of_grids_round_trips_through_the_resolved_yaml() -> None:
    job = job_of(population={"seeds": 1, "grid": [{"lr": [0.1]}, {"lr": [0.2], "momentum": [0.5]}]})
    again = parse_job(yaml.safe_load(job.to_yaml()), "again.yaml")
    assert again.job_hash == job.job_hash
    assert [v.model_id for v in expand(again)] == [v.model_id for v in expand(job)]
