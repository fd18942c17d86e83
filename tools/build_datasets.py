"""Build the compact Parquet copies of rashomon's built-in datasets (one-off, for provenance).

Run from the repository root:

    python tools/build_datasets.py [--shared /work/shared/datasets] [--out jobs/data]

It writes ``breast_cancer``, ``wine`` and ``digits`` from scikit-learn's bundled copies (so no
network is needed), ``adult`` and ``compas`` from the CSV files in ``--shared``, and ``mnist1d``
with the reference generator of the ``mnist1d`` package (Greydanus & Kobak) at its default
arguments (``make_dataset(get_dataset_args())``: generated, never downloaded). scikit-learn and
mnist1d are needed only here: the ``jobs`` package reads the Parquet files and never imports
them.

Choices, so the files are small and a fresh clone needs nothing else:

* zstd compression at a high level; columns stored in the narrowest type that holds them exactly
  (signed integers ``int8``/``int16``/``int32``, ``float32`` for measured values, strings as
  Parquet dictionary columns, which pandas reads back as ``category``);
* feature names kept as the sources give them, sanitised to snake_case;
* the scikit-learn targets are the integer class labels in a column named ``target`` (the
  meaning of each label is in ``jobs/data/README.md``);
* Adult keeps its missing values as nulls; income labels are stripped of whitespace and of the
  trailing '.' that the UCI test file adds, so the two halves share two labels.

Every file is read back and compared with its source before the script reports success.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = Path("/work/shared/datasets")
DEFAULT_OUT = ROOT / "jobs" / "data"


def snake_case(name: str) -> str:
    """Column names users can type in YAML: lower case, runs of other characters become '_'."""
    out = re.sub(r"[^0-9a-zA-Z]+", "_", name.strip()).strip("_").lower()
    if not out:
        raise ValueError(f"column name {name!r} has no letters or digits")
    return out


def narrow(frame: pd.DataFrame) -> pd.DataFrame:
    """Store every column in the narrowest exact type, so the Parquet files stay small."""
    out = {}
    for col in frame.columns:
        s = frame[col]
        if pd.api.types.is_bool_dtype(s):
            out[col] = s
        elif pd.api.types.is_numeric_dtype(s):
            values = s.to_numpy(dtype=np.float64, na_value=np.nan)
            finite = values[~np.isnan(values)]
            if s.notna().all() and np.all(finite == np.round(finite)):
                # Integer-valued (even if stored as float): smallest signed int that holds it.
                out[col] = pd.to_numeric(s.astype(np.int64), downcast="integer")
            elif pd.api.types.is_float_dtype(s):
                f32 = values.astype(np.float32)
                # Measured values with at most ~6 significant digits survive float32 exactly
                # enough to print back the same decimals; check rather than assume.
                if not np.allclose(
                    f32.astype(np.float64), values, rtol=2e-7, atol=0, equal_nan=True
                ):
                    raise ValueError(f"column {col!r} loses precision in float32")
                out[col] = pd.Series(f32, index=s.index, name=col)
            else:
                out[col] = s
        else:
            # Strings (with their missing values kept) as a dictionary column.
            out[col] = s.astype("category")
    return pd.DataFrame(out, index=frame.index)


def from_sklearn(loader_name: str) -> pd.DataFrame:
    """A scikit-learn toy dataset as one frame: snake_case features plus the integer `target`."""
    import sklearn.datasets  # only this script needs scikit-learn

    bunch = getattr(sklearn.datasets, loader_name)(as_frame=True)
    data = bunch.data.rename(columns=snake_case)
    if data.columns.duplicated().any():
        raise ValueError(f"{loader_name}: snake_case made duplicate column names")
    frame = data.copy()
    frame["target"] = bunch.target.to_numpy()
    return narrow(frame)


def build_adult(shared: Path) -> pd.DataFrame:
    """UCI Adult (train + test joined); missing cells stay null; income labels normalised."""
    frame = pd.read_csv(shared / "adult.csv.gz")
    frame.columns = [snake_case(c) for c in frame.columns]
    for col in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[col]):
            frame[col] = frame[col].str.strip().replace("", np.nan)
    frame["income"] = frame["income"].str.rstrip(".")
    labels = set(frame["income"].dropna().unique())
    if labels != {"<=50K", ">50K"}:
        raise ValueError(f"adult: unexpected income labels {sorted(labels)}")
    return narrow(frame)


def build_compas(shared: Path) -> pd.DataFrame:
    """ProPublica COMPAS two-year recidivism, already filtered and anonymised in the source."""
    frame = pd.read_csv(shared / "compas.csv")
    frame.columns = [snake_case(c) for c in frame.columns]
    return narrow(frame)


def build_mnist1d() -> pd.DataFrame:
    """MNIST-1D at the generator's defaults: 4,000 train + 1,000 test signals of length 40.

    The generator's own train/test order is kept (rows 0-3,999 are its training split) and the
    signals are stored as float32 (``x_0`` ... ``x_39``), the precision every model trains in.
    """
    from mnist1d.data import get_dataset_args, make_dataset  # only this script needs mnist1d

    data = make_dataset(get_dataset_args())
    signals = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    labels = np.concatenate([data["y"], data["y_test"]]).astype(np.int8)
    if signals.shape != (5000, 40) or sorted(set(labels.tolist())) != list(range(10)):
        raise ValueError(f"mnist1d: unexpected shape {signals.shape} or labels")
    frame = pd.DataFrame(signals, columns=[f"x_{i}" for i in range(signals.shape[1])])
    frame["target"] = labels
    return frame


def write(frame: pd.DataFrame, path: Path) -> None:
    """Write with zstd and check the round trip, so a silent type change cannot slip in."""
    frame.to_parquet(path, engine="pyarrow", compression="zstd", compression_level=19, index=False)
    back = pd.read_parquet(path)
    if back.shape != frame.shape or list(back.columns) != list(frame.columns):
        raise RuntimeError(f"{path}: read back with a different shape or columns")
    for col in frame.columns:
        a, b = frame[col], back[col]
        if a.isna().sum() != b.isna().sum():
            raise RuntimeError(f"{path}: column {col!r} changed its missing values")
        present = a.notna().to_numpy()
        same = a.astype(object).to_numpy()[present] == b.astype(object).to_numpy()[present]
        if not np.all(same):
            raise RuntimeError(f"{path}: column {col!r} changed its values")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", nargs="*", help="build only these datasets")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    builders = {
        "breast_cancer": lambda: from_sklearn("load_breast_cancer"),
        "wine": lambda: from_sklearn("load_wine"),
        "digits": lambda: from_sklearn("load_digits"),
        "adult": lambda: build_adult(args.shared),
        "compas": lambda: build_compas(args.shared),
        "mnist1d": build_mnist1d,
    }
    for name in args.only or builders:
        frame = builders[name]()
        path = args.out / f"{name}.parquet"
        write(frame, path)
        print(
            f"{path}: {len(frame):,} rows, {frame.shape[1]} columns, "
            f"{frame.isna().sum().sum():,} missing, {path.stat().st_size:,} bytes"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
