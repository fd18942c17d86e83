"""Sharpness-aware minimisation's ascent step, for every model of a pack at once.

SAM (Foret et al. 2021) takes its gradient at w + ε, ε = ρ g/‖g‖, instead of at w; USAM
(Andriushchenko & Flammarion 2022) drops the normalisation, ε = ρ g; ASAM (Kwon et al. 2021)
rescales by T = diag(|w| + η) on weights and 1 on biases, ε = ρ T²g/‖Tg‖. All three are
ε = ρ T(Tg)/n with per-model ρ, T (adaptive or 1) and n (‖Tg‖ + 10⁻¹², or 1), so one pack may
mix them. The norm runs over all of a model's tensors, as in the reference implementation; the
10⁻¹² keeps a zero gradient from dividing by zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rashomon.engine.model._pack import per_model

#: ASAM's η during training (Kwon et al. 2021's default).
ASAM_ETA = 0.01
_NORM_FLOOR = 1e-12


def asam_scale(params: Sequence[torch.Tensor], names: Sequence[str], eta: float) -> list:
    """T = |w| + η on the tensors named ``…weight`` (layers' weights, and norms' scales), 1 on
    the rest (biases) (Kwon et al. 2021)."""
    return [
        p.abs() + eta if name.endswith("weight") else torch.ones_like(p)
        for name, p in zip(names, params, strict=True)
    ]


def sam_perturbation(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    names: Sequence[str],
    rho: torch.Tensor,
    normalize: torch.Tensor,
    adaptive: torch.Tensor,
) -> list[torch.Tensor]:
    """ε per stacked tensor (M, ...), from per-model ``rho`` (M,) and boolean ``normalize`` and
    ``adaptive`` (M,)."""
    scale = [
        torch.where(per_model(adaptive, t), t, torch.ones_like(t))
        for t in asam_scale(params, names, ASAM_ETA)
    ]
    scaled = [t * g for t, g in zip(scale, grads, strict=True)]
    norm = sum(s.flatten(1).square().sum(1) for s in scaled).sqrt()
    denominator = torch.where(normalize, norm + _NORM_FLOOR, torch.ones_like(norm))
    factor = rho / denominator
    return [per_model(factor, s) * t * s for t, s in zip(scale, scaled, strict=True)]
