"""What population to train: the job spec, its datasets and its expansion into model variants."""

from __future__ import annotations

from rashomon.jobs._datasets import (
    SPLITS,
    DatasetInfo,
    PreparedDataset,
    builtin_datasets,
    prepare_dataset,
    prepare_job_dataset,
)
from rashomon.jobs._errors import UserError
from rashomon.jobs._expand import (
    ModelVariant,
    cohort,
    count_models,
    expand,
    iter_variants,
    model_id,
)
from rashomon.jobs._redact import redact
from rashomon.jobs._spec import (
    FLATNESS_COLUMNS,
    HYPERPARAMETERS,
    FlatnessConfig,
    Job,
    column_value,
    load_job,
    load_job_text,
    parse_job,
)

__all__ = [
    "FLATNESS_COLUMNS",
    "HYPERPARAMETERS",
    "SPLITS",
    "DatasetInfo",
    "FlatnessConfig",
    "Job",
    "ModelVariant",
    "PreparedDataset",
    "UserError",
    "builtin_datasets",
    "cohort",
    "column_value",
    "count_models",
    "expand",
    "iter_variants",
    "load_job",
    "load_job_text",
    "model_id",
    "parse_job",
    "prepare_dataset",
    "prepare_job_dataset",
    "redact",
]
