"""The types of one pack's computation: what its models share, what each one is, the data they
train on and what comes back. Plain data, so every layer above can build and read them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from rashomon.jobs import SPLITS, ModuleRef

PER_MODEL_HPARAMS = ("lr", "momentum", "weight_decay", "dropout", "rho", "label_noise")
PER_MODEL_FLAGS = ("sam_normalize", "sam_adaptive")
# what `PackResult.timings` splits a pack's seconds into (the estimate scales each by its work)
PHASES = ("training", "evaluation", "flatness")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Examples per batched forward pass when a pack is evaluated: a pack of 54 reference MLPs then
# holds 3.5 MB of activations, which stay in cache (1024 examples: a third of evaluation slower).
EVALUATION_CHUNK = 256
EVALUATION_ELEMENTS = 1 << 20  # activations of one such pass of an nn.Module family: cache-sized


@dataclass(frozen=True)
class TrainingData:
    """The prepared dataset as tensors on the trainer's device, shared by every pack. Features
    stay flat, (N, d); a family that wants shaped examples reshapes them to ``shape``."""

    features: torch.Tensor  # (N, d)
    labels: torch.Tensor  # (N,) int64
    split_indices: Mapping[str, torch.Tensor]  # split -> sorted row indices
    n_classes: int
    shape: tuple[int, ...] | None = None  # one example's (C, L) or (C, H, W); None: a table

    @classmethod
    def from_arrays(
        cls,
        features: np.ndarray,
        labels: np.ndarray,
        split: np.ndarray,
        n_classes: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        shape: tuple[int, ...] | None = None,
    ) -> TrainingData:
        indices = {name: np.flatnonzero(split == code) for code, name in enumerate(SPLITS)}
        return cls(
            features=torch.as_tensor(np.array(features), dtype=dtype, device=device),
            labels=torch.as_tensor(np.array(labels), dtype=torch.int64, device=device),
            split_indices={k: torch.as_tensor(v, device=device) for k, v in indices.items()},
            n_classes=n_classes,
            shape=None if shape is None else tuple(shape),
        )

    @property
    def example_shape(self) -> tuple[int, ...]:
        return self.shape or (int(self.features.shape[1]),)


@dataclass(frozen=True)
class PackSettings:
    """What every model of a pack shares (the structural hyperparameters and job settings)."""

    family: str
    hidden: tuple[int, ...]
    activation: str
    epochs: int
    batch_size: int
    optimizer: str
    nesterov: bool
    schedule: str
    betas: tuple[float, float]
    eps: float
    dtype: str
    channels: tuple[int, ...] = ()  # cnn only, like kernel, stride and pool
    kernel: int = 0
    stride: int = 0
    pool: int = 0
    module: ModuleRef | None = None  # the user's class of a module pack
    subspace_dim: int = 0  # d > 0: train d coordinates of a random subspace (Li et al. 2018)


@dataclass(frozen=True)
class ModelSpec:
    """One model of a pack: its seeds and per-model hyperparameters."""

    init_seed: int
    order_seed: int
    data_seed: int
    lr: float
    momentum: float
    weight_decay: float
    dropout: float
    rho: float = 0.0  # sam: the radius of the ascent step
    sam_normalize: bool = True  # sam: ε = ρ g/‖g‖ (SAM), else ε = ρ g (USAM)
    sam_adaptive: bool = False  # sam: ASAM's scale T = |w| + η on weights
    label_noise: float = 0.0  # probability that a minibatch label is a random class


@dataclass
class PackResult:
    status: list[str]  # "ok" | "diverged", per model
    metrics: dict[str, np.ndarray]  # "{split}_loss", "{split}_acc" -> (M,) float64
    probabilities: dict[str, np.ndarray]  # split -> (M, n_split, C) float32
    parameters: dict[str, torch.Tensor]  # final stacked parameters and buffers, on CPU
    seconds: float
    history: dict[str, np.ndarray] = field(default_factory=dict)  # column -> (M, epochs)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase (PHASES)


def per_model(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(M,) values shaped to broadcast over a stacked tensor (M, ...) such as ``like``; real
    values in its dtype and on its device, masks left as they are."""
    shaped = values.view(-1, *([1] * (like.dim() - 1)))
    return shaped.to(like) if shaped.is_floating_point() else shaped
