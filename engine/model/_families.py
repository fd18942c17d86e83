"""The dense families (mlp, logistic) as stacked, hand-written batched computations.

A pack of M models with the same architecture is held as one tensor per layer with a leading
model axis — weights ``(M, fan_in, fan_out)``, biases ``(M, 1, fan_out)`` — so one ``baddbmm`` runs
a layer for every model at once, each on its own minibatch. Initialisation follows
``torch.nn.Linear`` (uniform in ±1/sqrt(fan_in) for weights and biases), drawn per model from its
``init`` seed so that a model's start does not depend on its pack-mates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
import torch.nn.functional as F

from rashomon.engine.model import _random

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "gelu": F.gelu,
}


@dataclass(frozen=True)
class Architecture:
    """The dense families (mlp, logistic): layer widths shared by every model of a pack, and the
    hand-written batched computation of them; ``logistic`` is an MLP with no hidden layer."""

    n_features: int
    hidden: tuple[int, ...]
    n_classes: int
    activation: str = "relu"

    hessian_method = "analytic"  # the R-operator of `MLPHessian`

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.n_features, *self.hidden, self.n_classes)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (self.n_features,)

    @property
    def n_parameters(self) -> int:
        w = self.widths
        return sum((a + 1) * b for a, b in pairwise(w))

    @property
    def forward_flops(self) -> float:
        return 2.0 * sum(a * b for a, b in pairwise(self.widths))

    @property
    def activation_elements(self) -> int:
        return max(self.widths)

    @property
    def dropout_widths(self) -> tuple[int, ...]:
        return self.hidden

    def parameter_names(self) -> list[str]:
        return [
            f"layers.{i}.{kind}" for i in range(len(self.widths) - 1) for kind in ("weight", "bias")
        ]

    def buffer_names(self) -> list[str]:
        return []

    def description(self) -> dict:
        return {
            "family": "mlp" if self.hidden else "logistic",
            "n_features": self.n_features,
            "hidden": list(self.hidden),
            "n_classes": self.n_classes,
            "activation": self.activation,
        }

    def init(
        self, init_seeds: Sequence[int], dtype: torch.dtype, device: torch.device | str
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return init_parameters(self, init_seeds, dtype, device), []

    def forward(
        self,
        params: Sequence[torch.Tensor],
        inputs: torch.Tensor,
        dropout_masks: Sequence[torch.Tensor] | None = None,
        buffers: Sequence[torch.Tensor] | None = None,
        train: bool = False,
    ) -> torch.Tensor:
        return forward(self, params, inputs, dropout_masks)

    def penultimate(
        self,
        params: Sequence[torch.Tensor],
        inputs: torch.Tensor,
        buffers: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The last layer's input, (M, n, width), in eval mode: the last hidden layer's
        activations (a logistic model's: the data)."""
        if inputs.dim() == 2:
            inputs = inputs.expand(len(params[0]), *inputs.shape)
        return forward(self, params[:-2], inputs, last_linear=False)

    def first_weights(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        """The first layer's weight matrix, (M, fan_in, fan_out)."""
        return params[0]

    def per_example_squared_norms(
        self,
        params: Sequence[torch.Tensor],
        buffers: Sequence[torch.Tensor],
        inputs: torch.Tensor,
        directions: torch.Tensor,
    ) -> torch.Tensor:
        """(M, n, D, classes) directions -> (M, n, D), as `ModuleFamily`'s, from
        `per_example_gradient_norms` (no per-example gradient is formed)."""
        return torch.stack(
            [
                per_example_gradient_norms(self, params, inputs, directions[:, :, d].contiguous())
                for d in range(directions.shape[2])
            ],
            dim=2,
        )


def init_parameters(
    arch: Architecture, init_seeds: Sequence[int], dtype: torch.dtype, device: torch.device
) -> list[torch.Tensor]:
    """Stacked initial parameters, ``[W0, b0, W1, b1, ...]``, one slice per model."""
    widths = arch.widths
    per_model = []
    for seed in init_seeds:
        gen = _random.generator(_random.INIT, seed)
        tensors = []
        for fan_in, fan_out in pairwise(widths):
            bound = 1.0 / math.sqrt(fan_in)
            weight = torch.rand(fan_in, fan_out, generator=gen, dtype=torch.float64)
            bias = torch.rand(1, fan_out, generator=gen, dtype=torch.float64)
            tensors += [(2 * weight - 1) * bound, (2 * bias - 1) * bound]
        per_model.append(tensors)
    return [
        torch.stack([m[i] for m in per_model]).to(device=device, dtype=dtype).contiguous()
        for i in range(len(per_model[0]))
    ]


def forward(
    arch: Architecture,
    params: Sequence[torch.Tensor],
    inputs: torch.Tensor,
    dropout_masks: Sequence[torch.Tensor] | None = None,
    last_linear: bool = True,
) -> torch.Tensor:
    """Logits ``(M, batch, classes)``.

    ``inputs`` is ``(M, batch, features)`` (each model its own minibatch) or ``(batch, features)``
    (the same examples for every model, as in evaluation). ``dropout_masks`` holds one already
    scaled mask per hidden layer, ``(M, batch, width)``, or is None in eval mode. With
    ``last_linear`` False every layer of ``params`` is followed by its activation (the hidden
    layers alone).
    """
    activation = ACTIVATIONS[arch.activation]
    n_layers = len(params) // 2
    hidden = inputs
    if hidden.dim() == 2:
        hidden = hidden.expand(len(params[0]), *hidden.shape)
    for layer in range(n_layers):
        weight, bias = params[2 * layer], params[2 * layer + 1]
        hidden = torch.baddbmm(bias, hidden, weight)
        if layer < n_layers - 1 or not last_linear:
            hidden = activation(hidden)
            if dropout_masks is not None:
                hidden = hidden * dropout_masks[layer]
    return hidden


def per_example_gradient_norms(
    arch: Architecture,
    params: Sequence[torch.Tensor],
    inputs: torch.Tensor,
    output_gradients: torch.Tensor,
) -> torch.Tensor:
    """‖∂(gᵀz(x))/∂θ‖² for every model and example, ``(M, n)``, in eval mode.

    ``output_gradients`` g is ``(M, n, classes)``: one direction in logit space per example. A
    dense layer's gradient for one example is the outer product of its input a and its output
    delta δ, so its squared norm is ‖a‖²·‖δ‖² (plus ‖δ‖² for the bias): exact per-example norms
    for the price of one backward pass, without forming per-example gradients.
    """
    activation = ACTIVATIONS[arch.activation]
    n_layers = len(params) // 2
    layer_inputs, pre_activations = [], []
    hidden = inputs.expand(len(params[0]), *inputs.shape) if inputs.dim() == 2 else inputs
    for layer in range(n_layers):
        layer_inputs.append(hidden)
        pre = torch.baddbmm(params[2 * layer + 1], hidden, params[2 * layer])
        pre_activations.append(pre)
        hidden = activation(pre) if layer < n_layers - 1 else pre
    delta = output_gradients
    total = torch.zeros(delta.shape[:2], dtype=delta.dtype, device=delta.device)
    for layer in reversed(range(n_layers)):
        delta_sq = delta.square().sum(-1)
        total += delta_sq * (layer_inputs[layer].square().sum(-1) + 1.0)
        if layer:
            pre = pre_activations[layer - 1]
            slope = torch.func.jvp(activation, (pre,), (torch.ones_like(pre),))[1]
            delta = torch.bmm(delta, params[2 * layer].transpose(1, 2)) * slope
    return total
