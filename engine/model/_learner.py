"""What a pack's optimizer moves, and one training step of the whole pack.

A model learns its parameters θ, or, with ``subspace_dim`` d > 0, the d coordinates z of a
random subspace, θ = θ₀ + P z (`Subspace`): the optimizer, its weight decay and SAM's ascent act
on what is learnt. With ``optimizer: sam`` a step takes two gradients: one at the learnt values
w, which gives the ascent direction ε (`sam_perturbation`), and one at w + ε on the same
minibatch with the same dropout masks, which the base SGD step (momentum, Nesterov, weight decay
at w, as ``sgd``) then applies at w — Foret et al.'s update. The second pass leaves running
statistics (BatchNorm) as the first one set them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from rashomon.engine.model._optim import BatchedOptimizer
from rashomon.engine.model._pack import ModelSpec, PackSettings, per_model
from rashomon.engine.model._sam import sam_perturbation
from rashomon.engine.model._subspace import Subspace

#: losses(params, buffers) -> (M,) mean minibatch losses (updating ``buffers`` in train mode)
LossFunction = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], torch.Tensor]


class Learner:
    def __init__(
        self,
        settings: PackSettings,
        names: Sequence[str],
        models: Sequence[ModelSpec],
        params: Sequence[torch.Tensor],
        per_model: Mapping[str, torch.Tensor],
        flags: Mapping[str, torch.Tensor],
    ) -> None:
        self.subspace = None
        if settings.subspace_dim:
            seeds = [m.init_seed for m in models]
            self.subspace = Subspace(params, seeds, settings.subspace_dim)
            self.learnt, self.names = [self.subspace.start()], ["subspace"]
        else:
            self.learnt, self.names = list(params), list(names)
        for tensor in self.learnt:
            tensor.requires_grad_(True)
        self.sam = settings.optimizer == "sam"
        self.rho = per_model["rho"]
        self.normalize, self.adaptive = flags["sam_normalize"], flags["sam_adaptive"]
        self.optimizer = BatchedOptimizer(
            self.learnt,
            "sgd" if self.sam else settings.optimizer,
            lr=per_model["lr"],
            weight_decay=per_model["weight_decay"],
            momentum=per_model["momentum"],
            nesterov=settings.nesterov,
            betas=settings.betas,
            eps=settings.eps,
        )

    def parameters(self, learnt: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """The models' parameters θ from the learnt values (default: the current ones)."""
        learnt = self.learnt if learnt is None else learnt
        return self.subspace.parameters(learnt[0]) if self.subspace else list(learnt)

    def final(self) -> list[torch.Tensor]:
        """The trained parameters, detached."""
        for tensor in self.learnt:
            tensor.requires_grad_(False)
        with torch.no_grad():
            return [p.detach() for p in self.parameters()]

    def step(
        self,
        losses_of: LossFunction,
        buffers: Sequence[torch.Tensor],
        lr_factor: float,
        alive: torch.Tensor,
    ) -> torch.Tensor:
        """One update of every live model; returns the minibatch losses at w, (M,), and clears
        ``alive`` for a model whose loss (or, for sam, ascent loss) is not finite. A model no
        longer alive keeps its parameters, its optimizer state and its buffers."""
        before = [b.clone() for b in buffers]
        losses = losses_of(self.parameters(), buffers)
        grads = torch.autograd.grad(losses.sum(), self.learnt)
        alive &= torch.isfinite(losses)
        if self.sam:
            with torch.no_grad():
                ascent = sam_perturbation(
                    self.learnt, grads, self.names, self.rho, self.normalize, self.adaptive
                )
                moved = [(w.detach() + e).requires_grad_(True)
                         for w, e in zip(self.learnt, ascent, strict=True)]  # fmt: skip
            ascended = losses_of(self.parameters(moved), [b.clone() for b in buffers])
            grads = torch.autograd.grad(ascended.sum(), moved)
            alive &= torch.isfinite(ascended)
        with torch.no_grad():
            for buffer, old in zip(buffers, before, strict=True):
                buffer.copy_(torch.where(per_model(alive, buffer), buffer, old))
            self.optimizer.step(self.learnt, grads, lr_factor, alive)
        return losses.detach()
