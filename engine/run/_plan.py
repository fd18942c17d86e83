"""Group a job's models into packs: the unit of batched training, scheduling and output.

Models that share every structural hyperparameter (architecture, batch size, epochs, optimizer
kind, schedule) can train in one batched computation; per-model hyperparameters and seeds vary
freely inside a pack. A pack's id is a hash of its model ids, so a pack's files can be named and
rewritten idempotently, and a rerun that re-plans the same pending models finds the same ids.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rashomon.engine.model import DTYPES, Architecture, ModelSpec, PackSettings, build_family
from rashomon.jobs import HYPERPARAMETERS, ModuleRef, column_value

# Measured on the reference workload (benchmarks/bench_training.py): on a CPU, packs beyond ~64
# models spill the per-step working set out of cache and every model gets slower.
CPU_PACK_CAP = 64
GPU_PACK_CAP = 1024
STEP_MEMORY_BUDGET = 16 * 2**20


@dataclass(frozen=True)
class PackModel:
    model_id: str
    spec: ModelSpec
    hparams: dict
    trial: int | None = None


@dataclass(frozen=True)
class Pack:
    pack_id: str
    settings: PackSettings
    models: tuple[PackModel, ...]

    def __len__(self) -> int:
        return len(self.models)

    def columns(self) -> dict[str, list]:
        """The models table's columns that the plan already knows: ids, seeds, trial and one
        ``hp_<name>`` per hyperparameter."""
        models = self.models
        columns = {
            "model_id": [m.model_id for m in models],
            "pack_id": [self.pack_id] * len(models),
            "init_seed": [m.spec.init_seed for m in models],
            "order_seed": [m.spec.order_seed for m in models],
            "data_seed": [m.spec.data_seed for m in models],
            "trial": [m.trial for m in models],
        }
        for name in HYPERPARAMETERS:
            columns[f"hp_{name}"] = [column_value(name, m.hparams[name]) for m in models]
        return columns


def pack_settings(hparams, train, module: ModuleRef | None = None) -> PackSettings:
    """What a configuration's models share; ``module`` is the job's class for a module family."""
    family = hparams["family"]
    return PackSettings(
        family=family,
        hidden=tuple(hparams["hidden"]) if family in ("mlp", "cnn") else (),
        activation=hparams["activation"] or "",
        epochs=hparams["epochs"],
        batch_size=hparams["batch_size"],
        optimizer=hparams["optimizer"],
        nesterov=bool(hparams["nesterov"]),
        schedule=hparams["schedule"],
        betas=tuple(train.betas),
        eps=train.eps,
        dtype=train.dtype,
        channels=tuple(hparams["channels"] or ()),
        kernel=hparams["kernel"] or 0,
        stride=hparams["stride"] or 0,
        pool=hparams["pool"] or 0,
        module=module if family == "module" else None,
        subspace_dim=hparams["subspace_dim"] or 0,
    )


def pack_model(variant, hparams: dict | None = None) -> PackModel:
    """``hparams``: a plain copy of the variant's, shared by the models of one configuration."""
    h = variant.hparams
    spec = ModelSpec(
        init_seed=variant.init_seed,
        order_seed=variant.order_seed,
        data_seed=variant.data_seed,
        lr=h["lr"],
        momentum=h["momentum"],
        weight_decay=h["weight_decay"],
        dropout=h["dropout"],
        rho=h["rho"] or 0.0,
        sam_normalize=h["sam_normalize"] is not False,
        sam_adaptive=bool(h["sam_adaptive"]),
        label_noise=h["label_noise"],
    )
    return PackModel(variant.model_id, spec, dict(h) if hparams is None else hparams, variant.trial)


def pack_id(model_ids: Sequence[str]) -> str:
    return hashlib.sha256(",".join(model_ids).encode()).hexdigest()[:16]


def auto_pack_size(
    settings: PackSettings,
    n_features: int,
    n_classes: int,
    on_gpu: bool,
    in_shape: tuple[int, ...] | None = None,
) -> int:
    """The largest pack whose per-step activations stay within a cache-sized budget."""
    if on_gpu:
        return GPU_PACK_CAP
    family = build_family(settings, in_shape or (n_features,), n_classes)
    if isinstance(family, Architecture):
        width = n_features + n_classes + 3 * sum(settings.hidden)
    else:  # every layer's output (measured on MNIST-1D CNNs: packs of 8-16 beat 4 and 64)
        width = family.activation_total
    bytes_per_model = settings.batch_size * width * DTYPES[settings.dtype].itemsize
    return max(1, min(CPU_PACK_CAP, STEP_MEMORY_BUDGET // bytes_per_model))


def pack_size(
    n_models: int,
    settings: PackSettings,
    models_per_pack: int | str,
    n_features: int,
    n_classes: int,
    n_workers: int = 1,
    on_gpu: bool = False,
    in_shape: tuple[int, ...] | None = None,
) -> int:
    """The size of the packs of ``n_models`` models with these settings (the last one takes
    the rest). With ``auto``, fine enough that every worker gets a pack; equal-sized packs keep
    the tail of a run from waiting on one large pack."""
    if models_per_pack == "auto":
        cap = auto_pack_size(settings, n_features, n_classes, on_gpu, in_shape)
        cap = min(cap, math.ceil(n_models / max(n_workers, 1)))
    else:
        cap = int(models_per_pack)
    return math.ceil(n_models / math.ceil(n_models / cap))


def plan_packs(
    variants: Iterable,
    train,
    models_per_pack: int | str,
    n_features: int,
    n_classes: int,
    n_workers: int = 1,
    on_gpu: bool = False,
    in_shape: tuple[int, ...] | None = None,
    module: ModuleRef | None = None,
) -> list[Pack]:
    """Packs in the order their first model appears in the job, each of `pack_size`.
    ``in_shape`` is one example's shape (default: a table of ``n_features``), ``module`` the
    job's own class."""
    groups: dict[PackSettings, list[PackModel]] = {}
    per_configuration: dict[int, tuple] = {}  # the variants of one configuration share hparams
    for variant in variants:
        key = id(variant.hparams)
        if key not in per_configuration:
            settings = pack_settings(variant.hparams, train, module)
            members = groups.setdefault(settings, [])
            per_configuration[key] = (variant.hparams, dict(variant.hparams), members)
        _, hparams, members = per_configuration[key]
        members.append(pack_model(variant, hparams))
    packs = []
    for settings, members in groups.items():
        size = pack_size(
            len(members), settings, models_per_pack, n_features, n_classes, n_workers, on_gpu,
            in_shape,
        )  # fmt: skip
        for start in range(0, len(members), size):
            chunk = tuple(members[start : start + size])
            packs.append(Pack(pack_id([m.model_id for m in chunk]), settings, chunk))
    return packs
