"""Rashomon capacity against closed forms and a plain per-example Blahut–Arimoto loop."""

from __future__ import annotations

import numpy as np
import pytest

from rashomon.analysis import _capacity
from rashomon.analysis._capacity import rashomon_capacity

pytestmark = pytest.mark.filterwarnings("error")


def _models_first(channels: np.ndarray) -> np.ndarray:
    """(n examples, m models, C classes) -> the (m, n, C) layout rashomon_capacity takes."""
    return np.ascontiguousarray(np.transpose(channels, (1, 0, 2)))


def _blahut_arimoto(channel: np.ndarray, gap: float = 1e-11, max_iter: int = 100_000) -> float:
    """RC of one (models × classes) channel by textbook Blahut–Arimoto, to within ``gap``."""
    r = np.full(len(channel), 1 / len(channel))
    log_w = np.log(np.where(channel > 0, channel, 1))
    for _ in range(max_iter):
        q = r @ channel
        divergence = np.sum(channel * (log_w - np.log(np.where(q > 0, q, 1))), axis=1)
        upper = divergence.max()
        lower = upper + np.log(r @ np.exp(divergence - upper))
        if np.exp(upper) - np.exp(lower) <= gap:
            return (np.exp(upper) + np.exp(lower)) / 2
        r = r * np.exp(divergence - upper)
        r /= r.sum()
    raise AssertionError("reference Blahut–Arimoto did not converge")


def _binary_entropy_nats(t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    inside = (t > 0) & (t < 1)
    safe = np.where(inside, t, 0.5)
    return np.where(inside, -safe * np.log(safe) - (1 - safe) * np.log1p(-safe), 0.0)


def _two_row_capacity(a: float, b: float) -> float:
    """RC of rows (1 − a, a), (1 − b, b): golden-section search over the input weight."""

    def information(w: float) -> float:
        return float(
            _binary_entropy_nats(a + w * (b - a))
            - (1 - w) * _binary_entropy_nats(a)
            - w * _binary_entropy_nats(b)
        )

    lo, hi, ratio = 0.0, 1.0, (np.sqrt(5) - 1) / 2
    for _ in range(200):
        x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if information(x1) < information(x2):
            lo = x1
        else:
            hi = x2
    return float(np.exp(information((lo + hi) / 2)))


def _random_binary(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    channels = rng.dirichlet(np.ones(2), size=(n, m))
    channels[: n // 4, 0] = [1, 0]  # certain rows: 0·log 0 terms
    channels[n // 4 : n // 2, 1] = [0, 1]
    channels[n // 2 : n // 2 + 2, :2] = [[1, 0], [0, 1]]
    return channels


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_models_that_agree_give_one(n_classes):
    rng = np.random.default_rng(0)
    rows = rng.dirichlet(np.ones(n_classes), size=(1, 30))
    rows[0, :3] = np.eye(n_classes)[0]
    probabilities = np.repeat(rows, 7, axis=0)
    np.testing.assert_allclose(rashomon_capacity(probabilities), 1, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_certain_models_on_every_class_give_number_of_classes(n_classes):
    one_hot = np.eye(n_classes)[:, None, :]
    rng = np.random.default_rng(n_classes)
    mixtures = rng.dirichlet(np.ones(n_classes), size=(20, 1))
    padded = np.concatenate([one_hot, one_hot[:2], mixtures, one_hot[-1:]], axis=0)
    for probabilities in (one_hot, padded):
        rc = rashomon_capacity(np.repeat(probabilities, 3, axis=1))
        np.testing.assert_allclose(rc, n_classes, rtol=0, atol=1e-9)


def test_one_model_gives_one():
    rng = np.random.default_rng(1)
    for n_classes in (2, 4):
        probabilities = rng.dirichlet(np.ones(n_classes), size=(1, 10))
        np.testing.assert_array_equal(rashomon_capacity(probabilities), np.ones(10))


def test_binary_closed_form_matches_blahut_arimoto():
    rng = np.random.default_rng(1)
    channels = _random_binary(rng, n=16, m=4)
    expected = [_blahut_arimoto(channel) for channel in channels]
    rc = rashomon_capacity(_models_first(channels))
    np.testing.assert_allclose(rc, expected, rtol=0, atol=1e-9)


def test_binary_closed_form_for_nearly_equal_rows():
    rng = np.random.default_rng(2)
    a = np.concatenate([rng.random(12), [0.0, 0.0, 1 - 1e-12, 0.5]])
    b = np.minimum(a + 10.0 ** -rng.uniform(1, 9, size=a.size), 1.0)
    channels = np.stack([np.stack([1 - a, a], -1), np.stack([1 - b, b], -1)], axis=1)
    expected = [_two_row_capacity(lo, hi) for lo, hi in zip(a, b, strict=True)]
    rc = rashomon_capacity(_models_first(channels))
    np.testing.assert_allclose(rc, expected, rtol=0, atol=1e-12)


def _interior_heavy(rng: np.random.Generator, n: int) -> np.ndarray:
    """Three extreme rows in four classes and twenty mixtures of them: a sparse optimum."""
    vertices = rng.dirichlet(np.ones(4), size=(n, 3))
    weights = rng.dirichlet(np.ones(3), size=(n, 20))
    return np.concatenate([vertices, weights @ vertices], axis=1)


def _with_zeros(rng: np.random.Generator, n: int) -> np.ndarray:
    channels = rng.dirichlet(np.full(5, 0.5), size=(n, 7))
    channels[channels < 0.15] = 0
    channels[:, 0] = np.eye(5)[0]
    return channels / channels.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize(
    "make",
    [
        lambda rng, n: rng.dirichlet(np.ones(4), size=(n, 6)),
        lambda rng, n: rng.dirichlet(np.full(5, 0.3), size=(n, 8)),
        lambda rng, n: rng.dirichlet(np.full(6, 0.5), size=(n, 12)),
        _interior_heavy,
        _with_zeros,
    ],
    ids=["dirichlet-6x4", "sparse-8x5", "dirichlet-12x6", "interior-heavy", "exact-zeros"],
)
def test_multiclass_matches_blahut_arimoto(make):
    channels = make(np.random.default_rng(3), 10)
    expected = [_blahut_arimoto(channel) for channel in channels]
    rc = rashomon_capacity(_models_first(channels))
    np.testing.assert_allclose(rc, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize(("m", "n_classes"), [(3, 2), (40, 2), (2, 6), (50, 4), (300, 10)])
def test_between_one_and_number_of_classes(m, n_classes):
    rng = np.random.default_rng(m + n_classes)
    probabilities = rng.dirichlet(np.full(n_classes, 0.2), size=(m, 40))
    rc = rashomon_capacity(probabilities)
    assert rc.dtype == np.float64 and rc.shape == (40,)
    assert np.all(rc >= 1) and np.all(rc <= min(m, n_classes) + 1e-9)


@pytest.mark.parametrize("unused_classes", [0, 1])
def test_binary_symmetric_channel(unused_classes):
    e = np.array([0.0, 0.05, 0.2, 0.5])
    rows = np.stack([np.stack([1 - e, e], -1), np.stack([e, 1 - e], -1)])
    rows = np.concatenate([rows, np.zeros((2, e.size, unused_classes))], axis=-1)
    bits = 1 - _binary_entropy_nats(e) / np.log(2)
    np.testing.assert_allclose(rashomon_capacity(rows), 2**bits, rtol=0, atol=1e-9)


@pytest.mark.parametrize("unused_classes", [0, 1])
def test_z_channel(unused_classes):
    p = np.array([0.1, 0.5, 0.9])
    rows = np.stack([np.stack([np.ones_like(p), 0 * p], -1), np.stack([p, 1 - p], -1)])
    rows = np.concatenate([rows, np.zeros((2, p.size, unused_classes))], axis=-1)
    expected = 1 + (1 - p) * p ** (p / (1 - p))
    np.testing.assert_allclose(rashomon_capacity(rows), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("n_classes", [3, 5])
def test_symmetric_channel(n_classes):
    e = np.array([0.01, 0.3, 0.6])
    rows = np.array([(1 - ei) * np.eye(n_classes) + ei / n_classes for ei in e])
    entropy = -np.sum(rows[:, 0] * np.log(rows[:, 0]), axis=1)
    expected = n_classes * np.exp(-entropy)  # log C − H(row) nats
    rc = rashomon_capacity(np.transpose(rows, (1, 0, 2)))
    np.testing.assert_allclose(rc, expected, rtol=0, atol=1e-9)


def test_known_small_channels():
    three = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1 / 3, 1 / 3, 1 / 3]])[:, None, :]
    two = np.array([[1, 0], [0.5, 0.5], [0, 1]])[:, None, :]
    np.testing.assert_allclose(rashomon_capacity(three), [3], rtol=0, atol=1e-9)
    np.testing.assert_allclose(rashomon_capacity(two), [2], rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_invariant_to_order_of_models_and_classes(n_classes):
    rng = np.random.default_rng(4)
    probabilities = rng.dirichlet(np.full(n_classes, 0.5), size=(9, 25))
    rc = rashomon_capacity(probabilities)
    shuffled = probabilities[rng.permutation(9)][..., rng.permutation(n_classes)]
    np.testing.assert_allclose(rashomon_capacity(shuffled), rc, rtol=0, atol=1e-9)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_float32_input(n_classes):
    rng = np.random.default_rng(7)
    probabilities = rng.dirichlet(np.ones(n_classes), size=(6, 20)).astype(np.float32)
    rc = rashomon_capacity(probabilities)
    assert rc.dtype == np.float64
    channels = probabilities.astype(np.float64).transpose(1, 0, 2)
    channels /= channels.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(rc, [_blahut_arimoto(c) for c in channels], rtol=0, atol=1e-9)


def test_tiny_negative_entries_are_clipped():
    rng = np.random.default_rng(8)
    for n_classes in (2, 4):
        clipped = rng.dirichlet(np.ones(n_classes - 1), size=(5, 6))
        clipped = np.concatenate([np.zeros((5, 6, 1)), clipped], axis=-1)
        noisy = clipped.copy()
        noisy[..., 0] = -9e-7
        np.testing.assert_allclose(
            rashomon_capacity(noisy), rashomon_capacity(clipped), rtol=0, atol=1e-12
        )


def test_results_do_not_depend_on_chunking(monkeypatch):
    rng = np.random.default_rng(6)
    for n_classes in (2, 3):
        probabilities = rng.dirichlet(np.ones(n_classes), size=(7, 30))
        whole = rashomon_capacity(probabilities)
        monkeypatch.setattr(_capacity, "_CHUNK_ELEMENTS", 50)
        monkeypatch.setattr(_capacity, "_BLOCK_ELEMENTS", 50)
        np.testing.assert_allclose(rashomon_capacity(probabilities), whole, rtol=0, atol=1e-9)
        monkeypatch.undo()


@pytest.mark.parametrize(
    ("probabilities", "message"),
    [
        (np.full((2, 3), 0.5), "shape"),
        (np.full((1, 2, 3, 2), 0.5), "shape"),
        (np.ones((2, 3, 1)), "at least 2 classes"),
        (np.ones((0, 3, 2)) / 2, "at least one model"),
        (np.array([[[0.5, np.nan]], [[0.5, 0.5]]]), "finite"),
        (np.array([[[np.inf, 0.5]], [[0.5, 0.5]]]), "finite"),
        (np.array([[[1.1, -0.1]], [[0.5, 0.5]]]), "non-negative"),
        (np.array([[[0.5, 0.2, 0.1]], [[0.5, 0.5, 0]]]), "sum to 1"),
        (np.array([[[1 + 1j, 0]], [[0.5, 0.5]]]), "real"),
    ],
)
def test_bad_input_raises(probabilities, message):
    with pytest.raises(ValueError, match=message):
        rashomon_capacity(probabilities)


def test_bad_settings_raise():
    probabilities = np.full((2, 1, 3), 1 / 3)
    with pytest.raises(ValueError, match="tol"):
        rashomon_capacity(probabilities, tol=0)
    with pytest.raises(ValueError, match="max_iter"):
        rashomon_capacity(probabilities, max_iter=-1)


def test_unfinished_examples_raise_instead_of_returning_one():
    rng = np.random.default_rng(7)
    probabilities = rng.dirichlet(np.ones(10), size=(10, 8))
    probabilities[:, :2] = np.full(10, 0.1)  # two examples where every model agrees
    with pytest.raises(RuntimeError, match="6 of 8 examples"):
        rashomon_capacity(probabilities, max_iter=3)
    rc = rashomon_capacity(probabilities)
    np.testing.assert_allclose(rc[:2], 1, rtol=0, atol=1e-12)
    assert np.all(rc[2:] > 1.2)
