"""A pack's learning curves: one record per model and epoch (SPEC §5, ``history/``).

At the end of epoch e (1 … epochs), for every model:

- ``train_loss``: the mean cross-entropy of the epoch's training examples as the optimizer saw
  them — each minibatch's loss at the parameters before its step, with its dropout masks and its
  noisy labels — weighted by minibatch size (the last minibatch may be smaller);
- ``val_loss``, ``val_acc``: the validation split in eval mode, as the models table measures
  it (the last epoch's are the table's own);
- ``lr``: the learning rate of the epoch's last step (the base rate times the schedule's factor);
- ``hessian_top_eig`` (``flatness.track``): the largest Hessian eigenvalue of the mean
  cross-entropy on the curvature set, by ``track_iterations`` Lanczos steps batched over the
  pack, each model warm-started from its previous epoch's top Ritz vector (progressive
  sharpening and the edge of stability, Cohen et al. 2021).

Everything stays on the device until the pack is done: no host round trip per step or epoch.
A model that diverged keeps being recorded: its values are what its frozen parameters give
(usually NaN), its tracked eigenvalue NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rashomon.engine.model._flatness import FlatnessSettings, Parameters, _norm, _Problem
from rashomon.engine.model._pack import TrainingData
from rashomon.jobs import HISTORY_COLUMNS


class SharpnessTracker:
    """The top Hessian eigenvalue of every live model, warm-started epoch after epoch."""

    def __init__(self, family, inputs: torch.Tensor, labels: torch.Tensor, settings) -> None:
        self.family, self.inputs, self.labels, self.settings = family, inputs, labels, settings
        self.vector: Parameters | None = None

    def measure(
        self, params: Sequence[torch.Tensor], buffers: Sequence[torch.Tensor], alive: torch.Tensor
    ) -> torch.Tensor:
        """(M,) float64 on the CPU; NaN for the models not alive."""
        keep = alive.nonzero().squeeze(1)
        values = torch.full((len(alive),), float("nan"), dtype=torch.float64)
        if not len(keep):
            return values
        problem = _Problem(self.family, [p[keep].detach() for p in params], self.inputs,
                           self.labels, self.settings,
                           buffers=[b[keep] for b in buffers])  # fmt: skip
        fresh = problem.start_vector()
        if self.vector is None:
            self.vector = [torch.zeros_like(p) for p in params]
            start = fresh
        else:  # a Ritz vector that vanished or overflowed starts afresh
            start = [v[keep] for v in self.vector]
            length = _norm(start)
            lost = ~torch.isfinite(length) | (length == 0)
            start = [torch.where(lost.view(-1, *[1] * (s.dim() - 1)), f, s)
                     for s, f in zip(start, fresh, strict=True)]  # fmt: skip
        found, vector = problem.top_eigenpair(start, self.settings.track_iterations)
        for full, part in zip(self.vector, vector, strict=True):
            full[keep] = part
        values[keep.cpu()] = found
        return values


class History:
    """The records of a pack being trained, kept on the device until `arrays`."""

    def __init__(self, family, data: TrainingData, flatness: FlatnessSettings | None, rows):
        self.columns: dict[str, list[torch.Tensor]] = {name: [] for name in HISTORY_COLUMNS[:4]}
        self.tracker = None
        if flatness is not None and flatness.track:
            self.columns["hessian_top_eig"] = []
            self.tracker = SharpnessTracker(family, data.features[rows], data.labels[rows],
                                            flatness)  # fmt: skip

    def record(self, **values: torch.Tensor) -> None:
        for name, value in values.items():
            self.columns[name].append(value.detach().double())

    def arrays(self, last_val_loss: np.ndarray, last_val_acc: np.ndarray) -> dict[str, np.ndarray]:
        """Each column as (M, epochs) float64; the last epoch's validation values are the
        models table's (``last_*``), measured on the same parameters by the same pass."""
        out = {
            name: torch.stack([v.cpu() for v in values], dim=1).numpy()
            for name, values in self.columns.items()
            if values
        }
        out["val_loss"] = np.concatenate([out.get("val_loss", _empty(last_val_loss)),
                                          last_val_loss[:, None]], axis=1)  # fmt: skip
        out["val_acc"] = np.concatenate([out.get("val_acc", _empty(last_val_acc)),
                                         last_val_acc[:, None]], axis=1)  # fmt: skip
        return out


def _empty(like: np.ndarray) -> np.ndarray:
    return np.empty((len(like), 0))
