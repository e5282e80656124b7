"""DKE's closed-form update (METHOD.md §5.2, step 4), float64 on (d_out, d_in) matrices.

The four-term objective, with the W3 terms weighted by μ,
    ‖Ŵk* − v*‖² + λ‖ŴK0 − V0‖² + μ‖W3(Ŵk* − v0)‖² + μλ‖W3(ŴK0 − V0)‖²,   v0 = W k*, V0 = W K0, C = K0 K0ᵀ
has normal equations A Δ (λC + k*k*ᵀ) = (v* − W k*) k*ᵀ with A = μW3ᵀW3 + I, so
    Δ = A⁻¹ Δ_MEMIT,  Δ_MEMIT = (v* − W k*) k*ᵀ (λC + k*k*ᵀ)⁻¹.
μ = 1 is the paper's objective. It only factors like this because the W3 terms mirror *both* plain terms; with three
terms it does not.
"""
from __future__ import annotations

import torch

from editors.locate.solve import memit_delta


def fik_matrix(W3: torch.Tensor, mu: float = 1.0) -> torch.Tensor:
    """A = μ W3ᵀW3 + I in float64."""
    W3 = W3.to(torch.float64)
    return mu * (W3.T @ W3) + torch.eye(W3.shape[1], dtype=torch.float64, device=W3.device)


def fik_precondition(delta: torch.Tensor, W3: torch.Tensor, mu: float = 1.0) -> torch.Tensor:
    """A⁻¹ Δ in float64: the fine-grained-knowledge (FIK) factor that keeps W3·value unchanged."""
    return torch.linalg.solve(fik_matrix(W3, mu), delta.to(torch.float64))


def dike_delta(R: torch.Tensor, K: torch.Tensor, C: torch.Tensor, lam: float, W3: torch.Tensor | None,
               C_factor: torch.Tensor | None = None, mu: float = 1.0) -> torch.Tensor:
    """Δ for residuals R = V* − W K* (d_out, n) and keys K* (d_in, n), stacked column-wise.

    W3=None is the w/o-FIK ablation: plain Δ_MEMIT. C_factor: psd_factor(C), as in memit_delta.
    """
    delta = memit_delta(R, K, C, lam, C_factor=C_factor)
    return delta if W3 is None else fik_precondition(delta, W3, mu)
