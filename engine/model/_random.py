"""Per-model random streams.

Every source of randomness belongs to one model and one seed axis — ``init`` draws the initial
weights (and a subspace model's projection), ``order`` the minibatch order, the dropout masks and
the label noise, ``data`` the bootstrap resample — and is seeded from that axis alone, each use
from a stream of its own (so adding label noise changes neither the order nor the masks). A
model therefore sees the same random numbers whichever pack it trains in and whoever its
pack-mates are, which is what makes pack invariance, divergence isolation and resume-after-kill
exact rather than approximately true.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

INIT = "init"
ORDER = "order"
DROPOUT = "dropout"
LABEL_NOISE = "label_noise"
SUBSPACE = "subspace"
DATA = "data"


def stream_seed(stream: str, seed: int, *counters: int) -> int:
    """A 63-bit seed for ``torch.Generator`` that depends only on the stream, seed and counters."""
    key = ":".join([stream, str(seed), *map(str, counters)]).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def generator(stream: str, seed: int, *counters: int, device: torch.device | str = "cpu"):
    """A fresh generator for one model's stream (e.g. ``generator(ORDER, 3, epoch)``)."""
    return torch.Generator(device=device).manual_seed(stream_seed(stream, seed, *counters))


def numpy_generator(stream: str, seed: int, *counters: int) -> np.random.Generator:
    """A fresh PCG64 generator for one model's stream, for draws made on every step."""
    return np.random.Generator(np.random.PCG64(stream_seed(stream, seed, *counters)))
