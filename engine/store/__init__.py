"""The results folder: its layout, the files of each pack, and everything read back from them.

One object, `ResultsDir`, owns the folder: file naming, the identity of the job it holds, the
tables' schemas, the weights format, the checks every file must pass, which models are finished,
and the lock of its one writer. Writers (the driver and the trainer actors) and readers
(``status``, ``analyze``, ``flatness``) go through it alone.
"""

from rashomon.engine.store._folder import (
    PACK_FILES,
    QUARANTINE,
    Progress,
    ResultsDir,
    Scan,
    parquet_bytes,
)
from rashomon.engine.store._location import display_location, list_files, resolve_location
from rashomon.engine.store._lock import FolderLock, Owner
from rashomon.engine.store._tables import (
    HISTORY_SCHEMA,
    METRICS,
    MODELS_SCHEMA,
    history_table,
    models_table,
    predictions_schema,
    predictions_table,
)
from rashomon.engine.store._verify import Damaged, Layout

__all__ = [
    "HISTORY_SCHEMA",
    "METRICS",
    "MODELS_SCHEMA",
    "PACK_FILES",
    "QUARANTINE",
    "Damaged",
    "FolderLock",
    "Layout",
    "Owner",
    "Progress",
    "ResultsDir",
    "Scan",
    "display_location",
    "history_table",
    "list_files",
    "models_table",
    "parquet_bytes",
    "predictions_schema",
    "predictions_table",
    "resolve_location",
]
