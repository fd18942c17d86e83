"""Datasets: the built-ins, reading a user's file, the one fixed split, and preprocessing.

A population of thousands of models must all see exactly the same examples, split and encoding,
or their disagreements would measure our preprocessing instead of the learning problem. So
:func:`prepare_dataset` is a pure function of its inputs (file bytes, column choices, split
fractions and seed): the same job always yields bit-identical arrays, and the fingerprint changes
when the file does.

Sources
    ``dataset.source`` is a built-in name (``adult``, ``breast_cancer``, ``compas``, ``digits``,
    ``mnist1d``, ``wine``; case-sensitive, shipped as Parquet in ``jobs/data/``) or a path to a
    ``.csv``, ``.csv.gz``, ``.parquet`` or ``.npz`` file; a relative path is resolved against the
    job file's folder. An ``.npz`` file holds two arrays, ``x`` (n, …) and ``y`` (n,) (read without
    pickle); its labels are ``y``, so it takes no ``target``, ``groups`` or ``exclude``.
    CSV files are read with pandas' defaults: a header row, comma separated, UTF-8, and empty
    cells (or ``NA``, ``NaN``, ``null`` ...) are missing values. ``dataset.missing_values``
    lists more markers of a missing cell (``["?", "n/a"]``): in any column, a cell whose text,
    stripped of surrounding spaces, is one of them is missing, and a text column whose other cells
    are all numbers then reads as numbers (a number such as ``"-999"`` also marks numeric cells
    equal to it). ``example_id`` is the row's position in the file (0 … N−1).

Labels
    Any dtype. The classes are the distinct label values, sorted numerically when the column is
    numeric (0, 1 or 3, 5, 10) and as strings otherwise; label k is ``classes[k]``. Integer-valued
    float labels are shown without ".0". A row with a missing label is an error, never silently
    dropped, and so is a label column with a single class. A numeric label with more than
    :data:`MAX_NUMERIC_CLASSES` distinct values is refused as a regression target when some value
    is not an integer (a price, a score) or more than half of its values occur on one row only
    (those could never be validated or tested): rashomon trains classifiers.

Split
    One fixed split, stratified by label. With one ``numpy.random.default_rng(seed)``, the classes
    are visited in sorted order; each class's row indices are permuted, the first
    round(n_c·test) go to test, the next round(n_c·val) to val and the rest to train ("round"
    rounds halves up). The split depends only on the labels, the two fractions and the seed.
    Every split must be non-empty and train must hold every class, else the job is refused.

Features (all statistics fitted on the training split only, then applied to every row)
    * Every column except the target and ``dataset.exclude`` is a feature; ``dataset.groups``
      columns stay features unless they are also excluded (exclude them to keep a sensitive
      attribute out of the model while still analysing by it).
    * Columns pandas reads as numbers (including 0/1 and other integer columns with few values)
      are numeric: standardised with the train mean and population standard deviation (ddof 0).
      Infinite values are an error.
    * A numeric column with a missing value anywhere in the file gets its missing cells imputed
      with the train mean (0 after standardising) and a ``<col>__missing`` indicator column
      (1.0 where missing, 0.0 elsewhere, not standardised) right after it.
    * A text column that is numbers but for a few cells is refused rather than one-hot encoded
      into a column per number: at least 90% (:data:`MIN_NUMERIC_PERCENT`) of its non-missing cells
      parse as numbers, at least one does not, and the numbers take more than
      :data:`MAX_NUMERIC_CLASSES` distinct values. The message names the column, counts the odd
      cells and shows a few; codes with few values (``1, 2, 3, A``) stay categorical.
    * String, object, category and bool columns are categorical: one-hot with one column
      ``<col>=<value>`` per value seen in train, sorted as strings; a missing value is its own
      value ``missing`` (a literal string "missing" shares it). A value never seen in train
      encodes as all zeros. A column with more than 1,000 distinct train values (an id or free
      text) is refused: exclude it.
    * Any encoded column that is constant on the training split is dropped (a numeric column with
      one train value, a categorical column with one train category, an indicator with no - or
      only - missing train cells). Such a column carries no signal to learn from, and the weight
      it would get stays at its random initial value, which would inject init-seed noise into
      val/test predictions and inflate the measured multiplicity.
    * Encoded columns keep the file's column order. The result is a C-contiguous float32 array.

Shaped data (signals, images)
    ``dataset.shape`` gives each example's features as (channels, length) or (channels, height,
    width); ``digits`` is ``[1, 8, 8]`` and ``mnist1d`` ``[1, 40]`` unless the job says otherwise,
    and an ``.npz`` file's ``x`` of shape (n, C, L) or (n, C, H, W) gives its own. The feature
    columns (file order, or ``x`` in C order) must then be numbers, complete and finite, as many
    as the shape holds; nothing is one-hot encoded or dropped. Each channel is standardised with
    one mean and one standard deviation (ddof 0) over the training examples and all positions (a
    channel constant on train is only centred), so the convolutional family sees images, and the
    dense families see the same values flattened. An ``.npz`` ``x`` of shape (n, d) without
    ``dataset.shape`` is a table of numeric columns ``x_0 … x_{d−1}``, encoded as above.

Groups
    ``dataset.groups`` columns are also returned raw as strings (missing → ``"missing"``), for
    per-subgroup multiplicity.

Fingerprint
    sha256 of the source file's bytes followed by :data:`PREPROCESSING_VERSION` (tables) or
    :data:`SHAPED_PREPROCESSING_VERSION` and the shape (shaped data), so a changed file or a
    changed preprocessing is detected; the column choices and split parameters are part of the
    job and are hashed with it.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rashomon.jobs._errors import UserError
from rashomon.jobs._text import printable, show

#: Bumped whenever the preprocessing changes the arrays it produces, so stale caches are noticed.
PREPROCESSING_VERSION = "rashomon-preprocessing-1"
#: The same for shaped data (per-channel standardisation); tables keep their fingerprints.
SHAPED_PREPROCESSING_VERSION = "rashomon-preprocessing-shaped-1"

#: Where the built-in Parquet files live (shipped as package data).
DATA_DIR = Path(__file__).resolve().parent / "data"

#: Split names in the order of their codes in :attr:`PreparedDataset.split`.
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: A categorical column with more distinct train values than this is almost surely an id.
MAX_CATEGORIES = 1000

#: More distinct numbers than this are a quantity, not class labels or category codes: such a
#: label may be a regression target, and such a text column is numbers with junk (see above).
MAX_NUMERIC_CLASSES = 20

#: Percentage of a text column's non-missing cells that must be numbers for the rest to be junk.
MIN_NUMERIC_PERCENT = 90

#: Value that stands for a missing cell in categorical features and in groups.
MISSING = "missing"

_EXTENSIONS = (".csv.gz", ".csv", ".parquet", ".npz")
_KINDS = ".csv, .csv.gz, .parquet or .npz"


@dataclass(frozen=True)
class _Builtin:
    target: str
    groups: tuple[str, ...]
    description: str
    shape: tuple[int, ...] | None = None


_BUILTINS: dict[str, _Builtin] = {
    "adult": _Builtin(
        "income",
        ("sex", "race"),
        "UCI Adult / Census Income (train+test): income >50K; has missing values",
    ),
    "breast_cancer": _Builtin(
        "target",
        (),
        "UCI Breast Cancer Wisconsin (Diagnostic): 0 = malignant, 1 = benign",
    ),
    "compas": _Builtin(
        "two_year_recid",
        ("race", "sex", "age_cat"),
        "ProPublica COMPAS: two-year recidivism, filtered as in ProPublica's analysis",
    ),
    "digits": _Builtin(
        "target",
        (),
        "UCI optical handwritten digits: 8x8 images, digit 0-9; shape [1, 8, 8]",
        (1, 8, 8),
    ),
    "mnist1d": _Builtin(
        "target",
        (),
        "MNIST-1D (Greydanus & Kobak 2024): signals of length 40, digit 0-9; shape [1, 40]",
        (1, 40),
    ),
    "wine": _Builtin(
        "target",
        (),
        "UCI Wine: cultivar (0, 1, 2) from 13 chemical measurements",
    ),
}


def builtin_target(name: str) -> str | None:
    """The target column of a built-in dataset, or None if ``name`` is no built-in."""
    builtin = _BUILTINS.get(name)
    return builtin.target if builtin else None


def builtin_shape(name: str) -> tuple[int, ...] | None:
    """The shape of a built-in dataset's examples, or None (a table, or no built-in)."""
    builtin = _BUILTINS.get(name)
    return builtin.shape if builtin else None


@dataclass(frozen=True)
class DatasetInfo:
    """One built-in dataset as ``rashomon datasets`` lists it.

    ``features`` counts the raw feature columns of the file (everything but the target), before
    one-hot encoding; ``groups`` are the sensitive attributes suggested for ``dataset.groups``.
    """

    name: str
    rows: int
    features: int
    classes: int
    target: str
    groups: tuple[str, ...]
    description: str
    shape: tuple[int, ...] | None = None


def builtin_datasets() -> list[DatasetInfo]:
    """The built-in datasets, by name, with sizes read from the shipped files.

    Sizes come from the files rather than from constants so the listing can never disagree with
    what a job would train on.
    """
    import pyarrow.parquet as pq

    infos = []
    for name, spec in _BUILTINS.items():
        path = _builtin_path(name)
        meta = pq.ParquetFile(path).metadata
        labels = pd.read_parquet(path, columns=[spec.target])[spec.target]
        infos.append(
            DatasetInfo(
                name=name,
                rows=meta.num_rows,
                features=meta.num_columns - 1,
                classes=int(labels.nunique()),
                target=spec.target,
                groups=spec.groups,
                description=spec.description,
                shape=spec.shape,
            )
        )
    return infos


@dataclass(frozen=True, eq=False, repr=False)
class PreparedDataset:
    """A dataset ready for training: encoded features, labels and the fixed split.

    The arrays are shared by every model of a population (and by Ray's object store), so treat
    them as read-only.
    """

    name: str
    features: np.ndarray  # float32 (N, d), C-contiguous, encoded and standardised
    labels: np.ndarray  # int64 (N,), 0 … C−1
    split: np.ndarray  # int8 (N,): 0 train, 1 val, 2 test
    example_ids: np.ndarray  # int64 (N,): row position in the source file
    feature_names: tuple[str, ...]
    classes: tuple[str, ...]  # label k is classes[k]
    groups: pd.DataFrame  # raw `groups` columns as strings, index 0 … N−1
    fingerprint: str  # sha256 of the file bytes + the preprocessing version (and shape)
    shape: tuple[int, ...] | None = None  # one example's (C, L) or (C, H, W); None: a table

    def indices(self, split: str) -> np.ndarray:
        """Sorted int64 row indices of one split ("train", "val" or "test")."""
        if split not in SPLITS:
            raise UserError(f"split {split!r} is not one of {', '.join(SPLITS)}; use one of those")
        return np.flatnonzero(self.split == SPLITS.index(split)).astype(np.int64)

    @property
    def n_classes(self) -> int:
        """Number of classes C (the width of every model's output)."""
        return len(self.classes)

    @property
    def n_features(self) -> int:
        """Number of encoded feature columns d (the width of every model's input)."""
        return int(self.features.shape[1])

    @property
    def example_shape(self) -> tuple[int, ...]:
        """What one example is to a model: its shape, or (features,) for a table."""
        return self.shape or (self.n_features,)

    @property
    def n_examples(self) -> int:
        """Number of rows N over all splits."""
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        counts = np.bincount(self.split, minlength=len(SPLITS))
        sizes = ", ".join(f"{s}={int(c)}" for s, c in zip(SPLITS, counts, strict=True))
        return (
            f"PreparedDataset(name={self.name!r}, examples={self.n_examples}, "
            f"features={self.n_features}, shape={list(self.example_shape)}, "
            f"classes={self.n_classes}, {sizes}, "
            f"groups={list(self.groups.columns)}, fingerprint={self.fingerprint[:12]}…)"
        )


def prepare_dataset(
    source: str,
    target: str | None,
    groups: Sequence[str],
    exclude: Sequence[str],
    val: float,
    test: float,
    seed: int,
    base_dir: Path | None = None,
    missing_values: Sequence[str] = (),
    shape: Sequence[int] | None = None,
) -> PreparedDataset:
    """Load ``source``, split it and encode it, exactly as the module docstring describes.

    Raises :class:`UserError` with the YAML key, file or column and the fix for every mistake a
    user can make (unknown built-in, missing file or column, unreadable file, impossible split).
    """
    _check_split_parameters(val, test, seed)
    name, path, target, where = _resolve_source(source, target, base_dir)

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"dataset.source: cannot read {where}: {exc.strerror}") from None
    shape = tuple(shape) if shape is not None else builtin_shape(source)
    if path.name.lower().endswith(".npz"):
        frame, target, shape = _npz_frame(raw, shape, groups, exclude, missing_values, where)
    else:
        frame = _mark_missing(_read_table(raw, path, where), missing_values)
    hasher = hashlib.sha256(raw)
    version = PREPROCESSING_VERSION if shape is None else f"{SHAPED_PREPROCESSING_VERSION}{shape}"
    hasher.update(b"\0" + version.encode())
    fingerprint = hasher.hexdigest()

    columns = list(frame.columns)
    if target not in columns:
        raise UserError(
            f"dataset.target: column {target!r} is not in {where}{_hint(target, columns)}; "
            "set dataset.target to the label column"
        )
    group_columns = list(dict.fromkeys(groups))
    excluded = set(exclude)
    for key, names in (("dataset.groups", group_columns), ("dataset.exclude", sorted(excluded))):
        for col in names:
            if col not in columns:
                raise UserError(
                    f"{key}: column {col!r} is not in {where}{_hint(col, columns)}; "
                    f"remove it from {key} or fix its name"
                )
    if target in group_columns:
        raise UserError(
            f"dataset.groups: {target!r} is the target column of {where}; "
            "remove it from dataset.groups (groups are attributes of the examples, not labels)"
        )

    labels, classes = _encode_labels(frame[target], target, where)
    split = _make_split(labels, classes, val, test, seed, where)

    feature_columns = [c for c in columns if c != target and c not in excluded]
    if not feature_columns:
        raise UserError(
            f"dataset.exclude: no feature columns of {where} are left besides the target "
            f"{target!r}; exclude fewer columns"
        )
    if shape is None:
        features, feature_names = _encode_features(frame, feature_columns, split == 0, where)
    else:
        features = _shaped_features(frame, feature_columns, shape, split == 0, where)
        feature_names = tuple(feature_columns)

    group_frame = pd.DataFrame(
        {g: _as_strings(frame[g]) for g in group_columns}, index=pd.RangeIndex(len(frame))
    )
    return PreparedDataset(
        name=name,
        features=features,
        labels=labels,
        split=split,
        example_ids=np.arange(len(frame), dtype=np.int64),
        feature_names=feature_names,
        classes=classes,
        groups=group_frame,
        fingerprint=fingerprint,
        shape=shape,
    )


# --- sources -------------------------------------------------------------------------------------


def _builtin_path(name: str) -> Path:
    return DATA_DIR / f"{name}.parquet"


def _resolve_source(
    source: str, target: str | None, base_dir: Path | None
) -> tuple[str, Path, str, str]:
    """(name, file, target column, description for messages) of a built-in name or a path."""
    if not isinstance(source, str) or not source.strip():
        raise UserError(
            f"dataset.source: give a built-in name ({', '.join(_BUILTINS)}) or a path to a "
            f"{_KINDS} file"
        )
    if source in _BUILTINS:
        spec = _BUILTINS[source]
        if target is not None and target != spec.target:
            raise UserError(
                f"dataset.target: the built-in dataset {source!r} predicts {spec.target!r}, "
                f"not {target!r}; remove dataset.target or set it to {spec.target!r}"
            )
        path = _builtin_path(source)
        if not path.is_file():
            raise UserError(
                f"dataset.source: the built-in file {path} is missing from this installation; "
                "reinstall rashomon or run tools/build_datasets.py"
            )
        return source, path, spec.target, f"built-in dataset {source!r}"

    looks_like_path = any(ch in source for ch in "/\\~") or "." in Path(source).name
    if not looks_like_path:
        close = [n for n in _BUILTINS if n.lower() == source.lower()]
        close += [n for n in difflib.get_close_matches(source.lower(), _BUILTINS) if n not in close]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(
            f"dataset.source: {source!r} is not a built-in dataset{hint}; use one of "
            f"{', '.join(_BUILTINS)}, or a path to a {_KINDS} file"
        )

    path = Path(source).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    lower = path.name.lower()
    if not lower.endswith(_EXTENSIONS):
        raise UserError(
            f"dataset.source: {source!r} has an unsupported extension; convert it to {_KINDS}"
        )
    where = printable(str(path))
    try:
        is_file, is_dir = path.is_file(), path.is_dir()
    except OSError as exc:  # a name too long for the file system, a loop of links ...
        raise UserError(f"dataset.source: cannot use {where}: {exc.strerror}") from None
    if not is_file:
        what = "is a directory, not a file" if is_dir else "does not exist"
        shown = where if path.is_absolute() else f"{where} ({printable(str(path.absolute()))})"
        raise UserError(
            f"dataset.source: {shown} {what}; fix the path (relative paths are resolved "
            "against the job file's folder)"
        )
    if lower.endswith(".npz"):
        if target is not None:
            raise UserError(
                f"dataset.target: the labels of {where} are its array y; remove dataset.target"
            )
    elif target is None:
        raise UserError(
            f"dataset.target: required when dataset.source is a file ({where}); "
            "set it to the name of the label column"
        )
    name = next(path.name[: -len(ext)] for ext in _EXTENSIONS if lower.endswith(ext))
    return name, path, target or "y", where


def _npz_frame(
    raw: bytes,
    shape: tuple[int, ...] | None,
    groups: Sequence[str],
    exclude: Sequence[str],
    missing_values: Sequence[str],
    where: str,
) -> tuple[pd.DataFrame, str, tuple[int, ...] | None]:
    """An .npz file's x and y as a frame (columns ``x_0 …``, then ``y``), and its shape: the
    given one, or x's own for an x of three or four dimensions."""
    named = {"groups": groups, "exclude": exclude, "missing_values": missing_values}
    for key, given in named.items():
        if given:
            raise UserError(
                f"dataset.{key}: {where} is arrays, not named columns; remove dataset.{key}"
            )
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as arrays:
            missing = [k for k in ("x", "y") if k not in arrays.files]
            if missing:
                raise UserError(
                    f"dataset.source: {where} has no array {missing[0]!r} (it has "
                    f"{', '.join(map(repr, arrays.files)) or 'none'}); save it with "
                    "np.savez(path, x=features, y=labels)"
                )
            x, y = arrays["x"], arrays["y"]
    except UserError:
        raise
    except Exception as exc:  # not a zip, a pickled object array, a damaged member ...
        detail = printable(" ".join(str(exc).split())[:200])
        raise UserError(
            f"dataset.source: cannot read {where} as .npz ({type(exc).__name__}: {detail}); "
            "save numeric arrays with np.savez(path, x=features, y=labels)"
        ) from None
    if y.ndim != 1 or x.ndim < 2 or len(x) != len(y) or not len(y):
        raise UserError(
            f"dataset.source: {where} has x of shape {x.shape} and y of shape {y.shape}; "
            "expected x (n, ...) and y (n,) for the same n > 0"
        )
    if x.dtype.kind not in "biuf":
        raise UserError(
            f"dataset.source: x of {where} holds {x.dtype} values; it must hold numbers"
        )
    if shape is None and x.ndim > 2:
        shape = tuple(int(n) for n in x.shape[1:])
    flat = x.reshape(len(x), -1)
    frame = pd.DataFrame(flat, columns=[f"x_{i}" for i in range(flat.shape[1])])
    frame["y"] = y
    return frame, "y", shape


def _shaped_features(
    frame: pd.DataFrame,
    columns: Sequence[str],
    shape: tuple[int, ...],
    train: np.ndarray,
    where: str,
) -> np.ndarray:
    """The feature columns as examples of ``shape``, each channel standardised on train."""
    size = math.prod(shape)
    if len(columns) != size:
        raise UserError(
            f"dataset.shape: {list(shape)} holds {size:,} values per example, but {where} has "
            f"{len(columns):,} feature columns; fix dataset.shape (or dataset.exclude)"
        )
    for col in columns:
        series = frame[col]
        if not pd.api.types.is_numeric_dtype(series.dtype) or isinstance(
            series.dtype, pd.CategoricalDtype
        ):
            raise UserError(
                f"dataset.shape: column {col!r} of {where} is not numeric; shaped data (a signal "
                "or an image) must be numbers: convert it, or list it in dataset.exclude"
            )
    values = frame[list(columns)].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise UserError(
            f"dataset.source: {where} has {int(bad.sum()):,} missing or infinite values in its "
            f"shaped features (first: row {row}, column {columns[col]!r}); shaped data must be "
            "complete: fill them in or remove those rows"
        )
    channels = values.reshape(len(values), shape[0], -1)
    seen = channels[train]
    mean = seen.mean(axis=(0, 2), keepdims=True)
    std = seen.std(axis=(0, 2), keepdims=True)
    standardised = (channels - mean) / np.where(std > 0, std, 1.0)
    return np.ascontiguousarray(standardised.reshape(len(values), -1), dtype=np.float32)


def _read_table(raw: bytes, path: Path, where: str) -> pd.DataFrame:
    """Parse the file's bytes (the same bytes that were fingerprinted) into a DataFrame."""
    lower = path.name.lower()
    kind = "Parquet" if lower.endswith(".parquet") else "CSV"
    try:
        if kind == "Parquet":
            frame = pd.read_parquet(io.BytesIO(raw))
        else:
            compression = "gzip" if lower.endswith(".gz") else None
            frame = pd.read_csv(io.BytesIO(raw), compression=compression, low_memory=False)
    except Exception as exc:  # any parser failure is the file's fault, not ours
        detail = printable(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
        raise UserError(
            f"dataset.source: cannot read {where} as {kind} ({type(exc).__name__}: {detail}); "
            f"check that it is a valid {kind} file"
            + (" with a header row, comma separated and UTF-8" if kind == "CSV" else "")
        ) from None
    frame.columns = [str(c) for c in frame.columns]
    duplicated = sorted(set(frame.columns[frame.columns.duplicated()]))
    if duplicated:
        raise UserError(
            f"dataset.source: {where} has duplicate column names {duplicated}; rename them"
        )
    if len(frame) == 0:
        raise UserError(f"dataset.source: {where} has no rows; give a file with data rows")
    return frame.reset_index(drop=True)


def _mark_missing(frame: pd.DataFrame, markers: Sequence[str]) -> pd.DataFrame:
    """Cells written as one of `markers` become missing (``dataset.missing_values``)."""
    texts = {str(marker).strip() for marker in markers}
    if not texts:
        return frame
    numbers = pd.to_numeric(pd.Series(sorted(texts), dtype=object), errors="coerce").dropna()
    for col in frame.columns:
        series = frame[col]
        if pd.api.types.is_bool_dtype(series.dtype):
            continue
        if pd.api.types.is_numeric_dtype(series.dtype):
            missing = series.isin(numbers.to_numpy())
            if missing.any():
                frame[col] = series.mask(missing)
            continue
        missing = series.notna() & series.astype(str).str.strip().isin(texts)
        if missing.any():
            series = series.astype(object).mask(missing)
            as_numbers = pd.to_numeric(series, errors="coerce")
            numbers_but_markers = as_numbers.notna().sum() == series.notna().sum()
            frame[col] = as_numbers if numbers_but_markers else series
    return frame


def _hint(name: str, columns: Sequence[str]) -> str:
    """'; did you mean …? Columns: …' so a typo is fixed without opening the file."""
    by_lower = {c.lower(): c for c in columns}
    close = [by_lower[name.lower()]] if name.lower() in by_lower else []
    close += [c for c in difflib.get_close_matches(name, columns, n=3) if c not in close]
    shown = ", ".join(printable(c) for c in columns[:12])
    shown += f", … ({len(columns)} in all)" if len(columns) > 12 else ""
    did_you_mean = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{did_you_mean}; its columns are: {shown}"


# --- labels and split ----------------------------------------------------------------------------


def _encode_labels(
    series: pd.Series, column: str, where: str
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer labels 0 … C−1 and the sorted original values as strings."""
    n_missing = int(series.isna().sum())
    if n_missing:
        raise UserError(
            f"dataset.target: {n_missing} rows of {where} have no value in the target column "
            f"{column!r}; fill them in or remove those rows"
        )
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        values = series.to_numpy(dtype=bool)
    elif pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        values = series.to_numpy(dtype=np.float64)
        integral = bool(np.all(values == np.round(values)) and np.all(np.abs(values) < 2**53))
        _refuse_regression_target(values, integral, column, where)
        if integral:
            values = values.astype(np.int64)
    else:
        codes, names = _factorize_strings(series)
        present = np.bincount(codes, minlength=names.size) > 0  # drop the unused "missing"
        remap = np.cumsum(present) - 1
        return _checked_labels(remap[codes], tuple(str(v) for v in names[present]), column, where)
    uniques, codes = np.unique(values, return_inverse=True)
    classes = tuple(str(v.item()) for v in uniques)
    return _checked_labels(codes.reshape(-1), classes, column, where)


def _refuse_regression_target(values: np.ndarray, integral: bool, column: str, where: str) -> None:
    """A float price or an integer count as the label would give a class per value: say so."""
    uniques, counts = np.unique(values, return_counts=True)
    if uniques.size <= MAX_NUMERIC_CLASSES:
        return
    single = int(np.count_nonzero(counts == 1))
    if integral and 2 * single <= uniques.size:
        return
    why = "not all integers" if not integral else f"{single:,} of them on one row only"
    examples = ", ".join(show(v.item()) for v in pd.unique(values)[:3])
    raise UserError(
        f"dataset.target: column {column!r} of {where} looks like a regression target "
        f"({uniques.size:,} distinct values, {why}; e.g. {examples}); rashomon trains "
        "classifiers: choose a column of class labels, or bin this one into classes"
    )


def _checked_labels(
    codes: np.ndarray, classes: tuple[str, ...], column: str, where: str
) -> tuple[np.ndarray, tuple[str, ...]]:
    if len(classes) < 2:
        raise UserError(
            f"dataset.target: column {column!r} of {where} has only one class "
            f"({classes[0]!r}); choose a label column with at least two classes"
        )
    return codes.astype(np.int64), classes


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _check_split_parameters(val: float, test: float, seed: int) -> None:
    for key, frac in (("val", val), ("test", test)):
        if (
            isinstance(frac, bool)
            or not isinstance(frac, numbers.Real)
            or not math.isfinite(frac)
            or not 0 < frac < 1
        ):
            raise UserError(
                f"dataset.split.{key}: {frac!r} is not a fraction between 0 and 1 (exclusive); "
                "use e.g. 0.2"
            )
    if val + test >= 1:
        raise UserError(
            f"dataset.split: val={val} + test={test} leaves nothing for training; "
            "make val + test smaller than 1"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"dataset.split.seed: {seed!r} is not a non-negative integer; use e.g. 0")


def _make_split(
    labels: np.ndarray, classes: tuple[str, ...], val: float, test: float, seed: int, where: str
) -> np.ndarray:
    """The one stratified split: per class (sorted), permute, take test, then val, rest train."""
    rng = np.random.default_rng(seed)
    split = np.zeros(labels.shape[0], dtype=np.int8)
    for k, name in enumerate(classes):  # a loop over classes, not rows
        rows = rng.permutation(np.flatnonzero(labels == k))
        n_test = _round_half_up(rows.size * test)
        n_val = _round_half_up(rows.size * val)
        if n_test + n_val >= rows.size:
            raise UserError(
                f"dataset.split: class {name!r} of {where} has only {rows.size} rows, and "
                f"val={val}, test={test} leave none of them for training; add rows of that "
                "class or lower val/test"
            )
        split[rows[:n_test]] = 2
        split[rows[n_test : n_test + n_val]] = 1
    counts = np.bincount(split, minlength=3)
    for code, key in ((1, "val"), (2, "test")):
        if counts[code] == 0:
            raise UserError(
                f"dataset.split.{key}: {key}={val if code == 1 else test} gives an empty "
                f"{key} split for the {labels.size} rows of {where}; raise it or add rows"
            )
    return split


# --- features ------------------------------------------------------------------------------------


def _factorize_strings(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes, names): every row's value as a string, factorised; names sorted, missing → "missing".

    Values are hashed once (pandas.factorize) and only the few distinct values are turned into
    strings and sorted, which keeps a 50,000-row column well under a millisecond per step.
    Integral floats read without ".0" (a group ``1.0`` is "1"), and values that print the same
    share one name. Used for categorical features, groups and string labels alike, so a value
    reads the same everywhere.
    """
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    distinct = pd.Series(uniques)
    dtype = distinct.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        dtype = dtype.categories.dtype
        distinct = distinct.astype(dtype)
    if pd.api.types.is_float_dtype(dtype):
        floats = distinct.to_numpy(dtype=np.float64)
        if np.all(floats == np.round(floats)) and np.all(np.abs(floats) < 2**53):
            distinct = pd.Series(floats.astype(np.int64))
    strings = np.append(distinct.astype(str).to_numpy(dtype=object), MISSING)
    names, inverse = np.unique(strings, return_inverse=True)
    inverse = inverse.reshape(-1)
    codes = np.where(codes < 0, strings.size - 1, codes)
    return inverse[codes].astype(np.int64), names


def _as_strings(series: pd.Series) -> np.ndarray:
    """The column's values as Python strings (object array), missing → "missing"."""
    codes, names = _factorize_strings(series)
    return names[codes]


def _column_kind(series: pd.Series, column: str, where: str) -> str:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return "categorical"
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        _refuse_numbers_with_junk(series, column, where)
        return "categorical"
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return "numeric"
    raise UserError(
        f"dataset.exclude: column {column!r} of {where} has type {dtype}, which cannot be "
        "encoded; convert it to numbers or strings, or list it in dataset.exclude"
    )


def _refuse_numbers_with_junk(series: pd.Series, column: str, where: str) -> None:
    """A column of numbers with a few '?' cells reads as text; one-hot encoding it would give a
    column per number. Judged on the distinct values, so a 50,000-row column costs little."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    if len(uniques) <= MAX_NUMERIC_CLASSES:
        return
    numbers = pd.to_numeric(pd.Series(uniques, dtype=object), errors="coerce").to_numpy(float)
    numeric = np.isfinite(numbers)
    if np.unique(numbers[numeric]).size <= MAX_NUMERIC_CLASSES:
        return
    cells = np.bincount(codes[codes >= 0], minlength=len(uniques))
    odd = int(cells[~numeric].sum())
    if odd == 0 or 100 * (cells.sum() - odd) < MIN_NUMERIC_PERCENT * cells.sum():
        return
    by_count = np.flatnonzero(~numeric)[np.argsort(-cells[~numeric], kind="stable")]
    shown = ", ".join(show(uniques[i]) for i in by_count[:3]) + (
        ", ..." if by_count.size > 3 else ""
    )
    raise UserError(
        f"dataset.source: column {column!r} of {where} holds numbers but {odd:,} of its "
        f"{int(cells.sum()):,} cells are not numbers ({shown}); clean them, list them in "
        f"dataset.missing_values to read them as missing, or list {column!r} in dataset.exclude"
    )


def _encode_features(
    frame: pd.DataFrame, columns: Sequence[str], train: np.ndarray, where: str
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Encode the feature columns with train-only statistics; drop columns constant on train."""
    n = len(frame)
    blocks: list[np.ndarray] = []
    names: list[str] = []
    for col in columns:  # a loop over columns; every step inside is vectorised over rows
        series = frame[col]
        if _column_kind(series, col, where) == "numeric":
            x = series.to_numpy(dtype=np.float64, na_value=np.nan)
            missing = np.isnan(x)
            if np.isinf(x).any():
                raise UserError(
                    f"dataset.source: column {col!r} of {where} has infinite values; "
                    "replace them with numbers or empty cells, or list it in dataset.exclude"
                )
            seen = x[train & ~missing]
            if seen.size and seen.min() != seen.max():
                z = (x - seen.mean()) / seen.std()
                z[missing] = 0.0  # imputed with the train mean
                blocks.append(z.astype(np.float32)[:, None])
                names.append(col)
            if missing.any():
                on_train = missing[train]
                if on_train.any() and not on_train.all():
                    blocks.append(missing.astype(np.float32)[:, None])
                    names.append(f"{col}__missing")
        else:
            codes, names_all = _factorize_strings(series)
            seen = np.bincount(codes[train], minlength=names_all.size) > 0
            categories = names_all[seen]  # sorted, because names_all is
            if categories.size > MAX_CATEGORIES:
                raise UserError(
                    f"dataset.exclude: column {col!r} of {where} has {categories.size:,} distinct "
                    f"values on the training split (more than {MAX_CATEGORIES:,}: an id or free "
                    "text?); list it in dataset.exclude or convert it to numbers"
                )
            if categories.size < 2:
                continue  # one train category: the one-hot column would be constant
            column_of = np.full(names_all.size, -1, dtype=np.int64)
            column_of[seen] = np.arange(categories.size)
            cols = column_of[codes]
            one_hot = np.zeros((n, categories.size), dtype=np.float32)
            rows = np.flatnonzero(cols >= 0)  # categories unseen in train stay all-zero
            one_hot[rows, cols[rows]] = 1.0
            blocks.append(one_hot)
            names.extend(f"{col}={c}" for c in categories)
    if not blocks:
        raise UserError(
            f"dataset.exclude: every feature column of {where} is constant on the training "
            "split, so there is nothing to learn from; include other columns"
        )
    features = np.ascontiguousarray(np.concatenate(blocks, axis=1), dtype=np.float32)
    return features, tuple(names)


def prepare_job_dataset(job) -> PreparedDataset:
    """The prepared dataset of a job's ``dataset:`` section."""
    spec = job.dataset
    return prepare_dataset(
        source=spec.source,
        target=spec.target,
        groups=spec.groups,
        exclude=spec.exclude,
        val=spec.split.val,
        test=spec.split.test,
        seed=spec.split.seed,
        base_dir=job.base_dir,
        missing_values=spec.missing_values,
        shape=spec.shape,
    )
