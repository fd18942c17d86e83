"""Training in a random subspace: θ = θ₀ + P z, with only z learnt (Li et al., ICLR 2018).

P (D × d) is a fixed random projection drawn from each model's init seed, sparse as in Li et
al.'s sparse variant ("very sparse random projections", Li, Hastie & Church 2006): every column
has ⌈√D⌉ entries ±1 at uniformly drawn rows, then is scaled to unit length (a row drawn twice
adds up; the length counts it once). Dense, P would be D·d numbers per model — 10⁸ for a model
of 10⁵ parameters in 10³ dimensions; sparse it is d·√D, so a pack of 64 such models holds
about 2·10⁷ entries. A pack's projections are one flat list of (row, value) pairs, so θ for
every model is one ``index_add`` and the gradient with respect to z one gather, with no loop
over models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from rashomon.engine.model import _random


def nonzeros_per_column(n_parameters: int) -> int:
    return max(1, math.ceil(math.sqrt(n_parameters)))


def projection(n_parameters: int, dim: int, init_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One model's P as (rows, values), each (dim, nonzeros per column), float64 values."""
    per_column = nonzeros_per_column(n_parameters)
    gen = _random.generator(_random.SUBSPACE, init_seed, dim)
    rows = torch.randint(n_parameters, (dim, per_column), generator=gen)
    signs = torch.randint(0, 2, (dim, per_column), generator=gen, dtype=torch.float64) * 2 - 1
    keys = torch.arange(dim).unsqueeze(1) * n_parameters + rows  # (column, row), once each
    unique, inverse = torch.unique(keys, return_inverse=True)
    entries = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse.view(-1),
                                                                       signs.view(-1))  # fmt: skip
    squared = torch.zeros(dim, dtype=torch.float64).index_add_(
        0, unique // n_parameters, entries.square()
    )
    length = squared.sqrt().unsqueeze(1)
    values = torch.where(length > 0, signs / length.clamp_min(1e-300), 0.0)
    return rows, values


class Subspace:
    """θ = θ₀ + P z for every model of a pack; ``parameters(z)`` is differentiable in z."""

    def __init__(self, initial: Sequence[torch.Tensor], init_seeds: Sequence[int], dim: int):
        self.shapes = [p.shape[1:] for p in initial]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.n_models, n_parameters = len(initial[0]), sum(self.sizes)
        self.dim, self.per_column = dim, nonzeros_per_column(n_parameters)
        self.origin = torch.cat([p.detach().flatten(1) for p in initial], dim=1)
        device, dtype = self.origin.device, self.origin.dtype
        drawn = [projection(n_parameters, dim, seed) for seed in init_seeds]
        offsets = torch.arange(self.n_models).view(-1, 1, 1) * n_parameters
        self.rows = (torch.stack([r for r, _ in drawn]) + offsets).view(-1).to(device)
        self.values = torch.stack([v for _, v in drawn]).view(self.n_models, -1).to(device, dtype)

    def start(self) -> torch.Tensor:
        """z = 0: every model starts at its θ₀."""
        return torch.zeros(self.n_models, self.dim, dtype=self.origin.dtype,
                           device=self.origin.device)  # fmt: skip

    def parameters(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The stacked parameter tensors θ₀ + P z, shaped like the family's."""
        source = z.repeat_interleave(self.per_column, dim=1) * self.values
        flat = self.origin.reshape(-1).index_add(0, self.rows, source.reshape(-1))
        flat = flat.view(self.n_models, -1)
        return [
            part.reshape(self.n_models, *shape)
            for part, shape in zip(flat.split(self.sizes, dim=1), self.shapes, strict=True)
        ]
