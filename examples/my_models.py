"""A user's own model for rashomon's ``module`` family (``model.module: "my_models:SmallResNet"``).

rashomon builds it as ``SmallResNet(in_shape=..., n_classes=..., **model.kwargs)`` once per model,
under that model's init seed, and trains a pack of them batched. ``in_shape`` is one example's
shape — (channels, length) for a signal, (channels, height, width) for an image — so one class
serves ``mnist1d`` and ``digits`` alike. What a module may do: any layers, BatchNorm included
(each model keeps its own running statistics); what it may not: draw random numbers in
``forward`` (``nn.Dropout``) — every model's randomness comes from its own seeds.
"""

from __future__ import annotations

from torch import nn


class Residual(nn.Module):
    """conv → BatchNorm → ReLU → conv → BatchNorm, added to its input, then ReLU."""

    def __init__(self, width: int, conv: type, norm: type) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(width, width, 3, padding=1, bias=False),
            norm(width),
            nn.ReLU(),
            conv(width, width, 3, padding=1, bias=False),
            norm(width),
        )
        self.out = nn.ReLU()

    def forward(self, x):
        return self.out(x + self.body(x))


class SmallResNet(nn.Module):
    """A stem convolution, ``blocks`` residual blocks of ``width`` channels, global average
    pooling and a linear head; 1-D or 2-D from ``in_shape``."""

    def __init__(self, in_shape, n_classes, width: int = 16, blocks: int = 2) -> None:
        super().__init__()
        two_d = len(in_shape) == 3
        conv = nn.Conv2d if two_d else nn.Conv1d
        norm = nn.BatchNorm2d if two_d else nn.BatchNorm1d
        self.stem = nn.Sequential(
            conv(in_shape[0], width, 3, padding=1, bias=False), norm(width), nn.ReLU()
        )
        self.blocks = nn.Sequential(*(Residual(width, conv, norm) for _ in range(blocks)))
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(x.flatten(2).mean(dim=2))
