"""``rashomon analyze``: the Rashomon set of a results folder and everything SPEC §6 says about it.

Memory is what limits a population of 10,000 models × 10,000 examples: the set's probabilities are
read once (4 bytes per model, example and class) when they fit in ``memory_budget``, otherwise in
chunks of examples, and every measure is computed over chunks of examples so that temporaries
stay small. The rest of the pool is only needed for its predicted classes (one byte each, for the
pattern Rashomon ratio), read a group of models at a time.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from rashomon.analysis._decomposition import SourceDecomposition, design_factors
from rashomon.analysis._flatness import disagreement_with_set, flatness_statistics, flatness_summary
from rashomon.analysis._legend import FEW_EXAMPLES, MEASURE_LEGEND
from rashomon.analysis._measures import predicted_classes
from rashomon.analysis._multiplicity import MEASURES, ExampleMeasures
from rashomon.analysis._rashomon_set import (
    DEFAULT_EPSILON,
    DEFAULT_METRIC,
    RashomonSet,
    rashomon_set,
)
from rashomon.analysis._results import Results, open_results
from rashomon.jobs import UserError

DEFAULT_SPLIT = "test"
MEMORY_BUDGET = 1 << 30
_CHUNK_ELEMENTS = 1 << 22


@dataclass
class Analysis:
    """The result of `analyze`: the set, per-example measures and their summaries."""

    rashomon_set: RashomonSet
    split: str
    example_ids: np.ndarray
    measures: ExampleMeasures
    overall: dict[str, float]
    subgroups: dict[str, dict[str, dict[str, float]]]
    source_decomposition: dict[str, float]
    source_decomposition_chance: dict[str, float]
    flatness: dict = field(default_factory=dict)
    n_pending: int = 0  # models of the job not trained yet: the analysis covers the others

    def to_json(self) -> dict:
        """The JSON object of SPEC §6, plus the split, exclusions and subgroup measures."""
        chosen = self.rashomon_set
        return {
            "n_models": len(chosen.pool_model_ids),
            "n_pending": self.n_pending,
            "rashomon_set_size": chosen.size,
            "epsilon": chosen.epsilon,
            "metric": chosen.metric,
            "relative": chosen.relative,
            "baseline_model_id": chosen.baseline_model_id,
            "split": self.split,
            "n_examples": len(self.example_ids),
            "excluded_models": chosen.excluded,
            **self.overall,
            "source_decomposition": self.source_decomposition,
            "source_decomposition_chance": self.source_decomposition_chance,
            "subgroups": self.subgroups,
            "flatness": self.flatness,
        }


def analyze(
    results: Results | str | os.PathLike,
    epsilon: float = DEFAULT_EPSILON,
    metric: str = DEFAULT_METRIC,
    *,
    relative: bool = False,
    split: str = DEFAULT_SPLIT,
    baseline: str | None = None,
    memory_budget: int = MEMORY_BUDGET,
) -> Analysis:
    """Rashomon set (chosen on validation metrics) and its multiplicity on ``split``."""
    results = results if isinstance(results, Results) else open_results(results)
    chosen = rashomon_set(results.models, epsilon, metric, relative=relative, baseline=baseline)
    examples = results.split_examples(split)
    n_examples = len(examples)
    if n_examples == 0:
        raise UserError(
            f"{results.location}: the {split} split has no examples; choose another --split"
        )
    measures = ExampleMeasures.empty(
        chosen.size, len(chosen.pool_model_ids), n_examples, results.n_classes
    )
    models = results.models.set_index("model_id")
    decomposition = SourceDecomposition(design_factors(models.loc[chosen.model_ids].reset_index()))
    for examples_slice, chunk in _read_set(results, split, chosen, measures, memory_budget):
        measures.add(chunk, examples_slice)
        decomposition.add(chunk)
    pool_row = _positions(chosen.pool_model_ids)
    measures.pool_predictions[[pool_row[m] for m in chosen.model_ids]] = measures.set_predictions
    subgroups = {
        column: {
            str(value): {"n_examples": int(mask.sum()), **measures.summary(mask)}
            for value, mask in _group_masks(examples[column])
        }
        for column in results.group_columns
    }
    flatness = {}
    if flatness_statistics(results.models):
        flatness = flatness_summary(
            results.models, chosen.model_ids, disagreement_with_set(measures.set_predictions)
        )
    return Analysis(
        rashomon_set=chosen,
        split=split,
        example_ids=examples["example_id"].to_numpy(),
        measures=measures,
        overall=measures.summary(),
        subgroups=subgroups,
        source_decomposition=decomposition.shares(),
        source_decomposition_chance=decomposition.chance(),
        flatness=flatness,
        n_pending=results.n_pending,
    )


def chunk_size(n_models: int, n_classes: int) -> int:
    """Examples per computation chunk: about 4 M probabilities, whatever the set size."""
    return int(np.clip(_CHUNK_ELEMENTS // (n_models * n_classes), 16, 8192))


def _read_set(
    results: Results,
    split: str,
    chosen: RashomonSet,
    measures: ExampleMeasures,
    memory_budget: int,
) -> Iterator[tuple[slice, np.ndarray]]:
    """(examples, probabilities) chunks of the set; fills in the other pool models' predictions.

    When the set fits in ``memory_budget`` every pack file is read once. Otherwise the set is read
    per chunk of examples (each pass re-reads its files) after a pass for the other models.
    """
    n_examples = measures.set_predictions.shape[1]
    step = chunk_size(chosen.size, results.n_classes)
    bytes_per_example = chosen.size * results.n_classes * 4
    pool_row = _positions(chosen.pool_model_ids)
    set_row = _positions(chosen.model_ids)
    if bytes_per_example * n_examples <= memory_budget:
        probabilities = np.empty((chosen.size, n_examples, results.n_classes), np.float32)
        for ids, block in results.iter_split(split, chosen.pool_model_ids):
            in_set = np.array([m in set_row for m in ids], bool)
            probabilities[[set_row[m] for m in ids if m in set_row]] = block[in_set]
            if not in_set.all():
                others = [pool_row[m] for m in ids if m not in set_row]
                measures.pool_predictions[others] = predicted_classes(block[~in_set])
        for start in range(0, n_examples, step):
            yield slice(start, start + step), probabilities[:, start : start + step]
        return
    others = [m for m in chosen.pool_model_ids if m not in set_row]
    for ids, block in results.iter_split(split, others):
        measures.pool_predictions[[pool_row[m] for m in ids]] = predicted_classes(block)
    per_read = max(step, memory_budget // bytes_per_example // step * step)
    for read_start in range(0, n_examples, per_read):
        read = slice(read_start, min(read_start + per_read, n_examples))
        block = results.probabilities(split, chosen.model_ids, read)
        for start in range(0, block.shape[1], step):
            absolute = slice(read_start + start, min(read_start + start + step, read.stop))
            yield absolute, block[:, start : start + step]


def _positions(model_ids: list[str]) -> dict[str, int]:
    return {model_id: row for row, model_id in enumerate(model_ids)}


def _group_masks(values) -> Iterator[tuple[object, np.ndarray]]:
    filled = values.astype(object).where(values.notna(), "<missing>")
    for value in sorted(filled.unique(), key=str):
        yield value, (filled == value).to_numpy()


def format_table(analysis: Analysis) -> str:
    """A summary for a 100-column terminal: each measure with its one-line legend."""
    chosen = analysis.rashomon_set
    data = analysis.to_json()
    rule = "relative" if chosen.relative else "absolute"
    excluded = ", ".join(f"{n} {s}" for s, n in chosen.excluded.items()) or "none"
    lines = [
        f"Rashomon set: {chosen.size} of {len(chosen.pool_model_ids)} ok models within "
        f"ε = {chosen.epsilon:g} ({rule}) of the best {chosen.metric}",
        f"  baseline {chosen.baseline_model_id}, threshold {chosen.metric} ≤ "
        f"{chosen.threshold:.6g}; excluded models: {excluded}",
        f"multiplicity on the {analysis.split} split ({len(analysis.example_ids)} examples); "
        "worse when ↑ higher, ↓ lower:",
    ]
    for name in MEASURES:
        legend = MEASURE_LEGEND[name]
        arrow = "↑" if legend.worse == "higher" else "↓"
        lines.append(f"  {name:<23}{data[name]:>9.4g} {arrow} {legend.definition}")
    lines.append("  (Rashomon ratios are pool-based: shares of the trained pool, not volumes)")
    lines.append(
        "source of prediction variance (share, averaged over examples; chance: the share of "
        "pure noise):"
    )
    chance = analysis.source_decomposition_chance
    lines += [
        f"  {axis:<23}{share:>9.3f}   chance {chance[axis]:.3f}"
        for axis, share in analysis.source_decomposition.items()
    ]
    if analysis.flatness:
        lines += _flatness_lines(analysis.flatness)
    for column, values in analysis.subgroups.items():
        lines.append(f"by {column}:")
        header = ["ambiguity", "disagree", "vpr_mean", "rc_mean", "score_std"]
        lines.append(f"  {'value':>20}{'n':>8}" + "".join(f"{h:>12}" for h in header))
        few = False
        for value, row in values.items():
            cells = [row["ambiguity"], row["disagreement"], row["vpr_mean"],
                     row["rashomon_capacity_mean"], row["score_std_mean"]]  # fmt: skip
            mark = " *" if row["n_examples"] < FEW_EXAMPLES else ""
            few |= bool(mark)
            lines.append(
                f"  {value[:20]:>20}{row['n_examples']:>8}"
                + "".join(f"{c:>12.4f}" for c in cells)
                + mark
            )
        if few:
            lines.append(
                f"  * fewer than {FEW_EXAMPLES} examples: one example moves these measures by "
                f"over 1/{FEW_EXAMPLES}"
            )
    return "\n".join(lines)


def _flatness_lines(flatness: dict) -> list[str]:
    """SPEC §8's population summary, one row per statistic."""
    axes = ", ".join(flatness["axes"]) or "none: no hyperparameter varies"
    lines = [
        f"flatness over {flatness['n_models']} ok models: Kendall τ-b of each statistic with test "
        "accuracy (τ acc),",
        "  with the gap val_loss − train_loss (τ gap) and, in the set, with each model's "
        "disagreement",
        "  with the set (τ disagr); a sharpness that predicts generalisation has τ acc < 0, "
        "τ gap > 0;",
        *textwrap.wrap(
            f"Ψ: Jiang et al.'s granulated τ over {axes}; in set / outside: the statistic's mean",
            98,
            initial_indent="  ",
            subsequent_indent="    ",
        ),
        f"  {'statistic':<23}{'τ acc':>7}{'Ψ acc':>7}{'τ gap':>7}{'Ψ gap':>7}"
        f"{'τ disagr':>9}{'in set':>12}{'outside':>12}",
    ]
    for name, entry in flatness["statistics"].items():
        taus = [entry["tau_test_acc"], entry["granulated_tau_test_acc"]["mean"],
                entry["tau_generalization_gap"],
                entry["granulated_tau_generalization_gap"]["mean"]]  # fmt: skip
        lines.append(
            f"  {name:<23}"
            + "".join(_number(tau, 7, "+.2f") for tau in taus)
            + _number(entry["tau_disagreement"], 9, "+.2f")
            + _number(entry["inside_mean"], 12, ".4g")
            + _number(entry["outside_mean"], 12, ".4g")
        )
    return lines


def _number(value: float | None, width: int, spec: str) -> str:
    """``value`` right-aligned in ``width``; undefined (None, NaN) as ``n/a``."""
    if value is None or not np.isfinite(value):
        return f"{'n/a':>{width}}"
    return f"{format(value, spec):>{width}}"
