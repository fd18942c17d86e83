"""Small synthetic classification problems for trainer tests: Gaussian features whose label is
the argmax of a random linear map of the first few, split by position into train, val, test."""

from __future__ import annotations

import numpy as np
import torch

from rashomon.engine.model import TrainingData


def linear_problem(
    seed: int,
    n: int,
    features: int,
    classes: int,
    val: tuple[int, int],
    informative: int = 3,
    dtype: torch.dtype = torch.float64,
    shape: tuple[int, ...] | None = None,
) -> TrainingData:
    """``val``: the (first, end) rows of the validation split; the test split follows it."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features))
    labels = (x[:, :informative] @ rng.standard_normal((informative, classes))).argmax(1)
    split = np.zeros(n, np.int8)
    split[val[0] : val[1]], split[val[1] :] = 1, 2
    return TrainingData.from_arrays(x, labels, split, classes, dtype, shape=shape)
