"""Optimizers over stacked parameters, with every hyperparameter a per-model tensor.

The update rules reproduce ``torch.optim.SGD`` (momentum without dampening, optional Nesterov, L2
weight decay added to the gradient), ``torch.optim.Adam`` (L2 weight decay) and
``torch.optim.AdamW`` (decoupled weight decay) step for step, so a model trained in a pack matches
one trained alone with the stock optimizer. A model that is no longer ``alive`` (it diverged) is
left exactly as it was: its update is computed with the others and then discarded per model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from rashomon.engine.model._pack import per_model

OPTIMIZERS = ("sgd", "adam", "adamw")


class BatchedOptimizer:
    def __init__(
        self,
        params: Sequence[torch.Tensor],
        kind: str,
        lr: torch.Tensor,
        weight_decay: torch.Tensor,
        momentum: torch.Tensor,
        nesterov: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if kind not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {kind!r}")
        self.kind, self.nesterov, self.betas, self.eps = kind, nesterov, betas, eps
        self.lr, self.weight_decay, self.momentum = lr, weight_decay, momentum
        self.steps = 0
        self.has_weight_decay = bool((weight_decay != 0).any())
        self.state = [
            [torch.zeros_like(p) for _ in range(1 if kind == "sgd" else 2)] for p in params
        ]

    def step(
        self,
        params: Sequence[torch.Tensor],
        grads: Sequence[torch.Tensor],
        lr_factor: float,
        alive: torch.Tensor,
    ) -> None:
        """Update ``params`` in place; ``lr_factor`` is the schedule's multiplier for this step.

        The common case — every model alive — runs fused in-place updates. Once a model has
        diverged, the update is computed out of place and kept only for the live models, so the
        frozen model's parameters and state stay bit for bit as they were. On an accelerator,
        reading ``alive`` would make the host wait for the step each time: there the masked
        update always runs (the same values for the live models), and the host runs ahead.
        """
        self.steps += 1
        everyone_alive = alive.device.type == "cpu" and bool(alive.all())
        for param, grad, state in zip(params, grads, self.state, strict=True):
            if everyone_alive:
                self._update(param, grad, state, lr_factor)
                continue
            keep = per_model(alive, param)
            new_param, new_state = param.clone(), [s.clone() for s in state]
            self._update(new_param, grad, new_state, lr_factor)
            param.copy_(torch.where(keep, new_param, param))
            for old, new in zip(state, new_state, strict=True):
                old.copy_(torch.where(keep, new, old))

    def _update(self, param, grad, state, lr_factor):
        lr = per_model(self.lr, param) * lr_factor
        weight_decay = per_model(self.weight_decay, param)
        if self.kind == "adamw":
            param.mul_(1 - lr * weight_decay)
        elif self.has_weight_decay:
            grad = grad.addcmul(weight_decay, param)
        if self.kind == "sgd":
            self._sgd(param, grad, state[0], lr)
        else:
            self._adam(param, grad, state, lr)

    def _sgd(self, param, grad, buffer, lr):
        momentum = per_model(self.momentum, param)
        # torch.optim.SGD starts the buffer at the first gradient; momentum * 0 + grad is the same.
        buffer.mul_(momentum).add_(grad)
        direction = grad.addcmul(momentum, buffer) if self.nesterov else buffer
        param.addcmul_(lr, direction, value=-1)

    def _adam(self, param, grad, state, lr):
        beta1, beta2 = self.betas
        exp_avg, exp_avg_sq = state
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1**self.steps
        bias_correction2 = 1 - beta2**self.steps
        denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(self.eps)
        param.addcmul_(lr / bias_correction1, exp_avg / denom, value=-1)
