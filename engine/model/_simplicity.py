"""Simplicity statistics: how many directions a model really uses, batched over the pack.

The effective rank of a matrix A (Roy & Vetterli 2007, "The effective rank: a measure of
effective dimensionality") is exp(H(p)), H the Shannon entropy (nats) of its normalised singular
values p_i = σ_i / Σ_j σ_j: between 1 (one direction) and rank(A) (all singular values equal);
0 for a zero matrix. Two matrices per model:

- ``feature_effective_rank``: the penultimate-layer features on the curvature set, the n × h
  matrix of the last layer's inputs (eval mode; not centred), as the family finds them
  (`penultimate`): a dense model's last hidden activations (a logistic model's: the data), a
  module's input to the layer that produces the logits.
- ``weight_effective_rank``: the first layer's weight matrix (`first_weights`), one row per
  output unit; a convolution's kernels flattened per output channel.

One batched SVD (``torch.linalg.svdvals``) per matrix, in float64.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rashomon.engine.model._build import Family


def effective_rank(matrices: torch.Tensor) -> torch.Tensor:
    """exp(entropy of the normalised singular values) of each matrix of a (M, a, b) batch."""
    singular = torch.linalg.svdvals(matrices.double())
    total = singular.sum(dim=-1, keepdim=True)
    p = singular / total.clamp_min(torch.finfo(torch.float64).tiny)
    entropy = -torch.special.xlogy(p, p).sum(dim=-1)
    return torch.where(total.squeeze(-1) > 0, entropy.exp(), 0.0)


@torch.no_grad()
def simplicity_statistics(
    family: Family,
    params: Sequence[torch.Tensor],
    inputs: torch.Tensor,
    buffers: Sequence[torch.Tensor] = (),
) -> dict[str, np.ndarray]:
    """Both effective ranks of each model, float64 (M,); NaN where the family has no such
    layer (a module whose logits come from no layer of its own)."""
    n_models = len(params[0])
    features = family.penultimate(params, inputs, list(buffers))
    weights = family.first_weights(params)
    found = {"feature_effective_rank": features, "weight_effective_rank": weights}
    return {
        name: np.full(n_models, np.nan) if matrix is None else effective_rank(matrix).cpu().numpy()
        for name, matrix in found.items()
    }
