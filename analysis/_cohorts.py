"""``analyze --by COLUMN``: each value of a models column as a population of its own, side by side.

Each cohort (the models with one value of the column) gets its own Rashomon set, chosen within the
cohort, and every measure, subgroup and flatness summary of `analyze`. Multiplicity grows with the
number of models in a set — ambiguity and discrepancy can only rise when a model is added — so
cohorts whose sets differ in size are compared at an equal size m, the largest that every cohort's
set reaches: each cohort's measures over random draws of m models from its set (its baseline
always in, the others without replacement), with the central 95% of the draws as a band.

A cohort is named by its value as the models table holds it: text as it is, integers as integers,
floats in their shortest round-trip form (``0.1``, ``1e-05``), a null as ``<missing>``. A cohort
without any ok model (every model diverged, say at a large learning rate) has no Rashomon set: it
is listed apart, with its models' statuses.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from rashomon.analysis._curves import COUNT_CURVE_MEASURES, default_sizes, model_count_curve
from rashomon.analysis._legend import MEASURE_LEGEND
from rashomon.analysis._multiplicity import MEASURES
from rashomon.analysis._population import (
    DEFAULT_SPLIT,
    MEMORY_BUDGET,
    MISSING,
    Analysis,
    Curves,
    analyze_populations,
    read_sets,
)
from rashomon.analysis._rashomon_set import DEFAULT_EPSILON, DEFAULT_METRIC
from rashomon.analysis._results import Results, open_results
from rashomon.engine.store import MODELS_SCHEMA
from rashomon.jobs import UserError

MAX_COHORTS = 256  # more values than this is a measured column, not a design axis
SUBSPACE_DIM = "hp_subspace_dim"
D_INT_SHARE = 0.9  # Li et al.'s d_int90: 90% of the full space's accuracy
N_DRAWS = 30
CONFIDENCE = 0.95
WIDTH = 100  # of the terminal table
_NAME = 24  # the row names' column
_DESIGN = ("init_seed", "order_seed", "data_seed", "trial")


@dataclass(repr=False)
class CohortAnalysis:
    """`analyze` ``by`` a column: one `Analysis` per value, compared at equal set sizes.

    Attributes
    ----------
    by : str
        The models column.
    cohorts : dict of str to Analysis
        Each value's analysis (its own Rashomon set, measures and flatness summary), in the
        column's order; keys are the values as the models table holds them.
    without_ok_models : dict of str to dict
        Values whose models all diverged or failed: their counts by status.
    equal_size : int or None
        m, the largest set size every cohort reaches (cohorts whose set has one model are left
        out: a set of one has no multiplicity to compare); None when no set has two models.
    at_equal_size : pandas.DataFrame
        One row per (cohort, measure) for the cohorts compared at m: the ``mean``, ``low`` and
        ``high`` of the measure over ``n_draws`` draws of m models from the cohort's set (its
        baseline always in); a set of exactly m models is one draw.
    n_draws : int
        Draws per cohort at m.
    confidence : float
        The share of draws between ``low`` and ``high``.
    n_pending : int
        Models of the job not trained yet.
    intrinsic_dimension : dict or None
        By ``hp_subspace_dim`` only: d_int90 and the accuracies it is read from
        (`intrinsic_dimension`).
    """

    by: str
    cohorts: dict[str, Analysis]
    without_ok_models: dict[str, dict[str, int]]
    equal_size: int | None
    at_equal_size: pd.DataFrame
    n_draws: int = N_DRAWS
    confidence: float = CONFIDENCE
    n_pending: int = 0
    intrinsic_dimension: dict | None = None

    def __repr__(self) -> str:
        lines = [f"CohortAnalysis(by {self.by}: {len(self.cohorts)} cohorts, each its own set"]
        for label, analysis in list(self.cohorts.items())[:8]:
            chosen = analysis.rashomon_set
            lines.append(
                f"  {_clip(label, 20):<20} set {chosen.size:>5} of {len(chosen.pool_model_ids):>5}"
                f" ok, ambiguity {analysis.overall['ambiguity']:.4g}, disagreement "
                f"{analysis.overall['disagreement']:.4g}"
            )
        if len(self.cohorts) > 8:
            lines.append(f"  … and {len(self.cohorts) - 8} more")
        if self.without_ok_models:
            lines.append(f"  without ok models: {', '.join(self.without_ok_models)}")
        lines.append(
            f"  compared at equal set size m = {self.equal_size}; .to_dict(), .per_example(), "
            ".curves(), .cohorts[value])"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The ``rashomon analyze --by COLUMN --json`` object (README: "Cohorts side by side")."""
        first = next(iter(self.cohorts.values())).to_dict()
        equal = {label: None for label in self.cohorts}
        for (label, measure), row in self.at_equal_size.set_index(["cohort", "measure"]).iterrows():
            equal[label] = (equal[label] or {}) | {
                measure: {"mean": row["mean"], "low": row["low"], "high": row["high"]}
            }
        return {
            "column": self.by,
            "n_models": sum(len(a.rashomon_set.pool_model_ids) for a in self.cohorts.values()),
            "n_pending": self.n_pending,
            **{key: first[key] for key in ("epsilon", "metric", "relative", "split", "n_examples")},
            "by": {
                label: {k: v for k, v in analysis.to_dict().items() if k != "n_pending"}
                for label, analysis in self.cohorts.items()
            },
            "without_ok_models": self.without_ok_models,
            "equal_size": self.equal_size,
            "equal_size_draws": self.n_draws,
            "equal_size_confidence": self.confidence,
            "at_equal_size": equal,
        } | (
            {}
            if self.intrinsic_dimension is None
            else {"intrinsic_dimension": self.intrinsic_dimension}
        )

    def per_example(self) -> pd.DataFrame:
        """`Analysis.per_example` of every cohort, stacked, with the cohort in column ``by``."""
        return pd.concat(
            [a.per_example().assign(**{self.by: label}) for label, a in self.cohorts.items()],
            ignore_index=True,
        )[[self.by, *next(iter(self.cohorts.values())).per_example().columns]]

    def curves(self, *, seed: int = 0) -> Curves:
        """`Analysis.curves` of every cohort, stacked, with the cohort in column ``by``; every
        model-count curve includes the equal size m."""
        epsilon, count = [], []
        for label, analysis in self.cohorts.items():
            size = analysis.rashomon_set.size
            sizes = default_sizes(size) + ([self.equal_size] if self._compared(size) else [])
            curves = analysis.curves(sizes=sizes, n_draws=self.n_draws,
                                     confidence=self.confidence, seed=seed)  # fmt: skip
            epsilon.append(curves.epsilon.assign(**{self.by: label}))
            count.append(curves.model_count.assign(**{self.by: label}))
        return Curves(
            epsilon=_first(pd.concat(epsilon, ignore_index=True), self.by),
            model_count=_first(pd.concat(count, ignore_index=True), self.by),
        )

    def _compared(self, size: int) -> bool:
        return self.equal_size is not None and size >= 2


def analyze_cohorts(
    results: Results | str,
    by: str,
    epsilon: float = DEFAULT_EPSILON,
    metric: str = DEFAULT_METRIC,
    *,
    relative: bool = False,
    split: str = DEFAULT_SPLIT,
    memory_budget: int = MEMORY_BUDGET,
    n_draws: int = N_DRAWS,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> CohortAnalysis:
    """`analyze` of each value of the models column ``by`` (see `CohortAnalysis`)."""
    results = results if isinstance(results, Results) else open_results(results)
    models = results.models
    labels = cohort_labels(models, by)
    order = _value_order(models[by], labels)
    with_ok = set(labels[models["status"] == "ok"])
    statuses = models.groupby(labels)["status"].value_counts()
    without = {
        label: {str(status): int(n) for status, n in statuses[label].items()}
        for label in order
        if label not in with_ok
    }
    if not with_ok:
        raise UserError(f"--by {by}: no cohort has a model with status ok; nothing to analyse")
    names = [label for label in order if label in with_ok]
    analyses = analyze_populations(
        results,
        [models[labels == label] for label in names],
        epsilon,
        metric,
        relative=relative,
        split=split,
        memory_budget=memory_budget,
    )
    cohorts = dict(zip(names, analyses, strict=True))
    compared = {k: a for k, a in cohorts.items() if a.rashomon_set.size >= 2}
    equal_size = min((a.rashomon_set.size for a in compared.values()), default=None)
    rows = []
    if compared:
        sets = [a.rashomon_set for a in compared.values()]
        for label, probabilities in zip(compared, read_sets(results, split, sets), strict=True):
            curve = model_count_curve(
                probabilities, [equal_size], n_draws=n_draws, confidence=confidence, seed=seed
            )
            rows.append(curve.drop(columns="size").assign(cohort=label))
    at_equal_size = (
        pd.concat(rows, ignore_index=True)[["cohort", "measure", "mean", "low", "high"]]
        if rows
        else pd.DataFrame(columns=["cohort", "measure", "mean", "low", "high"])
    )
    return CohortAnalysis(
        by=by,
        cohorts=cohorts,
        without_ok_models=without,
        equal_size=equal_size,
        at_equal_size=at_equal_size,
        n_draws=n_draws,
        confidence=confidence,
        n_pending=results.n_pending,
        intrinsic_dimension=intrinsic_dimension(models) if by == SUBSPACE_DIM else None,
    )


def intrinsic_dimension(models: pd.DataFrame, share: float = D_INT_SHARE) -> dict:
    """d_int90 (Li et al., ICLR 2018): the smallest subspace dimension d > 0 whose cohort's mean
    validation accuracy, over its ok models, reaches ``share`` (90%) of the full-space cohort's
    (``hp_subspace_dim`` 0, or null: a model trained before subspaces). None, with the reason,
    when there is no full-space cohort to compare with or no d reaches it."""
    ok = models[models["status"] == "ok"]
    dims = ok[SUBSPACE_DIM].fillna(0).astype("int64")
    means = ok["val_acc"].groupby(dims).mean().sort_index()
    by_dim = {str(int(d)): float(v) for d, v in means.items()}
    found = {"d_int90": None, "share": share, "full_space_val_acc": None, "threshold": None,
             "val_acc_by_dim": by_dim, "reason": None}  # fmt: skip
    if 0 not in means.index:
        found["reason"] = (
            "no full-space cohort to compare with (no ok model with subspace_dim 0); add 0 to "
            "train.subspace_dim's values"
        )
        return found
    full = float(means.loc[0])
    threshold = share * full
    found |= {"full_space_val_acc": full, "threshold": threshold}
    reached = [int(d) for d, value in means.items() if d > 0 and value >= threshold - 1e-12]
    if reached:
        found["d_int90"] = min(reached)
    else:
        found["reason"] = f"no subspace dimension reaches {share:.0%} of the full space's accuracy"
    return found


def cohort_labels(models: pd.DataFrame, by: str) -> pd.Series:
    """Each model's cohort: its value of ``by`` as the models table holds it (see the module)."""
    if by not in models.columns:
        design = [c for c in models.columns if c.startswith("hp_") or c in _DESIGN]
        raise UserError(
            f"--by {by}: not a column of the models table; choose a design column "
            f"({', '.join(design)}) or any other column of the models table"
        )
    values = models[by]
    integer = by in MODELS_SCHEMA.names and pa.types.is_integer(MODELS_SCHEMA.field(by).type)
    labels = values.map(lambda v: _label(v, integer), na_action="ignore")
    labels = labels.where(values.notna(), MISSING).astype(str)
    n_values = labels.nunique()
    if n_values > MAX_COHORTS:
        raise UserError(
            f"--by {by}: {n_values} distinct values; cohorts compare the values of a design "
            f"column with a few values (at most {MAX_COHORTS}), such as hp_lr or hp_optimizer"
        )
    return labels


def _label(value, integer: bool) -> str:
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating):
        return str(int(value)) if integer and float(value).is_integer() else repr(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def _value_order(values: pd.Series, labels: pd.Series) -> list[str]:
    """Cohort labels by value (`sortable`), the missing value last."""
    present = values.notna()
    frame = pd.DataFrame({"value": sortable(values[present]), "label": labels[present]})
    ordered = frame.drop_duplicates("label").sort_values("value", kind="stable")["label"].tolist()
    return ordered + ([MISSING] if (~present).any() else [])


def sortable(values: pd.Series) -> pd.Series:
    """A models column in value order: numbers numerically, and layer lists such as
    ``hp_hidden``'s ``[8]``, ``[32]``, ``[128]`` by their widths, not as text."""
    layers = values.map(_layers, na_action="ignore")
    if layers.isna().equals(values.isna()) and values.notna().any():
        return layers.astype(object)
    return values


def _layers(value) -> tuple[int, ...] | None:
    """The widths of a layer list written as text (``"[64, 32]"``), or None for anything else."""
    if not isinstance(value, str) or not value.startswith("["):
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    if not isinstance(parsed, list) or not all(
        isinstance(width, int) and not isinstance(width, bool) for width in parsed
    ):
        return None
    return tuple(parsed)


def _first(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    return frame[[column, *(c for c in frame.columns if c != column)]]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_cohorts(comparison: CohortAnalysis) -> str:
    """Cohorts side by side for a 100-column terminal: every measure, the measures at equal set
    size, where the variance comes from and the flatness summary."""
    cohorts = comparison.cohorts
    labels, legend = _headers(list(cohorts), comparison.by)
    first = next(iter(cohorts.values()))
    chosen = first.rashomon_set
    rule = "relative" if chosen.relative else "absolute"
    lines = textwrap.wrap(
        f"by {comparison.by}: {len(cohorts)} cohorts, each with its own Rashomon set within "
        f"ε = {chosen.epsilon:g} ({rule}) of its best {chosen.metric}; multiplicity on the "
        f"{first.split} split ({len(first.examples)} examples); worse when ↑ higher, ↓ lower",
        WIDTH,
    )
    lines += legend
    rows = [
        ("ok models", [str(len(a.rashomon_set.pool_model_ids)) for a in cohorts.values()]),
        ("Rashomon set size", [str(a.rashomon_set.size) for a in cohorts.values()]),
        (f"{chosen.metric} ≤", [f"{a.rashomon_set.threshold:.4g}" for a in cohorts.values()]),
        (
            "not ok (left out)",
            [str(sum(a.rashomon_set.excluded.values())) for a in cohorts.values()],
        ),
    ]
    rows += [(_arrow(name), [f"{a.overall[name]:.4g}" for a in cohorts.values()])
             for name in MEASURES]  # fmt: skip
    lines += _side_by_side(labels, rows)
    lines.append("  (Rashomon ratios are pool-based: shares of a cohort's ok models, not volumes)")
    lines += _equal_size_lines(comparison, labels)
    shares = [a.source_decomposition for a in cohorts.values()]
    chance = [a.source_decomposition_chance for a in cohorts.values()]
    axes = list(dict.fromkeys(axis for share in shares for axis in share))
    lines.append("source of prediction variance (share of each cohort's set; chance in brackets):")
    pairs = list(zip(shares, chance, strict=True))
    lines += _side_by_side(labels, [(a, [_share(s, c, a) for s, c in pairs]) for a in axes])
    lines += _flatness_lines(comparison, labels)
    if comparison.intrinsic_dimension is not None:
        lines += intrinsic_dimension_lines(comparison.intrinsic_dimension)
    if comparison.without_ok_models:
        lines.append("cohorts without ok models (no Rashomon set):")
        for label, counts in comparison.without_ok_models.items():
            lines.append(
                f"  {comparison.by} = {label}: "
                + ", ".join(f"{n} {status}" for status, n in counts.items())
            )
    return "\n".join(lines)


def intrinsic_dimension_lines(found: dict) -> list[str]:
    """d_int90 and the accuracies it comes from, for the terminal."""
    accuracies = ", ".join(f"d={d}: {v:.4g}" for d, v in found["val_acc_by_dim"].items())
    head = (
        f"intrinsic dimension d_int90 = {found['d_int90']}: the smallest subspace_dim whose mean "
        f"val_acc reaches {found['share']:.0%} of the full space's "
        f"{found['full_space_val_acc']:.4g} (≥ {found['threshold']:.4g})"
        if found["d_int90"] is not None
        else f"intrinsic dimension d_int90: none ({found['reason']})"
    )
    return textwrap.wrap(head, WIDTH) + textwrap.wrap(
        f"mean val_acc of the ok models by subspace_dim (0: the full space): {accuracies}",
        WIDTH,
        initial_indent="  ",
        subsequent_indent="  ",
    )


def _headers(names: Sequence[str], by: str) -> tuple[list[str], list[str]]:
    """Column headers: the values themselves when they fit a column, else numbers with a
    legend (clipped values could look alike)."""
    if max(len(name) for name in names) <= 14:
        return list(names), []
    headers = [f"#{i + 1}" for i in range(len(names))]
    legend = [f"  {header} = {by} {name}" for header, name in zip(headers, names, strict=True)]
    return headers, legend


def _side_by_side(headers: list[str], rows: list[tuple[str, list[str]]]) -> list[str]:
    """Rows of cells under the headers, in blocks of as many columns as fit in `WIDTH`."""
    width = max(10, *(len(h) + 2 for h in headers), *(len(c) + 2 for _, r in rows for c in r))
    per_block = max(1, (WIDTH - _NAME - 2) // width)
    lines = []
    for start in range(0, len(headers), per_block):
        block = slice(start, start + per_block)
        lines.append(f"  {'':<{_NAME}}" + "".join(f"{h:>{width}}" for h in headers[block]))
        lines += [
            f"  {_clip(name, _NAME):<{_NAME}}" + "".join(f"{c:>{width}}" for c in cells[block])
            for name, cells in rows
        ]
    return lines


def _arrow(name: str) -> str:
    return f"{name} {'↑' if MEASURE_LEGEND[name].worse == 'higher' else '↓'}"


def _share(shares: dict, chance: dict, axis: str) -> str:
    if axis not in shares:
        return "-"
    return f"{shares[axis]:.3f} ({chance[axis]:.3f})"


def _equal_size_lines(comparison: CohortAnalysis, labels: list[str]) -> list[str]:
    m = comparison.equal_size
    if m is None:
        return ["no cohort's Rashomon set has two models: nothing to compare at equal size"]
    names = list(comparison.cohorts)
    compared = comparison.at_equal_size.set_index(["cohort", "measure"])
    lines = textwrap.wrap(
        f"at equal set size m = {m}, the largest every cohort's set reaches: mean [band] over "
        f"{comparison.n_draws} draws of {m} models from each set (its baseline always in); "
        f"band: the central {comparison.confidence:.0%} of the draws",
        WIDTH,
    )
    left_out = [label for label in names if comparison.cohorts[label].rashomon_set.size < 2]
    rows = []
    for measure in COUNT_CURVE_MEASURES:
        cells = []
        for label in names:
            if label in left_out:
                cells.append("-")
                continue
            row = compared.loc[(label, measure)]
            cells.append(f"{row['mean']:.3g} [{row['low']:.3g}, {row['high']:.3g}]")
        rows.append((_arrow(measure), cells))
    lines += _side_by_side(labels, rows)
    if left_out:
        lines.append(
            f"  - a set of one model (cohorts {', '.join(left_out)}): no multiplicity to compare"
        )
    return lines


def _flatness_lines(comparison: CohortAnalysis, labels: list[str]) -> list[str]:
    summaries = [a.flatness for a in comparison.cohorts.values()]
    statistics = list(
        dict.fromkeys(name for summary in summaries for name in summary.get("statistics", {}))
    )
    if not statistics:
        return []

    def cells(key: str, spec: str) -> list[tuple[str, list[str]]]:
        rows = []
        for name in statistics:
            row = []
            for summary in summaries:
                value = summary.get("statistics", {}).get(name, {}).get(key)
                ok = value is not None and math.isfinite(value)
                row.append(format(value, spec) if ok else "n/a")
            rows.append((name, row))
        return rows

    return [
        "flatness: each statistic's mean over the cohort's Rashomon set",
        *_side_by_side(labels, cells("inside_mean", ".4g")),
        "flatness: Kendall τ-b of each statistic with test accuracy over the cohort's ok models",
        "  (< 0: flatter minima go with more accurate models)",
        *_side_by_side(labels, cells("tau_test_acc", "+.2f")),
    ]
