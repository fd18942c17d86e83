"""A user's own models, as the ``module`` family imports them (``module: "_nets:LayerNormNet"``):
two that train (LayerNorm; BatchNorm with running statistics) and some that fail in every way a
class can, each at a known place."""

from __future__ import annotations

import math

import torch
from torch import nn


class LayerNormNet(nn.Module):
    def __init__(self, in_shape, n_classes, width=8):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(in_shape), width), nn.LayerNorm(width), nn.Tanh()
        )
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):
        return self.head(self.body(x))


class BatchNormNet(nn.Module):
    """1-D convolution, BatchNorm (running statistics per model), pooling, linear head."""

    def __init__(self, in_shape, n_classes, width=4):
        super().__init__()
        channels, length = in_shape
        self.conv = nn.Conv1d(channels, width, 3, padding=1)
        self.norm = nn.BatchNorm1d(width)
        self.head = nn.Linear(width * (length // 2), n_classes)

    def forward(self, x):
        x = torch.relu(self.norm(self.conv(x)))
        return self.head(nn.functional.max_pool1d(x, 2).flatten(1))


class FailsInInit(nn.Module):
    def __init__(self, in_shape, n_classes, width=8):
        super().__init__()
        raise ValueError(f"width {width} is too small")  # line 43


class WrongOutput(nn.Module):
    def __init__(self, in_shape, n_classes):
        super().__init__()
        self.head = nn.Linear(math.prod(in_shape), n_classes + 1)

    def forward(self, x):
        return self.head(x.flatten(1))


class FailsInForward(nn.Module):
    def __init__(self, in_shape, n_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(5, 4))  # expects 5 features
        self.head = nn.Linear(4, n_classes)

    def forward(self, x):
        return self.head(self.body(x))


class RandomForward(nn.Module):
    def __init__(self, in_shape, n_classes):
        super().__init__()
        self.head = nn.Linear(math.prod(in_shape), n_classes)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.head(x.flatten(1)))


class Lazy(nn.Module):
    def __init__(self, in_shape, n_classes):
        super().__init__()
        self.head = nn.LazyLinear(n_classes)

    def forward(self, x):
        return self.head(x.flatten(1))


class NotAModule:
    def __init__(self, in_shape, n_classes):
        pass


def make_net(in_shape, n_classes):
    return LayerNormNet(in_shape, n_classes)


class DenseBatchNorm(nn.Module):
    """BatchNorm over features: in train mode it needs two examples or more."""

    def __init__(self, in_shape, n_classes):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(in_shape), 4), nn.BatchNorm1d(4)
        )
        self.head = nn.Linear(4, n_classes)

    def forward(self, x):
        return self.head(self.body(x))


class FunctionalHead(nn.Module):
    """A linear body and logits from a parameter of the model itself, not from a layer."""

    def __init__(self, in_shape, n_classes):
        super().__init__()
        self.body = nn.Linear(math.prod(in_shape), 5)
        self.out = nn.Parameter(torch.randn(5, n_classes) * 0.1)

    def forward(self, x):
        return torch.tanh(self.body(x.flatten(1))) @ self.out


class SpareLayerNet(LayerNormNet):
    """A LayerNormNet with a layer its forward never uses (left over from an experiment)."""

    def __init__(self, in_shape, n_classes, width=8):
        super().__init__(in_shape, n_classes, width)
        self.spare = nn.Linear(width, width)
