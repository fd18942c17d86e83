"""The search space: which hyperparameters a population may vary, and how they are varied.

The hyperparameters that ``population.grid``, ``population.sample`` and ``search`` may vary are
listed once in :data:`HYPERPARAMETERS`; the grid, sample and search models are generated from that
table, so a grid value is validated by exactly the same type and bounds as the base field, with
pydantic's own error locations (``population.grid.lr[1]``). The cross-field rules live here too,
so a combination is judged by the same words whether it comes from the base config or a grid
point. This module knows nothing of the job's other sections, as Optuna's ``distributions`` knows
nothing of its studies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union

import annotated_types as at
from pydantic import (
    BeforeValidator,
    Discriminator,
    Strict,
    Tag,
    TypeAdapter,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)

from rashomon.jobs._base import (
    MAX_INT,
    FiniteFloat,
    NonNegative,
    NonNegativeInt,
    Positive,
    PositiveInt,
    Section,
    UnitHalfOpen,
    drop_none,
    reject_duplicates,
)
from rashomon.jobs._text import or_list, show

__all__ = [
    "CNN_DEFAULTS",
    "CNN_SETTINGS",
    "DEFAULT_HIDDEN",
    "GRID_FORMS",
    "HYPERPARAMETERS",
    "ID_NEUTRAL",
    "OBJECTIVES",
    "SAM_DEFAULTS",
    "Distribution",
    "Grid",
    "Grids",
    "Hyperparameter",
    "Sample",
    "Search",
    "column_value",
    "family_settings",
    "hidden_rule",
    "hyperparameter_adapter",
    "nesterov_rule",
    "sam_setting_rule",
    "subspace_rule",
    "unused_setting_rule",
]

# The type of one value of each hyperparameter, shared by its base field and its grid/sample.
Family = Literal["mlp", "logistic", "cnn", "module"]
Hidden = tuple[Annotated[int, Strict(), at.Gt(0), at.Le(MAX_INT)], ...]
Channels = Annotated[Hidden, at.MinLen(1)]
Kernel = PositiveInt
Stride = PositiveInt
Pool = PositiveInt
Activation = Literal["relu", "tanh", "gelu"]
Dropout = UnitHalfOpen
Epochs = PositiveInt
BatchSize = PositiveInt
Optimizer = Literal["sgd", "adam", "adamw", "sam"]
LearningRate = Positive
Momentum = UnitHalfOpen
Nesterov = Annotated[bool, Strict()]
WeightDecay = NonNegative
Schedule = Literal["constant", "cosine"]
Rho = NonNegative
SamFlag = Annotated[bool, Strict()]
LabelNoise = Annotated[FiniteFloat, at.Ge(0), at.Le(1)]
SubspaceDim = NonNegativeInt

#: What ``optimizer: sam``'s own settings resolve to when the job leaves them out (SPEC §4).
SAM_DEFAULTS: dict[str, Any] = {"rho": 0.05, "sam_normalize": True, "sam_adaptive": False}

#: Values that train a model exactly as before the setting existed: a model id leaves them out,
#: so the ids of the jobs written before them stay the same.
ID_NEUTRAL: dict[str, Any] = {"label_noise": 0.0, "subspace_dim": 0}

#: Hidden layers used when `model.hidden` is omitted (null): a one-layer MLP, none for logistic,
#: and none after a cnn's convolutions (its last block feeds the output layer).
DEFAULT_HIDDEN: dict[str, tuple[int, ...]] = {"mlp": (64,), "logistic": (), "cnn": ()}

#: The cnn family's own settings, and their values when the job leaves them out.
CNN_SETTINGS = ("channels", "kernel", "stride", "pool")
CNN_DEFAULTS: dict[str, Any] = {"channels": (32, 32), "kernel": 5, "stride": 1, "pool": 2}


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
    "family": ("model", str, Family, False),
    "hidden": ("model", tuple, Hidden, False),
    "activation": ("model", str, Activation, False),
    "dropout": ("model", float, Dropout, True),
    "channels": ("model", tuple, Channels, False),
    "kernel": ("model", int, Kernel, False),
    "stride": ("model", int, Stride, False),
    "pool": ("model", int, Pool, False),
    "epochs": ("train", int, Epochs, False),
    "batch_size": ("train", int, BatchSize, False),
    "optimizer": ("train", str, Optimizer, False),
    "lr": ("train", float, LearningRate, True),
    "momentum": ("train", float, Momentum, True),
    "nesterov": ("train", bool, Nesterov, False),
    "weight_decay": ("train", float, WeightDecay, True),
    "schedule": ("train", str, Schedule, False),
    "rho": ("train", float, Rho, True),
    "sam_normalize": ("train", bool, SamFlag, True),
    "sam_adaptive": ("train", bool, SamFlag, True),
    "label_noise": ("train", float, LabelNoise, True),
    "subspace_dim": ("train", int, SubspaceDim, False),
}

#: The variable hyperparameters, in the order of the `hp_<name>` columns (model, then train).
HYPERPARAMETERS: dict[str, Hyperparameter] = {
    name: Hyperparameter(name=name, section=section, type=py_type, per_model=per_model)
    for name, (section, py_type, _, per_model) in _HP_TABLE.items()
}


def column_value(name: str, value: Any) -> Any:
    """A hyperparameter's value as its ``hp_<name>`` column (and an Optuna choice) holds it:
    layer sizes as the text ``"[64, 32]"``, everything else as it is (null where the model's
    family does not use the setting)."""
    if value is not None and HYPERPARAMETERS[name].type is tuple:
        return "[" + ", ".join(str(int(v)) for v in value) + "]"
    return value


_HP_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    name: TypeAdapter(annotation) for name, (_, _, annotation, _) in _HP_TABLE.items()
}


def hyperparameter_adapter(name: str) -> TypeAdapter[Any]:
    """Validates one value of hyperparameter `name` exactly as its base field does."""
    return _HP_ADAPTERS[name]


# Which distributions make sense for each python type: continuous ranges only for floats, integer
# ranges only for ints, and an explicit list of values for anything.
_KINDS_BY_TYPE: dict[type, tuple[str, ...]] = {
    float: ("loguniform", "uniform", "choice"),
    int: ("int", "choice"),
}


def _kinds_for(name: str) -> tuple[str, ...]:
    return _KINDS_BY_TYPE.get(HYPERPARAMETERS[name].type, ("choice",))


# --- cross-field rules: shared by the section models (base config) and `Job.resolve` -------------


def hidden_rule(family: str, hidden: tuple[int, ...] | None) -> str | None:
    """What is wrong with these hidden layers for this family, or None."""
    if hidden is None:
        return None
    if family == "logistic" and hidden:
        return (
            f"a logistic model has no hidden layers (got {show(hidden)}); "
            "remove model.hidden or use family mlp"
        )
    if family == "mlp" and not hidden:
        return "an mlp needs at least one hidden layer; use family logistic for none"
    return None


def family_settings(family: str) -> dict[str, Any]:
    """The model hyperparameters that ``family`` does not use, each with the value it resolves
    to: null (not part of the model id, an empty ``hp_`` cell), or for a module's dropout 0."""
    unused: dict[str, Any] = {} if family == "cnn" else dict.fromkeys(CNN_SETTINGS)
    if family == "module":
        unused |= {"hidden": None, "activation": None, "dropout": 0.0}
    return unused


def unused_setting_rule(family: str, name: str, value: Any) -> str | None:
    """What is wrong with giving ``name`` to a model of ``family`` that does not use it, or None
    (an empty layer list and a dropout of 0 say nothing, so they are fine)."""
    if name not in family_settings(family) or value in ((), 0.0, None):
        return None
    if name in CNN_SETTINGS:
        return f"{name} is a cnn setting (got {show(value)}); remove model.{name} or use family cnn"
    if name == "dropout":
        return (
            f"a module model takes no model.dropout (got {show(value)}): a dropout inside it "
            "would not draw from each model's own order seed; set it to 0"
        )
    if name == "hidden":
        return f"a module model's layers are its own (got {show(value)}); remove model.hidden"
    return None


def nesterov_rule(nesterov: bool, optimizer: str, momentum: float) -> str | None:
    """What is wrong with nesterov under this optimizer and momentum, or None."""
    if not nesterov:
        return None
    if optimizer not in ("sgd", "sam"):
        return f"nesterov needs optimizer 'sgd' or 'sam' (got {show(optimizer)})"
    if momentum <= 0:
        return f"nesterov needs momentum > 0 (got {show(momentum)})"
    return None


def sam_setting_rule(optimizer: str, name: str, value: Any) -> str | None:
    """What is wrong with giving ``name`` (rho, sam_normalize, sam_adaptive) to a model of
    ``optimizer``, or None."""
    if optimizer == "sam" or value is None:
        return None
    return (
        f"{name} is a setting of optimizer sam (got {show(value)} with optimizer "
        f"{show(optimizer)}); remove train.{name} or set train.optimizer: sam"
    )


def subspace_rule(subspace_dim: int, sam_adaptive: bool | None) -> str | None:
    """What is wrong with ASAM in a random subspace, or None: ASAM scales each weight by its own
    magnitude, and a subspace model learns coordinates, not weights."""
    if subspace_dim and sam_adaptive:
        return (
            f"sam_adaptive (ASAM) scales each weight by |w| + η, but with subspace_dim "
            f"{subspace_dim} the learnt values are subspace coordinates, not weights; set "
            "sam_adaptive: false or subspace_dim: 0"
        )
    return None


# --- distributions -------------------------------------------------------------------------------


class Distribution(Section):
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
            raise ValueError(f"needs 0 < low < high (got {show(bounds)})")
        return bounds

    @field_validator("uniform", check_fields=False)
    @classmethod
    def _increasing(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        if not bounds[0] < bounds[1]:
            raise ValueError(f"needs low < high (got {show(bounds)})")
        return bounds

    @field_validator("int", check_fields=False)
    @classmethod
    def _ordered(cls, bounds: tuple[int, int]) -> tuple[int, int]:
        if not bounds[0] <= bounds[1]:
            raise ValueError(f"needs low <= high (got {show(bounds)})")
        return bounds

    @field_validator("choice", check_fields=False)
    @classmethod
    def _distinct(cls, values: tuple[Any, ...]) -> tuple[Any, ...]:
        reject_duplicates(values)
        return values

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [kind for kind in type(self).model_fields if getattr(self, kind) is not None]
        if len(given) != 1:
            offered = or_list(f"{kind}: [...]" for kind in type(self).model_fields)
            got = "none" if not given else " and ".join(given)
            raise ValueError(f"give exactly one distribution, {offered} (got {got})")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        return drop_none(handler(self))

    @property
    def kind(self) -> str:
        """'loguniform', 'uniform', 'int' or 'choice'."""
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)

    @property
    def args(self) -> tuple[Any, ...]:
        """The bounds (low, high) or the choices."""
        return getattr(self, self.kind)

    @property
    def support_size(self) -> int | None:
        """How many distinct values a draw can take; None for a continuous range."""
        if self.kind == "int":
            low, high = self.args
            return high - low + 1
        return len(self.args) if self.kind == "choice" else None


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


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


# --- grid, sample and search ---------------------------------------------------------------------


class _HyperparameterMapping(Section):
    """A mapping keyed by hyperparameter names (grid, sample, search).

    The fields are generated from :data:`HYPERPARAMETERS` with a default of None that YAML cannot
    produce (an explicit null is a type error), so None means "not given" and is left out of dumps.
    """

    key_noun: ClassVar[str] = "hyperparameter"

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        return drop_none(handler(self))

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
            reject_duplicates(values)
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


#: The objectives `rashomon tune` can optimise, and which way each is better.
OBJECTIVES = {"val_acc": "maximize", "disagreement": "minimize"}


class _TuneBase(_SearchBase):
    @field_validator("objectives", check_fields=False)
    @classmethod
    def _distinct_objectives(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if not names:
            raise ValueError("needs at least one objective, e.g. [val_acc]")
        reject_duplicates(names)
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
#: The two forms of `population.grid`, as pydantic's error locations name them (messages leave
#: them out): one mapping of axes, or a list of mappings whose grids are joined.
GRID_FORMS = ("one grid", "union of grids")


def _grid_form(value: Any) -> str:
    return GRID_FORMS[1] if isinstance(value, list | tuple) else GRID_FORMS[0]


def _some_grids(value: Any) -> Any:
    if not value:
        raise ValueError("an empty list has no models; give one grid or more")
    return value


#: `population.grid`: one grid (axes crossed), or a union of grids (each crossed, then joined,
#: like scikit-learn's ParameterGrid of a list), for designs a single product cannot express:
#: plain sgd next to sam at several rho, say.
Grids = Annotated[
    Union[  # noqa: UP007 (the tags need the typing form)
        Annotated[Grid, Tag(GRID_FORMS[0])],
        Annotated[tuple[Grid, ...], BeforeValidator(_some_grids), Tag(GRID_FORMS[1])],
    ],
    Discriminator(_grid_form),
]

Sample = create_model(  # type: ignore[call-overload]
    "Sample",
    __base__=_SampleBase,
    __module__=__name__,
    __doc__="`population.sample`: `n` configurations drawn with `seed`, crossed with the grid.",
    n=(NonNegativeInt, 0),
    seed=(NonNegativeInt, 0),
    **_DISTRIBUTION_FIELDS,
)
Search = create_model(  # type: ignore[call-overload]
    "Search",
    __base__=_TuneBase,
    __module__=__name__,
    __doc__="`search`: hyperparameter -> distribution for the trials of `rashomon tune`, the "
    "`objectives` (val_acc maximised, disagreement minimised) and the sampler `seed`.",
    objectives=(tuple[Literal[tuple(OBJECTIVES)], ...], ("val_acc",)),
    seed=(NonNegativeInt, 0),
    **_DISTRIBUTION_FIELDS,
)
