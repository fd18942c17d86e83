"""What a population means: Rashomon sets, predictive multiplicity and where it comes from.

Everything reads a results folder written by ``rashomon run`` (SPEC §5) or plain arrays, so the
measures work in a notebook without the engine::

    from rashomon.analysis import analyze, open_results
    results = open_results("results/adult-mlp")
    analysis = analyze(results, epsilon=0.01)
    analysis.to_dict()["disagreement"]

(`rashomon.analyze` and `rashomon.open_results` are these functions.)
"""

from rashomon.analysis._analyze import analyze, format_table
from rashomon.analysis._capacity import rashomon_capacity
from rashomon.analysis._cohorts import CohortAnalysis, format_cohorts
from rashomon.analysis._decomposition import (
    design_factors,
    source_decomposition,
    source_decomposition_chance,
)
from rashomon.analysis._measures import (
    ambiguity,
    ambiguous_examples,
    disagreement,
    discrepancy,
    flip_rates,
    obscurity,
    pattern_count,
    pattern_rashomon_ratio,
    predicted_classes,
    score_std,
    self_consistency,
    viable_prediction_range,
)
from rashomon.analysis._multiplicity import ExampleMeasures, example_measures, multiplicity
from rashomon.analysis._population import Analysis, Curves
from rashomon.analysis._rashomon_set import RashomonSet, metric_values, rashomon_set
from rashomon.analysis._report import write_report
from rashomon.analysis._results import Results, open_results

__all__ = [
    "Analysis",
    "CohortAnalysis",
    "Curves",
    "ExampleMeasures",
    "RashomonSet",
    "Results",
    "ambiguity",
    "ambiguous_examples",
    "analyze",
    "design_factors",
    "disagreement",
    "discrepancy",
    "example_measures",
    "flip_rates",
    "format_cohorts",
    "format_table",
    "metric_values",
    "multiplicity",
    "obscurity",
    "open_results",
    "pattern_count",
    "pattern_rashomon_ratio",
    "predicted_classes",
    "rashomon_capacity",
    "rashomon_set",
    "score_std",
    "self_consistency",
    "source_decomposition",
    "source_decomposition_chance",
    "viable_prediction_range",
    "write_report",
]
