"""The sections of a job (dataset, model, train, population, flatness, resources, output) and Job.

Every section forbids unknown keys and types its values strictly (see ``_base``); the values a
population may vary, and the rules between them, come from the search space (``_space``), so a
base setting and a grid value of it are judged alike. :meth:`Job.resolve` applies one
configuration's overrides to the base config; it is the one place a configuration is checked.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at
import yaml
from pydantic import (
    AllowInfNan,
    Field,
    PlainValidator,
    PrivateAttr,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from rashomon.jobs._base import (
    MAX_INT,
    NonEmptyStr,
    NonNegativeInt,
    Positive,
    PositiveInt,
    Section,
    UnitHalfOpen,
    UnitOpen,
    reject_duplicates,
)
from rashomon.jobs._datasets import SPLITS, builtin_shape, builtin_target
from rashomon.jobs._errors import UserError
from rashomon.jobs._messages import ConfigError, describe, unknown_hyperparameter_hint
from rashomon.jobs._modules import MODULE_TARGET, ModuleRef, check_kwargs, locate_module
from rashomon.jobs._space import (
    CNN_DEFAULTS,
    DEFAULT_HIDDEN,
    HYPERPARAMETERS,
    SAM_DEFAULTS,
    Activation,
    BatchSize,
    Channels,
    Dropout,
    Epochs,
    Family,
    Grid,
    Grids,
    Hidden,
    Kernel,
    LabelNoise,
    LearningRate,
    Momentum,
    Nesterov,
    Optimizer,
    Pool,
    Rho,
    SamFlag,
    Sample,
    Schedule,
    Search,
    Stride,
    SubspaceDim,
    WeightDecay,
    family_settings,
    hidden_rule,
    hyperparameter_adapter,
    nesterov_rule,
    sam_setting_rule,
    subspace_rule,
    unused_setting_rule,
)
from rashomon.jobs._text import canonical_json, join_path, show

__all__ = [
    "FLATNESS_COLUMNS",
    "HISTORY_COLUMNS",
    "SIMPLICITY_COLUMNS",
    "DatasetConfig",
    "FlatnessConfig",
    "Job",
    "ModelConfig",
    "OutputConfig",
    "Population",
    "ResourcesConfig",
    "Seeds",
    "SplitConfig",
    "TrainConfig",
]


class SplitConfig(Section):
    """One fixed stratified train/val/test split shared by the whole population."""

    val: UnitOpen = 0.2
    test: Annotated[UnitOpen, Field(validate_default=True)] = 0.2
    seed: NonNegativeInt = 0

    @field_validator("test")
    @classmethod
    def _leave_training_data(cls, test: float, info: ValidationInfo) -> float:
        val = info.data.get("val")
        if val is not None and val + test >= 1:
            raise ValueError(
                f"val + test must be < 1 to leave training data (got {val!r} + {test!r})"
            )
        return test


class DatasetConfig(Section):
    """Which data to learn from; `groups` only label examples for subgroup analysis,
    `missing_values` are more ways the file writes an empty cell ("?", "n/a"), and `shape` makes
    each example a signal (channels, length) or an image (channels, height, width)."""

    source: NonEmptyStr
    target: NonEmptyStr | None = None
    groups: tuple[NonEmptyStr, ...] = ()
    exclude: tuple[NonEmptyStr, ...] = ()
    split: SplitConfig = SplitConfig()
    missing_values: tuple[NonEmptyStr, ...] = ()
    shape: tuple[PositiveInt, ...] | None = None

    @field_validator("shape")
    @classmethod
    def _channels_first(cls, shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if shape is not None and len(shape) not in (2, 3):
            raise ValueError(
                f"expected [channels, length] or [channels, height, width], got {show(shape)}"
            )
        return shape

    @field_validator("groups", "exclude", "missing_values")
    @classmethod
    def _no_repeats(cls, columns: tuple[str, ...]) -> tuple[str, ...]:
        reject_duplicates(columns)
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
        identity = {
            "source": self.source,
            "target": self.target or builtin_target(self.source),
            "exclude": sorted(self.exclude),
            "split": self.split.model_dump(mode="json"),
        }
        if self.missing_values:  # absent when unused: the ids of earlier jobs stay the same
            identity["missing_values"] = sorted(self.missing_values)
        if (shape := self.shape or builtin_shape(self.source)) is not None:
            identity["shape"] = list(shape)
        return identity

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        # Unused, missing_values and shape are left out, so jobs written before them keep their
        # hash.
        dumped = handler(self)
        if isinstance(dumped, dict):
            if not dumped.get("missing_values", True):
                del dumped["missing_values"]
            if dumped.get("shape", 0) is None:
                del dumped["shape"]
        return dumped


def _module_target(value: Any) -> str:
    if not isinstance(value, str) or not MODULE_TARGET.fullmatch(value):
        raise ValueError(f'expected "package.module:ClassName", got {show(value)}')
    return value


def _sha256(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"expected 64 lower-case hex digits (a sha256), got {show(value)}")
    return value


class ModelConfig(Section):
    """The network. ``hidden: null`` (the default) means the family's default layers; the cnn
    settings left out take `CNN_DEFAULTS`. ``module`` names a user's class, built with ``kwargs``;
    ``source_sha256`` pins its source file (the resolved job records it)."""

    family: Family = "mlp"
    hidden: Hidden | None = None
    activation: Activation = "relu"
    dropout: Dropout = 0.0
    channels: Channels | None = None
    kernel: Kernel | None = None
    stride: Stride | None = None
    pool: Pool | None = None
    module: Annotated[str, PlainValidator(_module_target)] | None = None
    kwargs: Annotated[dict[str, Any], PlainValidator(check_kwargs)] | None = None
    source_sha256: Annotated[str, PlainValidator(_sha256)] | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        # Settings added with the cnn and module families are left out while unset, so the jobs
        # written before them keep their hash.
        dumped = handler(self)
        if isinstance(dumped, dict):
            for name in (*CNN_DEFAULTS, "module", "kwargs", "source_sha256"):
                if dumped.get(name) is None:
                    dumped.pop(name, None)
        return dumped

    @field_validator("hidden")
    @classmethod
    def _fits_family(
        cls, hidden: tuple[int, ...] | None, info: ValidationInfo
    ) -> tuple[int, ...] | None:
        family = info.data.get("family")
        if family is not None and (problem := hidden_rule(family, hidden)):
            raise ValueError(problem)
        return hidden


class TrainConfig(Section):
    """Optimisation settings; `betas`/`eps` only affect adam(w), `momentum`/`nesterov` sgd and
    sam (its base step), `rho`/`sam_normalize`/`sam_adaptive` only sam (left out: 0.05, true,
    false). `label_noise` p replaces each minibatch label by a uniformly random class with
    probability p; `subspace_dim` d > 0 trains d coordinates of a random subspace (0 or null:
    the full parameter space)."""

    epochs: Epochs = 20
    batch_size: BatchSize = 256
    optimizer: Optimizer = "sgd"
    lr: LearningRate = 0.1
    momentum: Momentum = 0.9
    nesterov: Nesterov = False
    betas: tuple[UnitHalfOpen, UnitHalfOpen] = (0.9, 0.999)
    eps: Annotated[float, Strict(), AllowInfNan(False), at.Gt(0)] = 1.0e-8
    weight_decay: WeightDecay = 0.0
    schedule: Schedule = "constant"
    dtype: Literal["float32", "float64"] = "float32"
    rho: Rho | None = None
    sam_normalize: SamFlag | None = None
    sam_adaptive: SamFlag | None = None
    label_noise: LabelNoise = 0.0
    subspace_dim: SubspaceDim | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        # Settings added with sam, label noise and subspaces are left out while unset (or 0,
        # which means the same), so the jobs written before them keep their hash.
        dumped = handler(self)
        if isinstance(dumped, dict):
            for name in SAM_DEFAULTS:
                if dumped.get(name) is None:
                    dumped.pop(name, None)
            for name in ("label_noise", "subspace_dim"):
                if not dumped.get(name):
                    dumped.pop(name, None)
        return dumped

    @field_validator("nesterov")
    @classmethod
    def _needs_sgd_momentum(cls, nesterov: bool, info: ValidationInfo) -> bool:
        optimizer, momentum = info.data.get("optimizer"), info.data.get("momentum")
        if None not in (optimizer, momentum) and (
            problem := nesterov_rule(nesterov, optimizer, momentum)
        ):
            raise ValueError(problem)
        return nesterov

    def fixed_settings(self) -> dict[str, Any]:
        """Settings that change results but are not hyperparameters (part of every model id)."""
        return {"betas": list(self.betas), "eps": self.eps, "dtype": self.dtype}


class Seeds(Section):
    """The seed axes. A mapping is a full factorial; a bare integer N pairs init = order = i.

    Read `count` and `triples()` rather than the fields: for a bare N the fields hold
    (N, N, 1) but the models are the N pairs (i, i, 0), not N² combinations.
    """

    init: PositiveInt = 1
    order: PositiveInt = 1
    data: PositiveInt = 1
    _paired: bool = PrivateAttr(default=False)

    @model_validator(mode="wrap")
    @classmethod
    def _bare_count(cls, data: Any, handler: Any) -> Seeds:
        if isinstance(data, bool) or not isinstance(data, int | Mapping | Seeds):
            raise ValueError(
                "expected a number of seeds (seeds: 100) or a mapping "
                f"{{init: 10, order: 10, data: 1}}, got {show(data)}"
            )
        if isinstance(data, int):
            if data < 1:
                raise ValueError(f"the number of seeds must be >= 1 (got {data})")
            if data > MAX_INT:
                raise ValueError(f"the number of seeds must be <= {MAX_INT} (got {show(data)})")
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


class Population(Section):
    """Which models to train: configurations (grid points × sample draws) × seed triples.

    ``grid`` is one mapping of axes, crossed, or a list of such mappings whose grids are joined
    (each crossed on its own, then one after the other): the models of a list of grids are those
    of its grids, in order, and no configuration may be in two of them."""

    seeds: Seeds = Seeds(init=10, order=10, data=1)
    grid: Grids = Grid()  # type: ignore[valid-type]
    sample: Sample = Sample()  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _one_source_per_hyperparameter(self) -> Population:
        gridded = {name for grid in self.grids() for name in grid.axes()}
        both = sorted(gridded & set(self.sample.distributions()))
        if both:
            name = both[0]
            raise ValueError(
                f"{name!r} is in both population.grid and population.sample.{name}; "
                "vary it in one of them"
            )
        return self

    def grids(self) -> tuple[Any, ...]:
        """The grids: one for a mapping, each entry of a list."""
        return self.grid if isinstance(self.grid, tuple) else (self.grid,)

    @property
    def grid_points(self) -> int:
        """Grid points over every grid (1 without a grid)."""
        return sum(grid.size for grid in self.grids())

    @property
    def configurations(self) -> int:
        """Distinct hyperparameter configurations: grid points × sample draws."""
        return self.grid_points * max(self.sample.n, 1)

    @property
    def size(self) -> int:
        """Number of models."""
        return self.configurations * self.seeds.count


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


#: The simplicity statistics: effective ranks (Roy & Vetterli 2007) of the penultimate-layer
#: features on the curvature set and of the first layer's weights, computed with SPEC §8's.
SIMPLICITY_COLUMNS = ["feature_effective_rank", "weight_effective_rank"]

#: The learning-curve columns of ``history/`` (SPEC §5), after ``model_id`` and ``epoch``;
#: ``hessian_top_eig`` is null unless ``flatness.track`` is on.
HISTORY_COLUMNS = ["train_loss", "val_loss", "val_acc", "lr", "hessian_top_eig"]

#: Lanczos steps per epoch of `flatness.track`, warm-started from the previous epoch's vector.
TRACK_ITERATIONS = 20


class FlatnessConfig(Section):
    """Flat-minima statistics (SPEC §8): how they are estimated, or ``enabled: false``.

    The probe counts are SPEC §8's; the curvature set is 512 training examples rather than 2,048,
    which keeps the statistics near a fifth of the training time of the reference workload
    (README, Performance). Every setting can be changed per job or afterwards with
    ``rashomon flatness DIR --set key=value``. Lanczos stops a model when the residual of its top
    Ritz pair is at most ``eig_tolerance`` × the eigenvalue, or after ``eig_iterations`` steps;
    ``avg_sharpness`` averages ``avg_pairs`` antithetic pairs (δ, −δ), two losses each.
    ``track: true`` also records ``hessian_top_eig`` at the end of every epoch in ``history/``:
    ``track_iterations`` Lanczos steps, each model warm-started from its previous epoch's vector.
    """

    enabled: Annotated[bool, Strict()] = True
    curvature_examples: PositiveInt = 512
    trace_probes: Annotated[int, Strict(), at.Ge(2)] = 64
    adaptive_probes: Annotated[int, Strict(), at.Ge(2)] = 32
    eig_iterations: PositiveInt = 30
    eig_tolerance: Positive = 1e-3
    sam_rho: Positive = 0.05
    asam_rho: Positive = 0.5
    asam_eta: Annotated[float, Strict(), AllowInfNan(False), at.Ge(0)] = 0.01
    avg_sigma: Positive = 0.05
    avg_pairs: PositiveInt = 8
    seed: NonNegativeInt = 0
    track: Annotated[bool, Strict()] = False
    track_iterations: PositiveInt = TRACK_ITERATIONS

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        # The tracking settings are left out at their defaults, so the jobs written before them
        # keep their hash.
        dumped = handler(self)
        if isinstance(dumped, dict):
            if dumped.get("track") is False:
                del dumped["track"]
            if dumped.get("track_iterations") == TRACK_ITERATIONS:
                del dumped["track_iterations"]
        return dumped

    @model_validator(mode="after")
    def _track_needs_statistics(self) -> FlatnessConfig:
        if self.track and not self.enabled:
            raise ValueError(
                "track: true records hessian_top_eig through training with the statistics' "
                "curvature set; it needs enabled: true"
            )
        return self

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
    raise ValueError(f"expected 'auto' or an integer >= 1, got {show(value)}")


class ResourcesConfig(Section):
    """What each Ray worker asks for, and an optional cap on models per batched pack."""

    cpus_per_worker: Annotated[float, Strict(), AllowInfNan(False), at.Gt(0)] = 1.0
    gpus_per_worker: Annotated[float, Strict(), AllowInfNan(False), at.Ge(0)] = 0.0
    models_per_pack: Annotated[int | Literal["auto"], PlainValidator(_pack_size)] = "auto"


class OutputConfig(Section):
    """What to store besides the per-model table."""

    predictions: tuple[Literal[SPLITS], ...] = ("val", "test")
    weights: Annotated[bool, Strict()] = True

    @field_validator("predictions")
    @classmethod
    def _canonical(cls, splits: tuple[str, ...]) -> tuple[str, ...]:
        # One spelling per meaning, so [test, val] and [val, test] hash alike.
        reject_duplicates(splits)
        return tuple(s for s in SPLITS if s in splits)


_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")  # file systems allow 255 bytes per name


class Job(Section):
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
    _module: ModuleRef | None = PrivateAttr(default=None)

    @field_validator("name", mode="before")
    @classmethod
    def _folder_name(cls, name: Any) -> str:
        if not isinstance(name, str):
            raise ValueError(f"expected a string, got {show(name)}")
        if not _NAME.fullmatch(name) or set(name) == {"."}:
            raise ValueError(
                "must be letters, digits, '_', '.' or '-', at most 200 (it becomes a folder "
                f"name), got {show(name)}"
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

    @model_validator(mode="after")
    def _module_settings(self) -> Job:
        model, families = self.model, self.families()
        if "module" in families and model.module is None:
            raise ValueError(
                "model.module: family module needs the class to train, e.g. module: "
                '"my_models:SmallNet" (a file my_models.py next to the job)'
            )
        if model.module is not None and "module" not in families:
            raise ValueError(
                "model.module: only family module uses it; set model.family: module, or remove "
                "model.module"
            )
        for name in ("kwargs", "source_sha256"):
            if model.module is None and getattr(model, name) is not None:
                raise ValueError(f"model.{name}: only with model.module; remove it")
        return self

    def _resolve_sam(self, values: dict[str, Any], overrides: Mapping[str, Any]) -> None:
        """sam's settings: their defaults for a sam model, null for any other (a base setting
        meant for the sam models of an optimizer axis does not apply to the others)."""
        optimizer = values["optimizer"]
        varies = "optimizer" in overrides or self.varies("optimizer")
        for name, default in SAM_DEFAULTS.items():
            if optimizer == "sam":
                values[name] = default if values[name] is None else values[name]
                continue
            checked = name in overrides or not varies
            if checked and (problem := sam_setting_rule(optimizer, name, values[name])):
                raise ConfigError(f"train.{name}", problem)
            values[name] = None

    def varies(self, name: str) -> bool:
        """Whether grid, sample or search vary hyperparameter ``name``."""
        return any(name in grid.axes() for grid in self.population.grids()) or any(
            name in sampled.distributions() for sampled in (self.population.sample, self.search)
        )

    def family_varies(self) -> bool:
        """Whether grid, sample or search vary the family (base settings of one family then
        leave the others alone)."""
        return self.varies("family")

    def families(self) -> set[str]:
        """Every model family the job trains (the base one and those of grid, sample, search)."""
        found = {self.model.family}
        for grid in self.population.grids():
            found |= set(grid.axes().get("family", ()))
        for sampled in (self.population.sample, self.search):
            if (dist := sampled.distributions().get("family")) is not None:
                found |= set(dist.args)
        return found

    def module_reference(self) -> ModuleRef | None:
        """The user's class of a ``module`` job, located from the job's folder and hashed (once
        per job object); None for the built-in families. A pinned ``source_sha256`` must match."""
        model = self.model
        if model.module is None:
            return None
        if self._module is None:
            folders = (str(self.base_dir.resolve()),)
            module_name = model.module.split(":")[0]
            try:
                path, sha256 = locate_module(module_name, folders)
            except UserError as error:
                raise UserError(f"{self._source}: {error}") from None
            if model.source_sha256 not in (None, sha256):
                raise UserError(
                    f"{self._source}: model.source_sha256: {path} has sha256 {sha256[:12]}…, "
                    f"not the {model.source_sha256[:12]}… these models were trained from; "
                    "restore that version of the file, or remove model.source_sha256 to train "
                    "the new one"
                )
            self._module = ModuleRef(
                model.module,
                canonical_json(model.kwargs or {}),
                sha256,
                (str(path.parents[module_name.count(".")]),),
            )
        return self._module

    def _resolved_dump(self) -> dict[str, Any]:
        """The job as written to a results folder: a module job records its source's sha256."""
        dumped = self.model_dump(mode="json")
        if (reference := self.module_reference()) is not None:
            dumped["model"]["source_sha256"] = reference.sha256
        return dumped

    @property
    def job_hash(self) -> str:
        """sha256 of the resolved job; any change to any field (or to a module's source)
        changes it."""
        return hashlib.sha256(canonical_json(self._resolved_dump()).encode()).hexdigest()

    def to_yaml(self) -> str:
        """The resolved job (every default filled in) as YAML that `parse_job` reads back."""
        return yaml.safe_dump(self._resolved_dump(), sort_keys=False, allow_unicode=True)

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
                    raise ConfigError(name, unknown_hyperparameter_hint(name))
                try:
                    values[name] = hyperparameter_adapter(name).validate_python(value)
                except ValidationError as exc:
                    error = exc.errors(include_url=False)[0]
                    path = join_path((HYPERPARAMETERS[name].section, name, *error["loc"]))
                    raise ConfigError(path, describe(error)) from None
            family, varies = values["family"], "family" in overrides or self.family_varies()
            if family == "logistic" and varies and "hidden" not in overrides:
                values["hidden"] = ()  # a family axis's layers are for mlp and cnn
            for name, unused in family_settings(family).items():
                # a base setting meant for the other families of a family axis does not apply
                checked = name in overrides or not varies
                if checked and (problem := unused_setting_rule(family, name, values[name])):
                    raise ConfigError(f"model.{name}", problem)
                values[name] = unused
            if problem := hidden_rule(family, values["hidden"]):
                raise ConfigError("model.hidden", problem)
            if problem := nesterov_rule(
                values["nesterov"], values["optimizer"], values["momentum"]
            ):
                raise ConfigError("train.nesterov", problem)
            self._resolve_sam(values, overrides)
            values["subspace_dim"] = values["subspace_dim"] or 0
            if problem := subspace_rule(values["subspace_dim"], values["sam_adaptive"]):
                raise ConfigError("train.sam_adaptive", problem)
        except ConfigError as exc:
            if origin is None:
                origin = "configuration " + ", ".join(
                    f"{k}={show(v)}" for k, v in overrides.items()
                )
            where = f"{origin}: " if origin else ""
            raise UserError(f"{self._source}: {where}{exc.path}: {exc.message}") from None
        if values["hidden"] is None and family != "module":
            values["hidden"] = DEFAULT_HIDDEN[family]
        if family == "cnn":
            values |= {k: v for k, v in CNN_DEFAULTS.items() if values[k] is None}
        return values
