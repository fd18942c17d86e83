"""What each number of `analyze` and the report means, in words: names, units, one-line
definitions and which way is worse, shared by the terminal table and the HTML report so that the
two never tell a reader different things.

A definition fits one 100-column terminal line next to its name and value (≤ 60 characters).
"""

from __future__ import annotations

from dataclasses import dataclass

# A subgroup measure over fewer examples is mostly chance: one example moves ambiguity by ≥ 1/30
# and the maximum-based measures (discrepancy, capacity max) by more.
FEW_EXAMPLES = 30


@dataclass(frozen=True)
class Legend:
    label: str  # a reader's name for it
    unit: str  # what the number is: its axis label
    definition: str  # what it is, ≤ 60 characters
    worse: str = "higher"  # the direction of more arbitrary predictions (or a sharper minimum)


MEASURE_LEGEND: dict[str, Legend] = {
    "ambiguity": Legend(
        "ambiguity", "share of examples", "examples where some set model differs from the baseline"
    ),
    "discrepancy": Legend(
        "discrepancy", "share of examples", "most examples one set model flips vs the baseline"
    ),
    "obscurity": Legend(
        "obscurity", "share of examples", "examples a set model flips vs the baseline, mean"
    ),
    "disagreement": Legend(
        "disagreement", "probability", "chance two set models differ, mean over examples"
    ),
    "self_consistency": Legend(
        "self-consistency", "probability", "chance two set models agree (1 − disagreement)", "lower"
    ),
    "vpr_mean": Legend(
        "viable prediction range", "probability", "max − min probability of a class, mean"
    ),
    "vpr_share_ge_0.1": Legend(
        "viable prediction range ≥ 0.1", "share of examples", "examples whose VPR is ≥ 0.1"
    ),
    "score_std_mean": Legend(
        "score std", "probability", "std of the baseline class's probability, mean"
    ),
    "rashomon_capacity_mean": Legend(
        "Rashomon capacity, mean", "effective classes", "classes the set can predict, mean"
    ),
    "rashomon_capacity_max": Legend(
        "Rashomon capacity, max", "effective classes", "the same at the most contested example"
    ),
    "rashomon_ratio": Legend(
        "Rashomon ratio", "share of ok models", "set size / ok models (pool-based, not a volume)"
    ),
    "pattern_rashomon_ratio": Legend(
        "pattern Rashomon ratio", "share of patterns", "distinct prediction vectors, set / pool"
    ),
}

FLATNESS_LEGEND: dict[str, Legend] = {
    "grad_norm": Legend(
        "gradient norm ‖∇L‖₂", "nats / parameter", "how far from a stationary point training ended"
    ),
    "hessian_trace": Legend(
        "Hessian trace tr ∇²L", "nats / parameter²", "total curvature (Hutchinson estimate)"
    ),
    "hessian_trace_se": Legend(
        "s.e. of the Hessian trace", "nats / parameter²", "precision of that estimate"
    ),
    "hessian_top_eig": Legend(
        "top Hessian eigenvalue", "nats / parameter²", "curvature in the sharpest direction"
    ),
    "hessian_trace_adaptive": Legend(
        "adaptive trace tr(D ∇²L D)", "nats", "curvature in units of |w|: rescaling-invariant"
    ),
    "fisher_trace": Legend(
        "Fisher / GGN trace", "nats / parameter²", "curvature of the outputs (Gauss–Newton part)"
    ),
    "sam_sharpness": Legend(
        "SAM sharpness", "loss increase, nats", "loss rise after a step of length ρ up the gradient"
    ),
    "asam_sharpness": Legend(
        "ASAM sharpness", "loss increase, nats", "the same, step scaled by |w| (scale-adaptive)"
    ),
    "avg_sharpness": Legend(
        "average sharpness", "loss increase, nats", "mean loss rise under noise N(0, (σw)²) on w"
    ),
    "weight_norm": Legend("weight norm ‖w‖₂", "parameter units", "size of the weights"),
    "dist_from_init": Legend(
        "distance from init ‖w − w₀‖₂", "parameter units", "how far training moved the weights"
    ),
}

SIMPLICITY_LEGEND: dict[str, Legend] = {
    "feature_effective_rank": Legend(
        "effective rank of the features", "dimensions", "directions the penultimate layer uses"
    ),
    "weight_effective_rank": Legend(
        "effective rank of the first layer", "dimensions", "directions its weight matrix spans"
    ),
}

HISTORY_LEGEND: dict[str, Legend] = {
    "train_loss": Legend("training loss", "nats", "the epoch's minibatch losses, as trained on"),
    "val_loss": Legend("validation loss", "nats", "mean cross-entropy on the validation split"),
    "val_acc": Legend("validation accuracy", "share of examples", "correct on validation", "lower"),
}
