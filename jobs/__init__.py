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
    sample_variants,
)
from rashomon.jobs._load import load_job, load_job_text, parse_job
from rashomon.jobs._modules import ModuleRef, user_frame
from rashomon.jobs._sections import (
    FLATNESS_COLUMNS,
    HISTORY_COLUMNS,
    SIMPLICITY_COLUMNS,
    TRACK_ITERATIONS,
    FlatnessConfig,
    Job,
)
from rashomon.jobs._space import HYPERPARAMETERS, column_value
from rashomon.jobs._text import printable, redact

__all__ = [
    "FLATNESS_COLUMNS",
    "HISTORY_COLUMNS",
    "HYPERPARAMETERS",
    "SIMPLICITY_COLUMNS",
    "SPLITS",
    "TRACK_ITERATIONS",
    "DatasetInfo",
    "FlatnessConfig",
    "Job",
    "ModelVariant",
    "ModuleRef",
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
    "printable",
    "redact",
    "sample_variants",
    "user_frame",
]
