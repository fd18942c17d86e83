"""What population to train: the job spec, its datasets and its expansion into model variants."""

from __future__ import annotations

from jobs._datasets import (
    DatasetInfo,
    PreparedDataset,
    builtin_datasets,
    prepare_dataset,
    prepare_job_dataset,
)
from jobs._errors import UserError
from jobs._expand import ModelVariant, count_models, expand, iter_variants, model_id
from jobs._spec import (
    FLATNESS_COLUMNS,
    HYPERPARAMETERS,
    FlatnessConfig,
    Job,
    load_job,
    load_job_text,
    parse_job,
)

__all__ = [
    "FLATNESS_COLUMNS",
    "HYPERPARAMETERS",
    "DatasetInfo",
    "FlatnessConfig",
    "Job",
    "ModelVariant",
    "PreparedDataset",
    "UserError",
    "builtin_datasets",
    "count_models",
    "expand",
    "iter_variants",
    "load_job",
    "load_job_text",
    "model_id",
    "parse_job",
    "prepare_dataset",
    "prepare_job_dataset",
]
