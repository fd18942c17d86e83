"""Flat-minima statistics of SPEC §8 for every model of a pack, computed as one batched problem.

The pack's loss is the sum of its models' losses, each the mean cross-entropy of one model on the
same curvature set. Models share no parameter, so the gradient of the sum holds every model's own
gradient and its Hessian is block diagonal: one Hessian-vector product of the sum (``torch.func``,
forward-over-reverse, reverse-over-reverse where an operation lacks a forward-mode rule) is a
Hessian-vector product of every model at once, and a batch of probe vectors is ``vmap``-ed on top,
so the matrix products grow with the number of probes instead of being repeated for each. Every
model gets the same probe vectors and the same curvature set (common random numbers), so the
differences between models are not sampling noise, and a model's statistics do not depend on its
pack-mates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import grad, jvp, vjp, vmap

from rashomon.engine.model import _random
from rashomon.engine.model._pack import per_model
from rashomon.engine.model._sam import asam_scale
from rashomon.engine.model._second_order import MLPHessian
from rashomon.jobs import TRACK_ITERATIONS

if TYPE_CHECKING:
    from rashomon.engine.model._build import Family

CURVATURE = "curvature"
PROBES = "probes"
Parameters = list[torch.Tensor]


@dataclass(frozen=True)
class FlatnessSettings:
    """How the statistics are estimated: the job's ``flatness:`` section (defaults there)."""

    curvature_examples: int
    trace_probes: int
    adaptive_probes: int
    eig_iterations: int
    eig_tolerance: float
    sam_rho: float
    asam_rho: float
    asam_eta: float
    avg_sigma: float
    avg_pairs: int
    seed: int
    track: bool = False  # hessian_top_eig at the end of every epoch, into the history
    track_iterations: int = TRACK_ITERATIONS
    max_elements: int = 1 << 25  # activations held at once by one batched evaluation

    @classmethod
    def from_config(cls, config, **overrides) -> FlatnessSettings:
        """From a job's `FlatnessConfig` (``enabled`` aside)."""
        tracking = {"track": config.track, "track_iterations": config.track_iterations}
        return cls(**(config.model_dump(exclude={"enabled"}) | tracking | overrides))


def curvature_rows(train_indices: torch.Tensor, settings: FlatnessSettings) -> torch.Tensor:
    """The curvature set: a fixed random subset of the training split, the same for every model."""
    gen = _random.generator(CURVATURE, settings.seed)
    order = torch.randperm(len(train_indices), generator=gen)
    return train_indices[order[: settings.curvature_examples].to(train_indices.device)]


def flatness_statistics(
    family: Family,
    params: Sequence[torch.Tensor],
    initial: Sequence[torch.Tensor],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    settings: FlatnessSettings,
    buffers: Sequence[torch.Tensor] = (),
) -> dict[str, np.ndarray]:
    """Every column of SPEC §8 for each model of the pack, as float64 arrays of shape (M,).

    The derivatives are with respect to the parameters; buffers (BatchNorm's running
    statistics) are held fixed, as in eval mode."""
    params = [p.detach() for p in params]
    problem = _Problem(family, params, inputs, labels, settings, buffers=buffers)
    loss = problem.losses(params)
    gradient = problem.gradient(params)
    trace, trace_se = problem.hutchinson(_rademacher(params, settings, 0, settings.trace_probes))
    adaptive_probes = _rademacher(params, settings, 1, settings.adaptive_probes)
    adaptive, _ = problem.hutchinson(
        [p.abs() * z for p, z in zip(params, adaptive_probes, strict=True)]
    )
    ones = [torch.ones_like(p) for p in params]
    scale = asam_scale(params, family.parameter_names(), settings.asam_eta)
    stats = {
        "grad_norm": _norm(gradient),
        "hessian_trace": trace,
        "hessian_trace_se": trace_se,
        "hessian_top_eig": problem.top_eigenvalue(),
        "hessian_trace_adaptive": adaptive,
        "fisher_trace": problem.fisher_trace(),
        "sam_sharpness": problem.ascent_loss(gradient, ones, settings.sam_rho) - loss,
        "asam_sharpness": problem.ascent_loss(gradient, scale, settings.asam_rho) - loss,
        "avg_sharpness": problem.antithetic_losses().mean(dim=0) - loss,
        "weight_norm": _norm(params),
        "dist_from_init": _norm([p - q for p, q in zip(params, initial, strict=True)]),
    }
    return {name: value.double().cpu().numpy() for name, value in stats.items()}


class _Problem:
    """The pack's loss on the curvature set and the batched derivatives of it.

    ``method`` picks how Hessian-vector products are formed: ``"analytic"`` is the R-operator of
    the MLP family (`MLPHessian`, the fast path); ``"forward-over-reverse"`` and
    ``"reverse-over-reverse"`` are ``torch.func`` transforms that work for any differentiable
    family — the first falls back to the second when an operation has no forward-mode rule. The
    default is the family's own (``hessian_method``).
    """

    def __init__(
        self,
        family: Family,
        params,
        inputs,
        labels,
        settings: FlatnessSettings,
        method: str | None = None,
        buffers: Sequence[torch.Tensor] = (),
    ) -> None:
        self.family, self.params, self.settings = family, params, settings
        self.inputs, self.labels = inputs, labels
        self.buffers = list(buffers)
        self.n_models = len(params[0])
        self.method = method or family.hessian_method
        self._analytic: MLPHessian | None = None

    def losses(self, params: Parameters, buffers: Parameters | None = None) -> torch.Tensor:
        """Mean cross-entropy of each model, (M,) (``buffers``: the pack's, unless given for a
        batch of other models)."""
        buffers = self.buffers if buffers is None else buffers
        logits = self.family.forward(params, self.inputs, buffers=buffers)
        labels = self.labels.expand(len(params[0]), -1)
        return F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(dim=1)

    def total(self, params: Parameters) -> torch.Tensor:
        return self.losses(params).sum()

    def gradient(self, params: Parameters) -> Parameters:
        # Plain autograd rather than torch.func.grad, whose first call imports torch._dynamo
        # (1.6 s in every trainer that measures a dense pack).
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_() for p in params]
            grads = torch.autograd.grad(self.total(leaves), leaves, allow_unused=True)
        # a parameter the loss does not use (a user's spare layer) has gradient 0, as in torch.func
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]

    def hessian_products(self, probes: Parameters) -> Parameters:
        """H v for a batch of probes: each tensor (P, M, ...) -> (P, M, ...)."""
        n_probes = len(probes[0])
        chunk = max(1, self.settings.max_elements // self._elements_per_probe())
        parts = [
            self._products([v[start : start + chunk] for v in probes])
            for start in range(0, n_probes, chunk)
        ]
        return [torch.cat([part[i] for part in parts]) for i in range(len(probes))]

    def _products(self, probes: Parameters) -> Parameters:
        if self.method == "analytic":
            if self._analytic is None:
                self._analytic = MLPHessian(self.family, self.params, self.inputs, self.labels)
            return self._analytic.products(probes)
        transform = _TRANSFORMS[self.method]
        try:
            return list(vmap(lambda *v: transform(self.total, self.params, list(v)))(*probes))
        except (NotImplementedError, RuntimeError):
            if self.method == "reverse-over-reverse":
                raise
            self.method = "reverse-over-reverse"
            return self._products(probes)

    def hutchinson(self, probes: Parameters) -> tuple[torch.Tensor, torch.Tensor]:
        """Trace estimate vᵀHv averaged over probes, and its standard error, per model."""
        products = self.hessian_products(probes)
        quadratic = _dot(probes, products, lead=2)  # (P, M)
        return quadratic.mean(dim=0), quadratic.std(dim=0) / quadratic.shape[0] ** 0.5

    def top_eigenvalue(self) -> torch.Tensor:
        """Largest Hessian eigenvalue by Lanczos with full reorthogonalisation, per model (see
        `top_eigenpair`), from the same random start vector for every model."""
        return self.top_eigenpair()[0]

    def start_vector(self) -> Parameters:
        """The common random start of Lanczos: the same unit direction for every model."""
        gen = _random.generator(PROBES, self.settings.seed, 2)
        start = [torch.randn(p.shape[1:], generator=gen, dtype=torch.float64) for p in self.params]
        return [s.to(p).expand_as(p).clone() for s, p in zip(start, self.params, strict=True)]

    def top_eigenpair(
        self, start: Parameters | None = None, iterations: int | None = None
    ) -> tuple[torch.Tensor, Parameters]:
        """Largest Hessian eigenvalue and its Ritz vector (unit length), per model, by Lanczos
        with full reorthogonalisation from ``start`` (default `start_vector`) for at most
        ``iterations`` steps (default ``eig_iterations``).

        A model stops when the residual of its top Ritz pair (θ, V s), ‖H V s − θ V s‖ = β |s_k|,
        is at most the tolerance times |θ|: θ is then that close to an eigenvalue. (The change of
        θ between steps is no such bound: it stalls next to the second eigenvalue when the top two
        are close.) The Hessian-vector products then run on the models not yet converged only."""
        settings = self.settings
        iterations = settings.eig_iterations if iterations is None else iterations
        vector = self.start_vector() if start is None else [v.clone() for v in start]
        vector = _scale(vector, 1 / _norm(vector))
        basis, alphas, betas = [vector], [], []
        estimate = torch.full((self.n_models,), float("nan"), dtype=torch.float64)
        ritz_vector = [torch.zeros_like(v) for v in vector]
        active = torch.ones(self.n_models, dtype=torch.bool)
        previous_beta = rows = sub = None
        for step in range(iterations):
            if rows is None or not torch.equal(rows, active.nonzero().squeeze(1)):
                rows = active.nonzero().squeeze(1)
                sub = _Problem(self.family, [p[rows] for p in self.params], self.inputs,
                               self.labels, settings, self.method,
                               [b[rows] for b in self.buffers])  # fmt: skip
            product = [torch.zeros_like(v) for v in vector]
            computed = sub.hessian_products([v[rows].unsqueeze(0) for v in vector])
            for full, part in zip(product, computed, strict=True):
                full[rows] = part[0]
            alpha = _dot(vector, product)
            residual = [w - per_model(alpha, w) * v for w, v in zip(product, vector, strict=True)]
            if previous_beta is not None:
                residual = [r - per_model(previous_beta, r) * u
                            for r, u in zip(residual, basis[-2], strict=True)]  # fmt: skip
            for u in basis:  # full reorthogonalisation keeps the Ritz values honest in float32
                overlap = _dot(u, residual)
                residual = [r - per_model(overlap, r) * b for r, b in zip(residual, u, strict=True)]
            beta = _norm(residual)
            alphas.append(alpha)
            betas.append(beta)
            ritz, coefficients = _top_ritz_pair(alphas, betas[:-1])
            converged = beta.double().cpu() * coefficients[:, -1].abs() <= (
                settings.eig_tolerance * ritz.abs()
            )
            estimate = torch.where(active, ritz, estimate)
            last = step == iterations - 1
            done = active & (converged | last)
            if done.any():
                _combine_into(ritz_vector, basis, coefficients, done)
            active &= ~converged
            if not active.any() or last:
                break
            vector = _scale(residual, 1 / beta.clamp_min(1e-30))
            basis.append(vector)
            previous_beta = beta
        return estimate, ritz_vector

    def fisher_trace(self) -> torch.Tensor:
        """Exact trace of the Fisher (= Gauss–Newton) matrix: (1/n) Σ_x Σ_k p_k ‖∇ log p_k(x)‖²,
        from per-example gradient norms, in chunks of examples that bound their memory."""
        with torch.no_grad():
            logits = self.family.forward(self.params, self.inputs, buffers=self.buffers)
            probs = torch.softmax(logits, dim=-1)
            n_classes = probs.shape[-1]
            eye = torch.eye(n_classes, dtype=probs.dtype, device=probs.device)
            directions = eye - probs.unsqueeze(-2)  # row k: ∂ log p_k / ∂ logits
            per_example = self.n_models * n_classes * self.family.n_parameters
            chunk = max(1, self.settings.max_elements // per_example)
            if self.method == "analytic":  # no per-example gradient is formed
                chunk = len(self.inputs)
            norms = torch.cat(
                [
                    self.family.per_example_squared_norms(
                        self.params,
                        self.buffers,
                        self.inputs[start : start + chunk],
                        directions[:, start : start + chunk],
                    )
                    for start in range(0, len(self.inputs), chunk)
                ],
                dim=1,
            )
            total = torch.zeros_like(probs[..., 0])
            for k in range(n_classes):
                total += probs[..., k] * norms[..., k]
        return total.mean(dim=1)

    def ascent_loss(self, gradient: Parameters, scale: Parameters, rho: float) -> torch.Tensor:
        """L(w + ρ T²g/‖Tg‖) per model (T = 1 is SAM's step, T = |w| + η ASAM's)."""
        scaled = [t * g for t, g in zip(scale, gradient, strict=True)]
        norm = _norm(scaled).clamp_min(1e-30)
        step = [t * s for t, s in zip(scale, scaled, strict=True)]
        moved = [p + per_model(rho / norm, p) * d for p, d in zip(self.params, step, strict=True)]
        with torch.no_grad():
            return self.losses(moved)

    def antithetic_losses(self) -> torch.Tensor:
        """(L(w + δ) + L(w − δ)) / 2 for δ ~ N(0, σ² diag(w²)), (pairs, M), the same normal
        draws for every model. The pair cancels the first-order term gᵀδ, which is zero on
        average but dominates single draws (16 plain draws were mostly noise)."""
        settings = self.settings
        gen = _random.generator(PROBES, settings.seed, 3)
        noise = [
            torch.randn((settings.avg_pairs, *p.shape[1:]), generator=gen, dtype=torch.float64)
            .to(p)
            .mul_(settings.avg_sigma)
            for p in self.params
        ]
        signs = torch.tensor([1.0, -1.0], dtype=self.params[0].dtype, device=noise[0].device)
        per_chunk = max(1, settings.max_elements // (2 * self._elements_per_probe()))
        losses = []
        with torch.no_grad():
            for start in range(0, settings.avg_pairs, per_chunk):
                count = min(per_chunk, settings.avg_pairs - start)
                moved = [  # (±, pair, model, ...) flattened into one batch of models
                    (p * (1 + _per_pair(signs, e[start : start + count]))).flatten(0, 2)
                    for p, e in zip(self.params, noise, strict=True)
                ]
                tiled = [b.expand(2, count, *b.shape).flatten(0, 2) for b in self.buffers]
                moved_losses = self.losses(moved, tiled)
                losses.append(moved_losses.view(2, count, self.n_models).mean(dim=0))
        return torch.cat(losses)

    def _elements_per_probe(self) -> int:
        return self.n_models * len(self.inputs) * self.family.activation_elements


def _per_pair(signs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """±ε laid out (2, pairs, 1, ...) to broadcast over a stacked parameter (M, ...)."""
    return (signs.view(2, 1, *([1] * (noise.dim() - 1))) * noise.unsqueeze(0)).unsqueeze(2)


def _forward_over_reverse(function: Callable, params: Parameters, vector: Parameters) -> Parameters:
    return list(jvp(grad(function), (params,), (vector,))[1])


def _reverse_over_reverse(function: Callable, params: Parameters, vector: Parameters) -> Parameters:
    return list(vjp(grad(function), params)[1](vector)[0])


_TRANSFORMS = {
    "forward-over-reverse": _forward_over_reverse,
    "reverse-over-reverse": _reverse_over_reverse,
}


def _rademacher(
    params: Parameters, settings: FlatnessSettings, stream: int, count: int
) -> Parameters:
    """``count`` ±1 probes, the same for every model: tensors (P, M, ...) (expanded views)."""
    gen = _random.generator(PROBES, settings.seed, stream)
    probes = []
    for p in params:
        signs = torch.randint(0, 2, (count, 1, *p.shape[1:]), generator=gen).to(p) * 2 - 1
        probes.append(signs.expand(count, *p.shape))
    return probes


def _dot(a: Parameters, b: Parameters, lead: int = 1) -> torch.Tensor:
    """Per-model inner products: tensors with ``lead`` leading axes ((M, ...) or (P, M, ...))."""
    return sum((x * y).flatten(start_dim=lead).sum(-1) for x, y in zip(a, b, strict=True))


def _norm(tensors: Parameters) -> torch.Tensor:
    return sum(t.flatten(start_dim=1).square().sum(-1) for t in tensors).sqrt()


def _scale(tensors: Parameters, factor: torch.Tensor) -> Parameters:
    return [t * per_model(factor, t) for t in tensors]


def _top_ritz_pair(
    alphas: list[torch.Tensor], betas: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest eigenvalue of each model's Lanczos tridiagonal matrix, (M,), and its eigenvector,
    (M, k), on the CPU."""
    # models that stopped earlier may hold overflowed entries; their values are discarded
    diagonal = torch.stack(alphas, dim=1).double().nan_to_num(0.0, 0.0, 0.0)
    k = diagonal.shape[1]
    tridiagonal = torch.diag_embed(diagonal)
    if betas:
        off = torch.stack(betas, dim=1).double().nan_to_num(0.0, 0.0, 0.0)
        tridiagonal = tridiagonal + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    values, vectors = torch.linalg.eigh(tridiagonal)
    return values[:, k - 1].cpu(), vectors[:, :, k - 1].cpu()


def _combine_into(
    target: Parameters, basis: list[Parameters], coefficients: torch.Tensor, rows: torch.Tensor
) -> None:
    """target[rows] = Σ_j coefficients[rows, j] basis[j][rows]: the Ritz vectors of ``rows``."""
    index = rows.nonzero().squeeze(1)
    for t, tensor in enumerate(target):
        weights = coefficients[index].to(tensor)
        combined = sum(
            per_model(weights[:, j], tensor[index]) * basis[j][t][index.to(tensor.device)]
            for j in range(len(basis))
        )
        tensor[index.to(tensor.device)] = combined
