"""The ``cnn`` family: conv → activation → max-pool blocks, then dense layers, 1-D or 2-D.

Each model is a `ConvNet`, built by ``torch.nn`` under its init seed (PyTorch's default
initialisation), like any module. Blocks pad each side with ⌊(kernel − 1)/2⌋ zeros ("same" for
an odd kernel at stride 1) and pool with a window and stride of ``pool`` (1: no pooling; a
remainder that fills no window is dropped, as by ``F.max_pool1d``); the dense ``hidden`` layers
follow the flattened last block, with the model's dropout masks after each of them, as in the mlp.

Pooling is the maximum over each window (``unflatten`` + ``amax``): the values of
``F.max_pool1d``/``2d`` without their index bookkeeping (a third faster on CPU; the gradient of an
exact tie is shared instead of given to one element, and after a ReLU such a tie is a zero, whose
gradient is zero either way). With a ReLU the window's maximum is taken first — the same values
and gradients (ReLU is monotone), on half the elements.

A pack runs without ``vmap``: the model axis is folded into the channels, ``(batch, models ×
channels, …)``, and each block is one grouped convolution (``groups`` = models) — what ``vmap``
does per layer, without moving the model axis back and forth around every operation (measured
faster on CPU: see benchmarks/bench_cnn.py). The dense layers are batched matmuls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rashomon.engine.model._families import ACTIVATIONS
from rashomon.engine.model._generic import ModuleFamily
from rashomon.jobs import UserError

_CONV = {1: (nn.Conv1d, F.conv1d), 2: (nn.Conv2d, F.conv2d)}


def max_pool(x: torch.Tensor, pool: int, dims: int) -> torch.Tensor:
    """Non-overlapping max-pooling over the last ``dims`` axes (windows of ``pool``, floor)."""
    for axis in range(x.dim() - dims, x.dim()):
        size = x.shape[axis] // pool * pool
        x = x.narrow(axis, 0, size).unflatten(axis, (size // pool, pool)).amax(axis + 1)
    return x


def block_output(x: torch.Tensor, activation: str, pool: int, dims: int) -> torch.Tensor:
    """activation → max-pool of a convolution's output."""
    if pool == 1:
        return ACTIVATIONS[activation](x)
    if activation == "relu":  # monotone: pooling first gives the same values on fewer elements
        return torch.relu(max_pool(x, pool, dims))
    return max_pool(ACTIVATIONS[activation](x), pool, dims)


def block_sizes(
    in_shape: Sequence[int], channels: Sequence[int], kernel: int, stride: int, pool: int
) -> list[tuple[int, ...]]:
    """The spatial size after each block, starting with the input's."""
    sizes = [tuple(in_shape[1:])]
    padding = (kernel - 1) // 2
    for _ in channels:
        convolved = [(s + 2 * padding - kernel) // stride + 1 for s in sizes[-1]]
        sizes.append(tuple(s // pool for s in convolved) if min(convolved) > 0 else (0,))
    return sizes


class ConvNet(nn.Module):
    """One model of the cnn family (an ordinary ``nn.Module``: the reference the pack matches)."""

    def __init__(
        self,
        in_shape: Sequence[int],
        n_classes: int,
        channels: Sequence[int],
        kernel: int,
        stride: int,
        pool: int,
        hidden: Sequence[int],
        activation: str,
    ) -> None:
        super().__init__()
        conv = _CONV[len(in_shape) - 1][0]
        self.pool, self.dims, self.activation = pool, len(in_shape) - 1, activation
        widths = [in_shape[0], *channels]
        self.convs = nn.ModuleList(
            conv(a, b, kernel, stride=stride, padding=(kernel - 1) // 2)
            for a, b in pairwise(widths)
        )
        last = block_sizes(in_shape, channels, kernel, stride, pool)[-1]
        dense = [channels[-1] * math.prod(last), *hidden, n_classes]
        self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(dense))

    def forward(self, x: torch.Tensor, masks: Sequence[torch.Tensor] | None = None):
        for conv in self.convs:
            x = block_output(conv(x), self.activation, self.pool, self.dims)
        x = x.flatten(1)
        activation = ACTIVATIONS[self.activation]
        for i, layer in enumerate(self.dense):
            x = layer(x)
            if i < len(self.dense) - 1:
                x = activation(x)
                if masks is not None:
                    x = x * masks[i]
        return x


class ConvFamily(ModuleFamily):
    """A pack of `ConvNet` models, run with grouped convolutions."""

    def __init__(
        self,
        in_shape: Sequence[int],
        n_classes: int,
        channels: Sequence[int],
        kernel: int,
        stride: int,
        pool: int,
        hidden: Sequence[int],
        activation: str,
    ) -> None:
        in_shape, channels, hidden = tuple(in_shape), tuple(channels), tuple(hidden)
        if len(in_shape) not in (2, 3):
            raise UserError(
                f"model.family: cnn needs examples of shape [channels, length] or [channels, "
                f"height, width], but this dataset's are {list(in_shape)}; set dataset.shape"
            )
        sizes = block_sizes(in_shape, channels, kernel, stride, pool)
        if min(sizes[-1]) < 1:
            raise UserError(
                f"model.channels: {len(channels)} blocks of kernel {kernel}, stride {stride} and "
                f"pool {pool} shrink the {list(in_shape)} input to nothing (sizes "
                f"{' → '.join('×'.join(map(str, s)) for s in sizes)}); use fewer blocks, a "
                "smaller kernel, stride or pool"
            )
        self.channels, self.kernel, self.stride, self.pool = channels, kernel, stride, pool
        self.hidden, self.activation = hidden, activation
        self._conv = _CONV[len(in_shape) - 1][1]
        description = {
            "family": "cnn",
            "in_shape": list(in_shape),
            "n_classes": n_classes,
            "channels": list(channels),
            "kernel": kernel,
            "stride": stride,
            "pool": pool,
            "hidden": list(hidden),
            "activation": activation,
            "target": "cnn",
        }
        arguments = (in_shape, n_classes, channels, kernel, stride, pool, hidden, activation)
        super().__init__(
            lambda: ConvNet(*arguments),
            in_shape,
            n_classes,
            description,
            where="model.family cnn",
        )

    @property
    def dropout_widths(self) -> tuple[int, ...]:
        return self.hidden

    def description(self) -> dict[str, Any]:
        return {k: v for k, v in super().description().items() if k != "target"}

    def reference_forward(self, params, inputs, dropout_masks=None, buffers=None, train=False):
        """The same logits by ``vmap(functional_call)`` of `ConvNet` (the generic path)."""
        return super().forward(params, inputs, dropout_masks, buffers, train)

    def forward(
        self,
        params: Sequence[torch.Tensor],
        inputs: torch.Tensor,
        dropout_masks: Sequence[torch.Tensor] | None = None,
        buffers: Sequence[torch.Tensor] | None = None,
        train: bool = False,
    ) -> torch.Tensor:
        """Logits ``(M, batch, classes)``; ``inputs`` as in `ModuleFamily.forward`."""
        n_models = len(params[0])
        shared = inputs.dim() == 2
        batch = inputs.shape[-2]
        if shared:  # the same examples for every model: the first block is one plain conv
            x = inputs.reshape(batch, *self.in_shape)
        else:
            x = inputs.reshape(n_models, batch, *self.in_shape).transpose(0, 1)
            x = x.reshape(batch, n_models * self.in_shape[0], *self.in_shape[1:])
        activation = ACTIVATIONS[self.activation]
        padding = (self.kernel - 1) // 2
        for block in range(len(self.channels)):
            weight, bias = params[2 * block], params[2 * block + 1]
            x = self._conv(
                x,
                weight.reshape(-1, *weight.shape[2:]),
                bias.reshape(-1),
                stride=self.stride,
                padding=padding,
                groups=1 if shared and block == 0 else n_models,
            )
            x = block_output(x, self.activation, self.pool, len(self.in_shape) - 1)
        hidden = x.reshape(batch, n_models, -1).transpose(0, 1)
        dense = params[2 * len(self.channels) :]
        n_dense = len(dense) // 2
        for layer in range(n_dense):
            weight, bias = dense[2 * layer], dense[2 * layer + 1]
            hidden = torch.baddbmm(bias.unsqueeze(1), hidden, weight.transpose(1, 2))
            if layer < n_dense - 1:
                hidden = activation(hidden)
                if dropout_masks is not None:
                    hidden = hidden * dropout_masks[layer]
        return hidden
