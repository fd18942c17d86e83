"""Exact second-order passes of the stacked MLP family, written as wide batched matmuls.

``torch.func`` gives Hessian-vector products of any model, but vmapping its forward-over-reverse
pass over probe vectors turns every layer into many small matmuls plus large elementwise
temporaries, which ran at about 16% of the matmul peak here. For a dense network the same product
is Pearlmutter's R-operator (Pearlmutter 1994, "Fast exact multiplication by the Hessian"): one
forward and one backward pass of directional derivatives. Laid out as (models, examples, probes,
width), each of its products becomes one matmul per model whose width is probes × layer width, so
a batch of probes costs about what one wide layer does. The forward and backward quantities that
do not depend on the probe (activations, their derivatives, the gradient's deltas) are computed
once and reused for every batch of probes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rashomon.engine.model._families import ACTIVATIONS, Architecture

_FUSE_BELOW = 16


class MLPHessian:
    """Hessian-vector products of every model's mean cross-entropy on shared ``inputs``."""

    def __init__(
        self,
        arch: Architecture,
        params: Sequence[torch.Tensor],
        inputs: torch.Tensor,
        labels: torch.Tensor,
    ) -> None:
        self.params = list(params)
        self.n_layers = len(params) // 2
        activation = ACTIVATIONS[arch.activation]
        n_examples = len(inputs)
        self.inputs = inputs
        self.hidden = [inputs.expand(len(params[0]), *inputs.shape)]
        self.slopes, self.curvatures = [], []
        self.curved = arch.activation != "relu"  # ReLU has σ'' = 0 almost everywhere
        for layer in range(self.n_layers):
            pre = torch.baddbmm(self.bias(layer), self.hidden[-1], self.weight(layer))
            if layer == self.n_layers - 1:
                logits = pre
                break
            slope, curvature = _derivatives(activation, pre)
            self.slopes.append(slope)
            self.curvatures.append(curvature)
            self.hidden.append(activation(pre))
        # [h, 1]: a layer's bias is a weight on a constant input, so one matmul covers both
        ones = torch.ones(*self.hidden[0].shape[:2], 1, dtype=inputs.dtype, device=inputs.device)
        self.augmented = [torch.cat([h, ones], dim=-1) for h in self.hidden]
        self.probs = torch.softmax(logits, dim=-1)
        targets = torch.nn.functional.one_hot(labels, arch.n_classes).to(self.probs)
        delta = (self.probs - targets) / n_examples
        self.deltas = [delta]  # ∂L/∂(pre-activation), last layer first
        self.upstream = []  # ∂L/∂(activation) of each hidden layer, last first
        for layer in reversed(range(1, self.n_layers)):
            up = torch.bmm(delta, self.weight(layer).transpose(1, 2))
            self.upstream.append(up)
            delta = up * self.slopes[layer - 1]
            self.deltas.append(delta)
        self.deltas.reverse()
        self.upstream.reverse()

    def weight(self, layer: int) -> torch.Tensor:
        return self.params[2 * layer]

    def bias(self, layer: int) -> torch.Tensor:
        return self.params[2 * layer + 1]

    def products(self, probes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """H v for probes given as tensors (P, M, ...) shaped like the parameters."""
        n_probes, n_models = probes[0].shape[:2]
        n_examples = len(self.inputs)
        # forward: R(pre-activation) of every layer, laid out (M, n, P, width)
        r_pre, r_hidden = [], [None]  # the data has no direction: R(input) = 0
        for layer in range(self.n_layers):
            weight_probe, bias_probe = probes[2 * layer], probes[2 * layer + 1]
            if layer == 0 and _shared(weight_probe) and _shared(bias_probe):
                # every model sees the same data and the same probe: R(a₀) is computed once
                stacked = torch.cat([weight_probe[:, 0], bias_probe[:, 0]], dim=-2)
                wide = stacked.permute(1, 0, 2).reshape(-1, n_probes * stacked.shape[-1])
                r = (self.augmented[0][0] @ wide).view(1, n_examples, n_probes, -1)
                r = r.expand(n_models, -1, -1, -1)
            else:
                stacked = torch.cat([weight_probe, bias_probe], dim=-2)
                wide = stacked.permute(1, 2, 0, 3).reshape(
                    n_models, -1, n_probes * stacked.shape[-1]
                )
                r = torch.bmm(self.augmented[layer], wide).view(n_models, n_examples, n_probes, -1)
            if layer:
                r.view(n_models, n_examples * n_probes, -1).baddbmm_(
                    r_hidden[layer].view(n_models, n_examples * n_probes, -1), self.weight(layer)
                )
            r_pre.append(r)
            if layer < self.n_layers - 1:
                slope = self.slopes[layer].unsqueeze(2)
                in_place = not self.curved and r.stride(0) != 0
                r_hidden.append(r.mul_(slope) if in_place else r * slope)
        # R(∂L/∂logits) = (diag p − p pᵀ) R(logits) / n
        probs = self.probs.unsqueeze(2)
        r_logits = r_pre[-1]
        r_delta = probs * (r_logits - (probs * r_logits).sum(-1, keepdim=True)) / n_examples
        products: list[torch.Tensor] = [None] * len(self.params)  # type: ignore[list-item]
        for layer in reversed(range(self.n_layers)):
            weight_probe = probes[2 * layer]
            fan_in, out = weight_probe.shape[-2:]
            both = _gram(self.augmented[layer], r_delta.view(n_models, n_examples, -1))
            both = both.view(n_models, fan_in + 1, n_probes, out).permute(2, 0, 1, 3)
            h_weight, products[2 * layer + 1] = both[:, :, :fan_in], both[:, :, fan_in:]
            if layer:
                extra = _gram(r_hidden[layer].view(n_models, n_examples, -1), self.deltas[layer])
                h_weight = h_weight + extra.view(n_models, n_probes, fan_in, out).transpose(0, 1)
            products[2 * layer] = h_weight
            if layer:
                r_delta = self._back(layer, r_delta, weight_probe, r_pre[layer - 1])
        return products

    def _back(self, layer, r_delta, weight_probe, r_pre_below) -> torch.Tensor:
        """R(∂L/∂pre-activation) of the layer below ``layer``: R(δ Wᵀ) = R(δ) Wᵀ + δ Vᵀ, through
        the activation. With few outputs (the logits) both products are one matmul over the
        concatenated [R(δ), δ], so the large result is written once."""
        n_models, n_examples, n_probes, out = r_delta.shape
        fan_in = weight_probe.shape[-2]
        transposed = weight_probe.permute(1, 3, 0, 2).reshape(n_models, out, n_probes * fan_in)
        weight_t = self.weight(layer).transpose(1, 2)
        if out <= _FUSE_BELOW:
            blocks = torch.block_diag(*[torch.ones(out, fan_in)] * n_probes).to(weight_t)
            tiled = weight_t.repeat(1, n_probes, n_probes) * blocks
            left = torch.cat([r_delta.reshape(n_models, n_examples, -1), self.deltas[layer]], -1)
            r_up = torch.bmm(left, torch.cat([tiled, transposed], dim=1))
        else:
            r_up = torch.bmm(r_delta.reshape(n_models, -1, out), weight_t)
            r_up = r_up.view(n_models, n_examples, -1).baddbmm_(self.deltas[layer], transposed)
        r_up = r_up.view(n_models, n_examples, n_probes, fan_in)
        r_up.mul_(self.slopes[layer - 1].unsqueeze(2))
        if self.curved:
            curvature = self.curvatures[layer - 1] * self.upstream[layer - 1]
            r_up += curvature.unsqueeze(2) * r_pre_below
        return r_up


def _shared(probe: torch.Tensor) -> bool:
    """Is the probe the same for every model (a view expanded along the model axis)?"""
    return probe.shape[1] == 1 or probe.stride(1) == 0


def _gram(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """leftᵀ right for (M, n, A) and (M, n, B) -> (M, A, B), with the wider operand on the right:
    CPU batched matmuls run several times faster that way round when one side is narrow."""
    if left.shape[-1] <= right.shape[-1]:
        return torch.bmm(left.transpose(1, 2), right)
    return torch.bmm(right.transpose(1, 2), left).transpose(1, 2)


def _derivatives(activation, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """σ'(a) and σ''(a), elementwise, by forward-mode differentiation of the activation."""
    ones = torch.ones_like(pre)

    def slope(x: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(activation, (x,), (ones,))[1]

    first, second = torch.func.jvp(slope, (pre,), (ones,))
    return first, second
