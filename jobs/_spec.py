"""The job spec: pydantic models of a job YAML, loading, and user-facing validation errors.

A job is the single source of truth for a population run, so this module is strict: every section
forbids unknown keys (a typo such as ``epoch:`` must not silently fall back to a default), numbers
are typed strictly (``epochs: true`` is an error, not 1), and every failure becomes one
:class:`~jobs._errors.UserError` naming the file and the dotted key path of each problem.

The hyperparameters that ``population.grid``, ``population.sample`` and ``search`` may vary are
listed once in :data:`HYPERPARAMETERS`; the grid, sample and search models are generated from that
table, so a grid value is validated by exactly the same type and bounds as the base field, with
pydantic's own error locations (``population.grid.lr[1]``).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import annotated_types as at
import yaml
from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    Strict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)

from rashomon.jobs._datasets import builtin_target
from rashomon.jobs._errors import UserError

__all__ = [
    "FLATNESS_COLUMNS",
    "HYPERPARAMETERS",
    "DatasetConfig",
    "Distribution",
    "FlatnessConfig",
    "Grid",
    "Hyperparameter",
    "Job",
    "ModelConfig",
    "OutputConfig",
    "Population",
    "ResourcesConfig",
    "Sample",
    "Search",
    "Seeds",
    "SplitConfig",
    "TrainConfig",
    "canonical_json",
    "column_value",
    "load_job",
    "parse_job",
]

# ------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces, no NaN) for hashes of jobs and models."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _drop_none(dumped: Any) -> Any:
    """Leave unset optional entries (None) out of a dump, so it reads like what the user wrote."""
    return (
        {k: v for k, v in dumped.items() if v is not None} if isinstance(dumped, dict) else dumped
    )


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML: 'text', true, null, [1, 2]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list | tuple):
        text = "[" + ", ".join(_show(v) for v in value) + "]"
    elif isinstance(value, Mapping):
        text = "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    names = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a bool"}
    return names.get(type(value), type(value).__name__)


def _join_path(loc: Sequence[Any]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _or_list(items: Any) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _reject_duplicates(values: Sequence[Any]) -> None:
    first: dict[Any, int] = {}
    for index, value in enumerate(values):
        if value in first:
            raise ValueError(
                f"{_show(value)} is listed twice (at [{first[value]}] and [{index}]); "
                "each value must be distinct"
            )
        first[value] = index


# ------------------------------------------------------------------------------------------------
# Value types. Strict() keeps YAML's `true` from passing as 1 and `"10"` from passing as 10; floats
# still accept integers (`lr: 1`), and no float accepts inf/nan (`lr: .inf` would pass `> 0`).
# ------------------------------------------------------------------------------------------------

_PositiveInt = Annotated[int, Strict(), at.Ge(1)]
_NonNegativeInt = Annotated[int, Strict(), at.Ge(0)]
_NonEmptyStr = Annotated[str, Strict(), at.MinLen(1)]
_UnitOpen = Annotated[float, Strict(), AllowInfNan(False), at.Gt(0), at.Lt(1)]  # (0, 1)
_UnitHalfOpen = Annotated[float, Strict(), AllowInfNan(False), at.Ge(0), at.Lt(1)]  # [0, 1)

_Family = Literal["mlp", "logistic"]
_Hidden = tuple[Annotated[int, Strict(), at.Gt(0)], ...]
_Activation = Literal["relu", "tanh", "gelu"]
_Dropout = _UnitHalfOpen
_Epochs = _PositiveInt
_BatchSize = _PositiveInt
_Optimizer = Literal["sgd", "adam", "adamw"]
_LearningRate = Annotated[float, Strict(), AllowInfNan(False), at.Gt(0)]
_Momentum = _UnitHalfOpen
_Nesterov = Annotated[bool, Strict()]
_WeightDecay = Annotated[float, Strict(), AllowInfNan(False), at.Ge(0)]
_Schedule = Literal["constant", "cosine"]

#: Hidden layers used when `model.hidden` is omitted (null): a one-layer MLP, or none for logistic.
_DEFAULT_HIDDEN: dict[str, tuple[int, ...]] = {"mlp": (64,), "logistic": ()}


# ------------------------------------------------------------------------------------------------
# Hyperparameters
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hyperparameter:
    """A setting that `population.grid`, `population.sample` and `search` may vary.

    ``per_model`` hyperparameters may differ between models trained together in one batched pack
    (they only scale per-model tensors); the others are structural, so a pack must share them.
    """

    name: str
    section: Literal["model", "train"]
    type: type
    per_model: bool


# name -> (section, python type, pydantic annotation of one value, per_model)
_HP_TABLE: dict[str, tuple[Literal["model", "train"], type, Any, bool]] = {
    "family": ("model", str, _Family, False),
    "hidden": ("model", tuple, _Hidden, False),
    "activation": ("model", str, _Activation, False),
    "dropout": ("model", float, _Dropout, True),
    "epochs": ("train", int, _Epochs, False),
    "batch_size": ("train", int, _BatchSize, False),
    "optimizer": ("train", str, _Optimizer, False),
    "lr": ("train", float, _LearningRate, True),
    "momentum": ("train", float, _Momentum, True),
    "nesterov": ("train", bool, _Nesterov, False),
    "weight_decay": ("train", float, _WeightDecay, True),
    "schedule": ("train", str, _Schedule, False),
}

#: The variable hyperparameters, in the order of the `hp_<name>` columns (model, then train).
HYPERPARAMETERS: dict[str, Hyperparameter] = {
    name: Hyperparameter(name=name, section=section, type=py_type, per_model=per_model)
    for name, (section, py_type, _, per_model) in _HP_TABLE.items()
}


def column_value(name: str, value: Any) -> Any:
    """A hyperparameter's value as its ``hp_<name>`` column (and an Optuna choice) holds it:
    layer sizes as the text ``"[64, 32]"``, everything else as it is."""
    if HYPERPARAMETERS[name].type is tuple:
        return "[" + ", ".join(str(int(v)) for v in value) + "]"
    return value


_HP_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    name: TypeAdapter(annotation) for name, (_, _, annotation, _) in _HP_TABLE.items()
}

# Which distributions make sense for each python type: continuous ranges only for floats, integer
# ranges only for ints, and an explicit list of values for anything.
_KINDS_BY_TYPE: dict[type, tuple[str, ...]] = {
    float: ("loguniform", "uniform", "choice"),
    int: ("int", "choice"),
}


def _kinds_for(name: str) -> tuple[str, ...]:
    return _KINDS_BY_TYPE.get(HYPERPARAMETERS[name].type, ("choice",))


# ------------------------------------------------------------------------------------------------
# Cross-field rules, shared by the section models (base config) and `Job.resolve` (grid/sample
# configurations), so a combination is judged by the same words wherever it comes from.
# ------------------------------------------------------------------------------------------------


def _hidden_rule(family: str, hidden: tuple[int, ...] | None) -> str | None:
    if hidden is None:
        return None
    if family == "logistic" and hidden:
        return (
            f"a logistic model has no hidden layers (got {_show(hidden)}); "
            "remove model.hidden or use family mlp"
        )
    if family == "mlp" and not hidden:
        return "an mlp needs at least one hidden layer; use family logistic for none"
    return None


def _nesterov_rule(nesterov: bool, optimizer: str, momentum: float) -> str | None:
    if not nesterov:
        return None
    if optimizer != "sgd":
        return f"nesterov needs optimizer 'sgd' (got {_show(optimizer)})"
    if momentum <= 0:
        return f"nesterov needs momentum > 0 (got {_show(momentum)})"
    return None


# ------------------------------------------------------------------------------------------------
# Section models
# ------------------------------------------------------------------------------------------------


class _Section(BaseModel):
    """Frozen, closed to unknown keys: a typo must be an error, not a silent default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: How unknown keys of this mapping are called in error messages.
    key_noun: ClassVar[str] = "key"


class SplitConfig(_Section):
    """One fixed stratified train/val/test split shared by the whole population."""

    val: _UnitOpen = 0.2
    test: Annotated[_UnitOpen, Field(validate_default=True)] = 0.2
    seed: _NonNegativeInt = 0

    @field_validator("test")
    @classmethod
    def _leave_training_data(cls, test: float, info: ValidationInfo) -> float:
        val = info.data.get("val")
        if val is not None and val + test >= 1:
            raise ValueError(
                f"val + test must be < 1 to leave training data (got {val!r} + {test!r})"
            )
        return test


class DatasetConfig(_Section):
    """Which data to learn from; `groups` only label examples for subgroup analysis."""

    source: _NonEmptyStr
    target: _NonEmptyStr | None = None
    groups: tuple[_NonEmptyStr, ...] = ()
    exclude: tuple[_NonEmptyStr, ...] = ()
    split: SplitConfig = SplitConfig()

    @field_validator("groups", "exclude")
    @classmethod
    def _no_repeats(cls, columns: tuple[str, ...]) -> tuple[str, ...]:
        _reject_duplicates(columns)
        return columns

    @field_validator("exclude")
    @classmethod
    def _keep_target(cls, exclude: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        target = info.data.get("target")
        if target is not None and target in exclude:
            raise ValueError(f"the target column {target!r} cannot be excluded")
        return exclude

    def identity(self) -> dict[str, Any]:
        """What determines the training data, for model ids; `groups` is not part of it.

        A built-in's target is filled in, so omitting it and naming it give the same ids.
        """
        return {
            "source": self.source,
            "target": self.target or builtin_target(self.source),
            "exclude": sorted(self.exclude),
            "split": self.split.model_dump(mode="json"),
        }


class ModelConfig(_Section):
    """The network. ``hidden: null`` (the default) means the family's default layers."""

    family: _Family = "mlp"
    hidden: _Hidden | None = None
    activation: _Activation = "relu"
    dropout: _Dropout = 0.0

    @field_validator("hidden")
    @classmethod
    def _fits_family(
        cls, hidden: tuple[int, ...] | None, info: ValidationInfo
    ) -> tuple[int, ...] | None:
        family = info.data.get("family")
        if family is not None and (problem := _hidden_rule(family, hidden)):
            raise ValueError(problem)
        return hidden

    @property
    def resolved_hidden(self) -> tuple[int, ...]:
        """The hidden layer sizes actually built (the family default when `hidden` is null)."""
        return _DEFAULT_HIDDEN[self.family] if self.hidden is None else self.hidden


class TrainConfig(_Section):
    """Optimisation settings; `betas`/`eps` only affect adam(w), `momentum`/`nesterov` only sgd."""

    epochs: _Epochs = 20
    batch_size: _BatchSize = 256
    optimizer: _Optimizer = "sgd"
    lr: _LearningRate = 0.1
    momentum: _Momentum = 0.9
    nesterov: _Nesterov = False
    betas: tuple[_UnitHalfOpen, _UnitHalfOpen] = (0.9, 0.999)
    eps: Annotated[float, Strict(), AllowInfNan(False), at.Gt(0)] = 1.0e-8
    weight_decay: _WeightDecay = 0.0
    schedule: _Schedule = "constant"
    dtype: Literal["float32", "float64"] = "float32"

    @field_validator("nesterov")
    @classmethod
    def _needs_sgd_momentum(cls, nesterov: bool, info: ValidationInfo) -> bool:
        optimizer, momentum = info.data.get("optimizer"), info.data.get("momentum")
        if None not in (optimizer, momentum) and (
            problem := _nesterov_rule(nesterov, optimizer, momentum)
        ):
            raise ValueError(problem)
        return nesterov

    def fixed_settings(self) -> dict[str, Any]:
        """Settings that change results but are not hyperparameters (part of every model id)."""
        return {"betas": list(self.betas), "eps": self.eps, "dtype": self.dtype}


class Seeds(_Section):
    """The seed axes. A mapping is a full factorial; a bare integer N pairs init = order = i.

    Read `count` and `triples()` rather than the fields: for a bare N the fields hold
    (N, N, 1) but the models are the N pairs (i, i, 0), not N² combinations.
    """

    init: _PositiveInt = 1
    order: _PositiveInt = 1
    data: _PositiveInt = 1
    _paired: bool = PrivateAttr(default=False)

    @model_validator(mode="wrap")
    @classmethod
    def _bare_count(cls, data: Any, handler: Any) -> Seeds:
        if isinstance(data, bool) or not isinstance(data, int | Mapping | Seeds):
            raise ValueError(
                "expected a number of seeds (seeds: 100) or a mapping "
                f"{{init: 10, order: 10, data: 1}}, got {_show(data)}"
            )
        if isinstance(data, int):
            if data < 1:
                raise ValueError(f"the number of seeds must be >= 1 (got {data})")
            seeds = handler({"init": data, "order": data, "data": 1})
            seeds._paired = True
            return seeds
        return handler(data)

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        # A bare count dumps back to a bare count, so the dump round-trips and hashes apart from
        # the factorial {init: N, order: N, data: 1}.
        return self.init if self._paired else handler(self)

    @property
    def paired(self) -> bool:
        """True for a bare count N: models (i, i, 0) for i < N."""
        return self._paired

    @property
    def count(self) -> int:
        """Seed triples per configuration."""
        return self.init if self._paired else self.init * self.order * self.data

    def triples(self) -> Iterator[tuple[int, int, int]]:
        """(init, order, data) seeds in expansion order: init outermost, data innermost."""
        if self._paired:
            return ((i, i, 0) for i in range(self.init))
        return itertools.product(range(self.init), range(self.order), range(self.data))


class Distribution(_Section):
    """Base of the per-hyperparameter distributions: exactly one of the kinds below is set.

    ``{loguniform: [lo, hi]}`` (0 < lo < hi), ``{uniform: [lo, hi]}`` (lo < hi),
    ``{int: [lo, hi]}`` (inclusive, lo <= hi), ``{choice: [v1, ...]}``. Subclasses (one per
    hyperparameter, generated below) only offer the kinds that suit its type, and type the bounds
    and choices like the hyperparameter itself.
    """

    key_noun: ClassVar[str] = "distribution"
    hyperparameter: ClassVar[str] = ""

    @field_validator("loguniform", check_fields=False)
    @classmethod
    def _positive_increasing(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        low, high = bounds
        if not 0 < low < high:
            raise ValueError(f"needs 0 < low < high (got {_show(bounds)})")
        return bounds

    @field_validator("uniform", check_fields=False)
    @classmethod
    def _increasing(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        if not bounds[0] < bounds[1]:
            raise ValueError(f"needs low < high (got {_show(bounds)})")
        return bounds

    @field_validator("int", check_fields=False)
    @classmethod
    def _ordered(cls, bounds: tuple[int, int]) -> tuple[int, int]:
        if not bounds[0] <= bounds[1]:
            raise ValueError(f"needs low <= high (got {_show(bounds)})")
        return bounds

    @field_validator("choice", check_fields=False)
    @classmethod
    def _distinct(cls, values: tuple[Any, ...]) -> tuple[Any, ...]:
        _reject_duplicates(values)
        return values

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [kind for kind in type(self).model_fields if getattr(self, kind) is not None]
        if len(given) != 1:
            offered = _or_list(f"{kind}: [...]" for kind in type(self).model_fields)
            got = "none" if not given else " and ".join(given)
            raise ValueError(f"give exactly one distribution, {offered} (got {got})")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        return _drop_none(handler(self))

    @property
    def kind(self) -> str:
        """'loguniform', 'uniform', 'int' or 'choice'."""
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)

    @property
    def args(self) -> tuple[Any, ...]:
        """The bounds (low, high) or the choices."""
        return getattr(self, self.kind)


def _make_distribution(name: str) -> type[Distribution]:
    annotation = _HP_TABLE[name][2]
    bounds = (Annotated[tuple[annotation, ...], at.Len(2, 2)], None)
    kinds: dict[str, Any] = {
        "loguniform": bounds,
        "uniform": bounds,
        "int": bounds,
        "choice": (Annotated[tuple[annotation, ...], at.MinLen(1)], None),
    }
    fields = {kind: kinds[kind] for kind in _kinds_for(name)}
    cls = create_model(  # type: ignore[call-overload]
        f"{_camel(name)}Distribution", __base__=Distribution, __module__=__name__, **fields
    )
    cls.hyperparameter = name
    return cls


_DISTRIBUTIONS: dict[str, type[Distribution]] = {
    name: _make_distribution(name) for name in _HP_TABLE
}


class _HyperparameterMapping(_Section):
    """A mapping keyed by hyperparameter names (grid, sample, search).

    The fields are generated from :data:`HYPERPARAMETERS` with a default of None that YAML cannot
    produce (an explicit null is a type error), so None means "not given" and is left out of dumps.
    """

    key_noun: ClassVar[str] = "hyperparameter"

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        return _drop_none(handler(self))

    def _given(self) -> dict[str, Any]:
        return {
            name: getattr(self, name)
            for name in sorted(HYPERPARAMETERS)
            if getattr(self, name) is not None
        }


class _GridBase(_HyperparameterMapping):
    @field_validator("*")
    @classmethod
    def _no_repeats(cls, values: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        # A repeated value would train the same models twice under the same model ids.
        if values is not None:
            _reject_duplicates(values)
        return values

    def axes(self) -> dict[str, tuple[Any, ...]]:
        """The given axes, keys sorted (the order of the cartesian product), values as given."""
        return self._given()

    @property
    def size(self) -> int:
        """Number of grid points (1 for an empty grid)."""
        return math.prod(len(values) for values in self.axes().values())


class _SearchBase(_HyperparameterMapping):
    def distributions(self) -> dict[str, Distribution]:
        """The sampled hyperparameters, keys sorted (the order draws are made in)."""
        return self._given()


OBJECTIVES = {"val_acc": "maximize", "disagreement": "minimize"}


class _TuneBase(_SearchBase):
    @field_validator("objectives", check_fields=False)
    @classmethod
    def _distinct_objectives(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if not names:
            raise ValueError("needs at least one objective, e.g. [val_acc]")
        _reject_duplicates(names)
        return names

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[name] for name in self.objectives]  # type: ignore[attr-defined]


class _SampleBase(_SearchBase):
    @model_validator(mode="after")
    def _something_to_draw(self) -> _SampleBase:
        n = self.n  # type: ignore[attr-defined]
        if n > 0 and not self.distributions():
            raise ValueError(
                f"n is {n} but no hyperparameter has a distribution; "
                "add one, e.g. lr: {loguniform: [0.001, 0.1]}"
            )
        return self


_GRID_FIELDS: dict[str, Any] = {
    name: (Annotated[tuple[annotation, ...], at.MinLen(1)], None)
    for name, (_, _, annotation, _) in _HP_TABLE.items()
}
_DISTRIBUTION_FIELDS: dict[str, Any] = {name: (_DISTRIBUTIONS[name], None) for name in _HP_TABLE}

Grid = create_model(  # type: ignore[call-overload]
    "Grid",
    __base__=_GridBase,
    __module__=__name__,
    __doc__="`population.grid`: hyperparameter -> list of values; crossed as a cartesian product.",
    **_GRID_FIELDS,
)
Sample = create_model(  # type: ignore[call-overload]
    "Sample",
    __base__=_SampleBase,
    __module__=__name__,
    __doc__="`population.sample`: `n` configurations drawn with `seed`, crossed with the grid.",
    n=(_NonNegativeInt, 0),
    seed=(_NonNegativeInt, 0),
    **_DISTRIBUTION_FIELDS,
)
Search = create_model(  # type: ignore[call-overload]
    "Search",
    __base__=_TuneBase,
    __module__=__name__,
    __doc__="`search`: hyperparameter -> distribution for the trials of `rashomon tune`, the "
    "`objectives` (val_acc maximised, disagreement minimised) and the sampler `seed`.",
    objectives=(tuple[Literal["val_acc", "disagreement"], ...], ("val_acc",)),
    seed=(_NonNegativeInt, 0),
    **_DISTRIBUTION_FIELDS,
)


class Population(_Section):
    """Which models to train: configurations (grid × sample draws) × seed triples."""

    seeds: Seeds = Seeds(init=10, order=10, data=1)
    grid: Grid = Grid()  # type: ignore[valid-type]
    sample: Sample = Sample()  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _one_source_per_hyperparameter(self) -> Population:
        both = sorted(set(self.grid.axes()) & set(self.sample.distributions()))
        if both:
            name = both[0]
            raise ValueError(
                f"{name!r} is in both population.grid.{name} and population.sample.{name}; "
                "vary it in one of them"
            )
        return self

    @property
    def configurations(self) -> int:
        """Distinct hyperparameter configurations: grid points × sample draws."""
        return self.grid.size * max(self.sample.n, 1)

    @property
    def size(self) -> int:
        """Number of models."""
        return self.configurations * self.seeds.count


_Positive = Annotated[float, Strict(), AllowInfNan(False), at.Gt(0)]


#: The flat-minima statistics of SPEC §8: one models-table column each, in this order.
FLATNESS_COLUMNS = [
    "grad_norm",
    "hessian_trace",
    "hessian_trace_se",
    "hessian_top_eig",
    "hessian_trace_adaptive",
    "fisher_trace",
    "sam_sharpness",
    "asam_sharpness",
    "avg_sharpness",
    "weight_norm",
    "dist_from_init",
]


class FlatnessConfig(_Section):
    """Flat-minima statistics (SPEC §8): how they are estimated, or ``enabled: false``.

    The probe counts are SPEC §8's; the curvature set is 512 training examples rather than 2,048,
    which keeps the statistics near a fifth of the training time of the reference workload
    (README, Performance). Every setting can be changed per job or afterwards with
    ``rashomon flatness DIR --set key=value``. Lanczos stops a model when the residual of its top
    Ritz pair is at most ``eig_tolerance`` × the eigenvalue, or after ``eig_iterations`` steps;
    ``avg_sharpness`` averages ``avg_pairs`` antithetic pairs (δ, −δ), two losses each.
    """

    enabled: Annotated[bool, Strict()] = True
    curvature_examples: _PositiveInt = 512
    trace_probes: Annotated[int, Strict(), at.Ge(2)] = 64
    adaptive_probes: Annotated[int, Strict(), at.Ge(2)] = 32
    eig_iterations: _PositiveInt = 30
    eig_tolerance: _Positive = 1e-3
    sam_rho: _Positive = 0.05
    asam_rho: _Positive = 0.5
    asam_eta: Annotated[float, Strict(), AllowInfNan(False), at.Ge(0)] = 0.01
    avg_sigma: _Positive = 0.05
    avg_pairs: _PositiveInt = 8
    seed: _NonNegativeInt = 0

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, values: Any) -> Any:
        if isinstance(values, Mapping) and "avg_samples" in values:
            raise ValueError(
                "avg_samples is now avg_pairs: avg_sharpness averages antithetic pairs (δ, −δ), "
                "and avg_pairs: 8 costs what avg_samples: 16 did"
            )
        return values


def _pack_size(value: Any) -> int | Literal["auto"]:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(f"expected 'auto' or an integer >= 1, got {_show(value)}")


class ResourcesConfig(_Section):
    """What each Ray worker asks for, and an optional cap on models per batched pack."""

    cpus_per_worker: Annotated[float, Strict(), AllowInfNan(False), at.Gt(0)] = 1.0
    gpus_per_worker: Annotated[float, Strict(), AllowInfNan(False), at.Ge(0)] = 0.0
    models_per_pack: Annotated[int | Literal["auto"], PlainValidator(_pack_size)] = "auto"


_SPLITS = ("train", "val", "test")


class OutputConfig(_Section):
    """What to store besides the per-model table."""

    predictions: tuple[Literal["train", "val", "test"], ...] = ("val", "test")
    weights: Annotated[bool, Strict()] = True

    @field_validator("predictions")
    @classmethod
    def _canonical(cls, splits: tuple[str, ...]) -> tuple[str, ...]:
        # One spelling per meaning, so [test, val] and [val, test] hash alike.
        _reject_duplicates(splits)
        return tuple(s for s in _SPLITS if s in splits)


_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class Job(_Section):
    """A validated job. Build it with :func:`load_job` or :func:`parse_job`."""

    name: str
    dataset: DatasetConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    population: Population = Population()
    flatness: FlatnessConfig = FlatnessConfig()
    resources: ResourcesConfig = ResourcesConfig()
    output: OutputConfig = OutputConfig()
    search: Search = Search()  # type: ignore[valid-type]

    _source: str = PrivateAttr(default="<job>")
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @field_validator("name", mode="before")
    @classmethod
    def _folder_name(cls, name: Any) -> str:
        if not isinstance(name, str):
            raise ValueError(f"expected a string, got {_show(name)}")
        if not _NAME.fullmatch(name) or set(name) == {"."}:
            raise ValueError(
                "must be letters, digits, '_', '.' or '-' (it becomes a folder name), "
                f"got {_show(name)}"
            )
        return name

    @property
    def source(self) -> str:
        """Where the job came from (its file name), used to prefix error messages."""
        return self._source

    @property
    def base_dir(self) -> Path:
        """Folder of the job file: relative dataset paths are relative to it."""
        return self._base_dir

    @property
    def job_hash(self) -> str:
        """sha256 of the resolved job; any change to any field changes it."""
        return hashlib.sha256(canonical_json(self.model_dump(mode="json")).encode()).hexdigest()

    def to_yaml(self) -> str:
        """The resolved job (every default filled in) as YAML that `parse_job` reads back."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    def resolve(self, overrides: Mapping[str, Any], *, origin: str | None = None) -> dict[str, Any]:
        """All hyperparameters of the base config with `overrides` applied, validated.

        Returns the values in :data:`HYPERPARAMETERS` order with `hidden` resolved to a tuple.
        Raises UserError naming `origin` (where the overrides came from, e.g. a grid point) when a
        value is invalid or the combination breaks a cross-field rule (nesterov needs sgd, ...).
        """
        values = {
            name: getattr(getattr(self, hp.section), name) for name, hp in HYPERPARAMETERS.items()
        }
        try:
            for name, value in overrides.items():
                if name not in HYPERPARAMETERS:
                    raise _ConfigError(name, _unknown_hyperparameter_hint(name))
                try:
                    values[name] = _HP_ADAPTERS[name].validate_python(value)
                except ValidationError as exc:
                    error = exc.errors(include_url=False)[0]
                    path = _join_path((HYPERPARAMETERS[name].section, name, *error["loc"]))
                    raise _ConfigError(path, _describe(error)) from None
            if problem := _hidden_rule(values["family"], values["hidden"]):
                raise _ConfigError("model.hidden", problem)
            if problem := _nesterov_rule(
                values["nesterov"], values["optimizer"], values["momentum"]
            ):
                raise _ConfigError("train.nesterov", problem)
        except _ConfigError as exc:
            where = origin or "configuration " + ", ".join(
                f"{k}={_show(v)}" for k, v in overrides.items()
            )
            raise UserError(f"{self._source}: {where}: {exc.path}: {exc.message}") from None
        if values["hidden"] is None:
            values["hidden"] = _DEFAULT_HIDDEN[values["family"]]
        return values


class _ConfigError(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path, self.message = path, message


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------

# YAML 1.1 (PyYAML) reads `1e-3` as a string because it wants a dot; YAML 1.2 and every user
# expect a float, and job files are full of learning rates written that way.
_YAML12_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)


class _JobLoader(yaml.SafeLoader):
    """SafeLoader (no object construction) with YAML 1.2 floats and duplicate keys rejected.

    A repeated key (two `lr:` lines) silently keeps the last one in plain PyYAML; here it is an
    error with its line number.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"found the key {key!r} twice",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_JobLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))


def load_job(path: str | Path) -> Job:
    """Read, validate and resolve a job YAML file; every problem is one UserError."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{source}: no such job file") from None
    except IsADirectoryError:
        raise UserError(f"{source}: is a directory, not a job file") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"{source}: cannot read the job file: {exc.strerror}") from None
    return load_job_text(text, source, base_dir=path.resolve().parent)


def load_job_text(text: str, source: str, *, base_dir: str | Path | None = None) -> Job:
    """Validate a job given as YAML text; `source` names it in error messages."""
    try:
        document = yaml.load(text, Loader=_JobLoader)  # a SafeLoader: builds no objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise UserError(f"{source}: {where}invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: invalid YAML: {exc}") from None
    return parse_job(document, source, base_dir=base_dir)


def parse_job(mapping: Any, source: str, *, base_dir: str | Path | None = None) -> Job:
    """Validate an already-parsed job document.

    `source` names the job in error messages (normally its file name); `base_dir` is where
    relative dataset paths are resolved (default: the folder of `source`).
    """
    if mapping is None:
        raise UserError(f"{source}: the job is empty; it needs at least name: and dataset:")
    if not isinstance(mapping, Mapping):
        raise UserError(
            f"{source}: expected a mapping of settings (name:, dataset:, ...) at the top level, "
            f"got {_type_name(mapping)}"
        )
    try:
        job = Job.model_validate(dict(mapping))
    except ValidationError as exc:
        raise UserError(_format_errors(exc, source)) from None
    job._source = source
    job._base_dir = Path(base_dir) if base_dir is not None else Path(source).resolve().parent
    _check_combinations(job)
    return job


def _check_combinations(job: Job) -> None:
    """Reject grid/sample/search values that break a cross-field rule in some configuration.

    Only the keys the rules read are combined, one rule group at a time, so this stays small even
    for huge grids. For sampled ranges the two bounds are tried: the rules are monotone in them.
    """
    varied = {
        "population": _candidates(job.population.grid, job.population.sample, "population"),
        "search": _candidates(None, job.search, "search"),
    }
    for candidates in varied.values():
        for group in (("family", "hidden"), ("optimizer", "momentum", "nesterov")):
            axes = [candidates[name] for name in group if name in candidates]
            for combination in itertools.product(*axes):
                overrides = {name: value for name, value, _ in combination}
                origin = ", ".join(f"{path} = {_show(value)}" for _, value, path in combination)
                job.resolve(overrides, origin=origin)


def _candidates(grid: Any, sampled: Any, prefix: str) -> dict[str, list[tuple[str, Any, str]]]:
    found: dict[str, list[tuple[str, Any, str]]] = {}
    if grid is not None:
        for name, values in grid.axes().items():
            path = f"{prefix}.grid.{name}"
            found[name] = [(name, v, f"{path}[{i}]") for i, v in enumerate(values)]
    where = f"{prefix}.sample" if grid is not None else prefix
    for name, dist in sampled.distributions().items():
        path = f"{where}.{name}.{dist.kind}"
        found[name] = [(name, v, f"{path}[{i}]") for i, v in enumerate(dist.args)]
    return found


# ------------------------------------------------------------------------------------------------
# Error messages
# ------------------------------------------------------------------------------------------------

_MAX_ERRORS = 5


def _format_errors(exc: ValidationError, source: str) -> str:
    """One line per problem, `file: key.path: what is wrong (got ...)`, at most five."""
    errors = exc.errors(include_url=False)
    lines = [f"{source}: {_locate(error)}" for error in errors[:_MAX_ERRORS]]
    if len(errors) > _MAX_ERRORS:
        lines.append(f"{source}: ... and {len(errors) - _MAX_ERRORS} more problems")
    return "\n".join(lines)


def _locate(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        return _unknown_key(loc)
    path = _join_path(loc)
    return f"{path}: {_describe(error)}" if path else _describe(error)


def _describe(error: Mapping[str, Any]) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    got = f"got {_show(value)}"
    if kind == "missing":
        return "required, but missing"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, {got}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, {got}"
    if kind == "finite_number":
        return f"expected a finite number, {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, {got}"
    if kind in ("string_type", "string_unicode"):
        return f"expected a string, {got}"
    if kind in ("tuple_type", "list_type", "iterable_type"):
        return f"expected a list, {got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value), {got}"
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        hint = _did_you_mean(value, re.findall(r"'([^']*)'", expected))
        return f"must be {expected} ({got})" + (f"; {hint}" if hint else "")
    bounds = {
        "greater_than": ">",
        "greater_than_equal": ">=",
        "less_than": "<",
        "less_than_equal": "<=",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()))
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)  # pydantic reports `gt=0` on a float field as 0.0
        return f"must be {bounds[kind]} {_show(limit)} ({got})"
    if kind in ("too_short", "too_long"):
        low, high = ctx.get("min_length"), ctx.get("max_length")
        actual = ctx.get("actual_length")
        if low == high or (kind == "too_long" and high == 2) or (kind == "too_short" and low == 2):
            return f"expected exactly 2 values, got {actual}"
        if kind == "too_short" and low == 1:
            return "must not be empty"
        return f"expected {'at least ' + str(low) if low else 'at most ' + str(high)} items ({got})"
    return f"{error['msg']} ({got})"


def _unknown_key(loc: tuple[Any, ...]) -> str:
    key, parent_loc = loc[-1], loc[:-1]
    parent = _model_at(parent_loc) or Job
    fields = list(parent.model_fields)
    hint = _did_you_mean(key, fields)
    if parent.key_noun == "hyperparameter":
        settings = [f for f in fields if f not in HYPERPARAMETERS]  # sample: n and seed
        return f"{_join_path(loc)}: {_unknown_hyperparameter_hint(str(key), settings)}"
    if parent.key_noun == "distribution":
        name = parent.hyperparameter
        return (
            f"{_join_path(loc)}: unknown distribution {key!r} for {name}; "
            + (f"{hint} " if hint else "")
            + f"{name} takes {_or_list(fields)}"
        )
    where = f"in {_join_path(parent_loc)}" if parent_loc else "at the top level"
    return f"unknown key {key!r} {where}; " + (hint or f"valid keys: {', '.join(fields)}")


def _unknown_hyperparameter_hint(name: str, settings: Sequence[str] = ()) -> str:
    valid = [*settings, *sorted(HYPERPARAMETERS)]
    hint = _did_you_mean(name, valid)
    return "unknown hyperparameter; " + (f"{hint} " if hint else "") + f"valid: {', '.join(valid)}"


def _model_at(loc: Sequence[Any]) -> type[_Section] | None:
    """The section model that validates the mapping at `loc`, to list its valid keys."""
    cls: Any = Job
    for part in loc:
        fields = getattr(cls, "model_fields", {})
        if not isinstance(part, str) or part not in fields:
            return None
        cls = _model_in(fields[part].annotation)
    return cls if isinstance(cls, type) and issubclass(cls, _Section) else None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if found := _model_in(arg):
            return found
    return None


def _did_you_mean(value: Any, options: Sequence[str]) -> str:
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, options, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""
