"""Rashomon capacity: how many classes the models of a Rashomon set can spread one example over.

For one example x the rows ``W[h] = p_h(x)`` of the m models form a channel from models to
the C classes, and the Rashomon capacity is RC(x) = 2^κ(x), κ(x) its Shannon capacity in bits
(Hsu & Calmon, "Rashomon Capacity: A Metric for Predictive Multiplicity in Classification",
NeurIPS 2022). 1 ≤ RC ≤ min(m, C): 1 when all models agree, C when C of them are certain of
C different classes. Everything below works in nats, with 0·log 0 = 0.

Every input distribution r and output distribution q bound the capacity (Blahut 1972, Arimoto
1972): with D_h(q) = KL(W_h ‖ q),

    I_L(r) = log Σ_h r_h exp(D_h(rW))  ≤  κ  ≤  I_U(q) = max_h D_h(q).

An example is finished when exp(I_U) − exp(I_L) ≤ tol and the midpoint is reported, so the
answer is within tol/2 of RC whatever produced r and q. An example that cannot get there (too
few iterations, or a tol within rounding of float64) raises an error: it is never reported as
1 nor as a bare bound.

Two classes have a closed form. Only the models with the smallest and the largest P(y = 1),
a and b, matter (every other row mixes those two, and splitting a mixed row never lowers the
mutual information). Through an output law with P(y = 1) = t in [a, b] the information is
h(t) − h(a) − (t − a)·s, with h the binary entropy and s the slope of its chord over [a, b];
its maximum, at t = 1/(1 + e^s), is κ = log(1 + e^{−s}) + a·s − h(a). The slope is taken from
divided differences of x·log x, which stay exact when a and b nearly coincide.

With three or more classes Blahut–Arimoto itself is too slow to certify 1e-9: when inputs of
the optimum are nearly tied its bounds close sublinearly (of 200 random 10 × 10 channels, 7
needed more than 10⁴ iterations and one more than 10⁵). r and q come instead from a
primal–dual interior-point method (Mehrotra predictor–corrector) on the geometric-programming
dual of the capacity (Chiang & Boyd, IEEE Trans. Inf. Theory 50(2), 2004):

    κ = min_α log Σ_y exp(α_y)  subject to  W_h·α ≥ −H(W_h) for every model h,

whose multipliers λ make an input distribution and whose softmax(α) is an output law. Each
Newton step solves one C × C system per example at a cost of O(m·C²), and 10–20 steps reach
1e-9. Examples are processed in chunks of bounded memory and leave the iteration once done.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

_NEGATIVE_TOLERANCE = 1e-6
_SUM_TOLERANCE = 1e-3
_CHUNK_ELEMENTS = 1 << 21  # 16 MB per (examples, models, classes) float64 array: ~64 MB peak
_BLOCK_ELEMENTS = 1 << 19  # models read at a time when validating or for two classes
# Safeguards of the interior-point method, tuned on ~10⁵ random and adversarial channels.
_TO_BOUNDARY = 0.99  # fraction of the step to the boundary of slack, λ ≥ 0 taken
_MAX_MOVE = 1.0  # largest change of any α_y per step: exp(α) is only linear nearby
_MU_MIN = 1e-17  # smallest complementarity aimed at: below it steps are rounding noise
_RIDGE = 1e-30  # keeps the Hessian diagonal positive for classes of negligible mass
_RELATIVE_RIDGE = 1e-14  # keeps the scaled Hessian invertible near the optimum
_PATIENCE = 50  # iterations without halving the gap before an example counts as stuck
_TINY = np.finfo(np.float64).smallest_subnormal


def rashomon_capacity(
    probabilities: np.ndarray, *, tol: float = 1e-9, max_iter: int = 100_000
) -> np.ndarray:
    """Rashomon capacity of every example.

    Parameters
    ----------
    probabilities : ndarray of shape (m_models, n_examples, n_classes)
        Predicted class probabilities of the models of a Rashomon set, float32 or float64.
        Rows must sum to 1 within 1e-3; they are renormalised in float64 and negative entries
        down to -1e-6 are clipped to 0.
    tol : float, default=1e-9
        Largest allowed gap between the proven upper and lower bound on each Rashomon capacity;
        the midpoint returned is within tol/2 of the exact value. Unused for two classes.
    max_iter : int, default=100_000
        Largest number of interior-point iterations. Unused for two classes.

    Returns
    -------
    ndarray of shape (n_examples,)
        2 ** (capacity in bits) per example, between 1 and min(m_models, n_classes).

    Raises
    ------
    ValueError
        If ``probabilities`` is not a valid array of probability vectors.
    RuntimeError
        If some capacity is not within ``tol`` after ``max_iter`` iterations.
    """
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    if max_iter < 0:
        raise ValueError(f"max_iter must be non-negative, got {max_iter}")
    probabilities = np.asarray(probabilities)
    validate(probabilities)
    m, n, n_classes = probabilities.shape
    if m == 1 or n == 0:
        return np.ones(n)
    if n_classes == 2:
        return _binary_capacity(probabilities)
    return _multiclass_capacity(probabilities, tol, max_iter)


def validate(p: np.ndarray) -> None:
    """Raise ValueError unless ``p`` is (models, examples, classes) probability rows."""
    if p.dtype.kind not in "fiu":
        raise ValueError(f"probabilities must be a real array, got dtype {p.dtype}")
    if p.ndim != 3:
        raise ValueError(
            f"probabilities must have shape (m_models, n_examples, n_classes), got {p.shape}"
        )
    m, _, n_classes = p.shape
    if m < 1:
        raise ValueError("probabilities must hold at least one model")
    if n_classes < 2:
        raise ValueError(f"probabilities must have at least 2 classes, got {n_classes}")
    ones = np.ones(n_classes, dtype=np.result_type(p.dtype, np.float32))
    for block in _model_blocks(p):
        worst = np.abs(block @ ones - 1).max(initial=0)  # a matmul: np.sum is slow for small C
        if not np.isfinite(worst):
            raise ValueError("probabilities must be finite (found NaN or infinity)")
        low = block.min(initial=0)
        if low < -_NEGATIVE_TOLERANCE:
            raise ValueError(f"probabilities must be non-negative (found {low:.3g})")
        if worst > _SUM_TOLERANCE:
            raise ValueError(f"probability rows must sum to 1 (one is off by {worst:.3g})")


def _model_blocks(p: np.ndarray) -> Iterator[np.ndarray]:
    """Consecutive groups of models, small enough for cache-friendly float64 copies."""
    m, n, n_classes = p.shape
    size = max(1, _BLOCK_ELEMENTS // max(1, n * n_classes))
    return (p[start : start + size] for start in range(0, m, size))


def _normalised(block: np.ndarray) -> np.ndarray:
    rows = np.maximum(np.asarray(block, dtype=np.float64, order="C"), 0)
    rows /= rows.sum(axis=-1, keepdims=True)
    return rows


def _xlogx(x: np.ndarray) -> np.ndarray:
    return x * np.log(np.where(x > 0, x, 1))


def _binary_capacity(p: np.ndarray) -> np.ndarray:
    n = p.shape[1]
    low, high = np.full(n, np.inf), np.full(n, -np.inf)
    for block in _model_blocks(p):
        share = positive_share(block[..., 0], block[..., 1])
        np.minimum(low, share.min(axis=0), out=low)
        np.maximum(high, share.max(axis=0), out=high)
    return binary_capacity(low, high)


def positive_share(p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """P(y = 1) of each row renormalised in float64: all of a binary row that capacity uses."""
    p1 = p1.astype(np.float64)
    return p1 / (p0.astype(np.float64) + p1)


def binary_capacity(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """RC per example from the smallest and largest `positive_share` over the set's models."""
    # A tiny negative entry puts p1 just outside [0, 1]: clipping p1 equals clipping the entry.
    return _binary_from_extremes(np.clip(low, 0, 1), np.clip(high, 0, 1))


def _binary_from_extremes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RC of the channel with rows (1 − a, a) and (1 − b, b), a ≤ b."""
    gap = b - a
    slope = (
        np.log(np.maximum(1 - a, _TINY))
        + _log1p_ratio(1 - b, gap)
        - np.log(np.maximum(b, _TINY))
        - _log1p_ratio(a, gap)
    )
    nats = np.logaddexp(0, -slope) + a * slope + _xlogx(a) + _xlogx(1 - a)
    return np.where(gap > 0, np.exp(np.clip(nats, 0, np.log(2))), 1.0)


def _log1p_ratio(low: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """log1p(x)/x for x = gap/low: the chord slope of x·log x on [low, low + gap] minus
    log(low + gap). It tends to 1 as gap → 0 and to 0 as low → 0, and never overflows."""
    log_x = np.log(np.maximum(gap, _TINY)) - np.log(np.maximum(low, _TINY))
    x = np.exp(np.clip(log_x, -700, 700))
    return np.log1p(x) / x


def _multiclass_capacity(p: np.ndarray, tol: float, max_iter: int) -> np.ndarray:
    m, n, n_classes = p.shape
    size = max(1, _CHUNK_ELEMENTS // (m * n_classes))
    low, high = np.empty(n), np.empty(n)
    for start in range(0, n, size):
        channels = _normalised(p[:, start : start + size].transpose(1, 0, 2))
        low[start : start + size], high[start : start + size] = _bounds(channels, tol, max_iter)
    gap = high - low
    unfinished = ~(gap <= tol)
    if unfinished.any():
        raise RuntimeError(
            f"Rashomon capacity of {unfinished.sum()} of {n} examples not within tol={tol:g} "
            f"after at most max_iter={max_iter} iterations (largest remaining gap "
            f"{gap.max():.3g}; raise max_iter, or tol if it is near float64 rounding)"
        )
    return (low + high) / 2


def _bounds(W: np.ndarray, tol: float, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds on RC for channels W of shape (n, m, C), within tol if possible."""
    n, m, _ = W.shape
    neg_entropy = _xlogx(W).sum(axis=-1)
    live = (W > 0).any(axis=1)  # classes some model can output
    low = np.ones(n)
    high = np.minimum(live.sum(axis=1), m).astype(np.float64)
    log_high = np.log(high)
    halved, stale = high - low, np.zeros(n, dtype=int)  # the gap when it last halved, and since
    alpha, slack, lam = _start(W, neg_entropy, live)
    todo = np.arange(n)
    for iteration in range(max_iter + 1):
        lower, upper = _information_bounds(W, neg_entropy, alpha, slack, lam, live)
        low[todo] = np.fmax(low[todo], np.exp(np.clip(lower, 0, log_high[todo])))
        high[todo] = np.fmin(high[todo], np.exp(np.clip(upper, 0, log_high[todo])))
        gap = high[todo] - low[todo]
        progress = gap <= halved[todo] / 2
        halved[todo] = np.where(progress, gap, halved[todo])
        stale[todo] = np.where(progress, 0, stale[todo] + 1)
        keep = (gap > tol) & (stale[todo] <= _PATIENCE) & np.isfinite(lower + upper)
        if not keep.any() or iteration == max_iter:
            break
        todo, W, neg_entropy, live = todo[keep], W[keep], neg_entropy[keep], live[keep]
        alpha, slack, lam = _newton_step(W, alpha[keep], slack[keep], lam[keep], live)
    return low, high


def _start(
    W: np.ndarray, neg_entropy: np.ndarray, live: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniform weights r and α = log(rW) + max_h D_h + 1: every constraint has slack ≥ 1."""
    _, m, _ = W.shape
    log_q = np.log(np.where(live, W.mean(axis=1), 1))
    divergence = neg_entropy - _matvec(W, log_q)
    alpha = np.where(live, log_q + divergence.max(axis=1, keepdims=True) + 1, 0)
    slack = _matvec(W, alpha) - neg_entropy
    return alpha, slack, np.full(slack.shape, 1 / m)


def _information_bounds(
    W: np.ndarray,
    neg_entropy: np.ndarray,
    alpha: np.ndarray,
    slack: np.ndarray,
    lam: np.ndarray,
    live: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """I_L(r) and I_U(rW) for r ∝ λ·min(1, λ/slack), I_U(softmax(α)) too, in nats.

    The factor min(1, λ/slack) ~ μ/slack² mutes the models the optimum leaves out, whose weight
    λ ~ μ/slack would otherwise blur the small entries of rW."""
    r = lam * np.minimum(1, lam / slack)
    r /= r.sum(axis=1, keepdims=True)
    q = (r[:, None, :] @ W)[:, 0]
    # Where q underflowed to 0 the divergences come out too small: still right for I_L only.
    divergence = neg_entropy - _matvec(W, np.log(np.where(q > 0, q, 1)))
    top = divergence.max(axis=1)
    lower = top + np.log(np.sum(r * np.exp(divergence - top[:, None]), axis=1))
    upper_r = np.where((live & (q == 0)).any(axis=1), np.inf, top)
    upper_alpha = _logsumexp(alpha, live) - (_matvec(W, alpha) - neg_entropy).min(axis=1)
    return lower, np.minimum(upper_r, upper_alpha)


def _newton_step(
    W: np.ndarray, alpha: np.ndarray, slack: np.ndarray, lam: np.ndarray, live: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Mehrotra predictor–corrector step; slack = W·α + negative entropy, kept ≥ 0."""
    q = np.exp(alpha - _logsumexp(alpha, live)[:, None]) * live
    weight = lam / slack
    hessian, scale = _scaled_hessian(W, q, weight, live)

    def direction(target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Newton direction towards W^T λ = q and λ∘slack = target."""
        rhs = (((target / slack)[:, None, :] @ W)[:, 0] - q) * scale
        d_alpha = np.linalg.solve(hessian, rhs[..., None])[..., 0] * scale
        d_slack = _matvec(W, d_alpha)
        return d_alpha, d_slack, target / slack - lam - weight * d_slack

    mu = np.mean(lam * slack, axis=1)
    _, d_slack, d_lam = direction(np.zeros_like(lam))
    step = np.minimum(1, _step_to_boundary(slack, d_slack, lam, d_lam))
    mu_affine = np.mean((slack + step * d_slack) * (lam + step * d_lam), axis=1)
    sigma = (mu_affine / mu) ** 3
    target = np.maximum(sigma * mu, _MU_MIN)[:, None] - d_slack * d_lam
    d_alpha, d_slack, d_lam = direction(target)
    move = np.maximum(np.abs(d_alpha).max(axis=1, keepdims=True), _MAX_MOVE)
    step = np.minimum(_TO_BOUNDARY * _step_to_boundary(slack, d_slack, lam, d_lam), 1)
    step = np.minimum(step, _MAX_MOVE / move)
    return alpha + step * d_alpha, slack + step * d_slack, lam + step * d_lam


def _scaled_hessian(
    W: np.ndarray, q: np.ndarray, weight: np.ndarray, live: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """S·(∇² logsumexp(α) + W^T diag(λ/slack) W)·S with S = diag(scale) giving a unit diagonal;
    classes nobody outputs get a 1 so that their α stays put."""
    n_classes = W.shape[2]
    diagonal = q + ~live + _RIDGE
    hessian = diagonal[:, :, None] * np.eye(n_classes) - q[:, :, None] * q[:, None, :]
    hessian += np.matmul(W.transpose(0, 2, 1), W * weight[:, :, None])
    scale = 1 / np.sqrt(np.einsum("nii->ni", hessian))
    hessian *= scale[:, :, None] * scale[:, None, :]
    hessian += _RELATIVE_RIDGE * np.eye(n_classes)
    return hessian, scale


def _step_to_boundary(
    slack: np.ndarray, d_slack: np.ndarray, lam: np.ndarray, d_lam: np.ndarray
) -> np.ndarray:
    """Largest t (per example, as a column) keeping slack + t·d_slack and lam + t·d_lam ≥ 0."""
    x, dx = np.concatenate([slack, lam], axis=1), np.concatenate([d_slack, d_lam], axis=1)
    ratio = np.divide(-x, dx, out=np.full_like(x, np.inf), where=dx < 0)
    return ratio.min(axis=1, keepdims=True)


def _logsumexp(alpha: np.ndarray, live: np.ndarray) -> np.ndarray:
    masked = np.where(live, alpha, -np.inf)
    top = masked.max(axis=1)
    return top + np.log(np.exp(masked - top[:, None]).sum(axis=1))


def _matvec(W: np.ndarray, x: np.ndarray) -> np.ndarray:
    """W_h · x for every example and model: (n, m, C), (n, C) -> (n, m)."""
    return (W @ x[:, :, None])[..., 0]
