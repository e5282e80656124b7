"""Closed-form updates in float64 on (d_out, d_in) matrices: W k = value, keys are columns.

Shapes: W (d_out, d_in); C (d_in, d_in); K, K_prev, K_keep (d_in, n); R, V (d_out, n); P (d_in, d_in).
"""
from __future__ import annotations

import torch


def _f64(*xs: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [None if x is None else x.to(torch.float64) for x in xs]


def _cols(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(1) if x.dim() == 1 else x


def rome_delta(W: torch.Tensor, C: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Minimum-change update under the covariance C that makes (W + Δ) k = v exactly.

    One key: Δ = (v − W k)(C⁻¹k)ᵀ / ((C⁻¹k)ᵀ k), ROME's rank-one solution of
    min tr(Δ C Δᵀ) s.t. (W + Δ) k = v. Several key columns give the rank-m generalisation
    Δ = (V − W K)(Kᵀ C⁻¹ K)⁻¹ Kᵀ C⁻¹.
    """
    W, C, K, V = _f64(W, C, _cols(k), _cols(v))
    CinvK = torch.linalg.solve(C, K)  # (d_in, m)
    gram = K.T @ CinvK  # (m, m)
    return torch.linalg.solve(gram, (V - W @ K).T).T @ CinvK.T


def psd_factor(C: torch.Tensor) -> torch.Tensor | None:
    """The Cholesky factor of C in float64, or None where C is not numerically positive definite."""
    L, info = torch.linalg.cholesky_ex(C.to(torch.float64))
    return L if int(info) == 0 else None


def memit_delta(R: torch.Tensor, K: torch.Tensor, C: torch.Tensor, lam: float,
                K_keep: torch.Tensor | None = None, C_factor: torch.Tensor | None = None) -> torch.Tensor:
    """Δ = R Kᵀ (λC + K Kᵀ + K_keep K_keepᵀ)⁻¹: least squares of Δ K ≈ R with λ‖Δ K0‖² (K0 K0ᵀ = C)
    and, for MEMIT-C, ‖Δ K_keep‖² keeping the preserved keys' outputs unchanged.

    With C_factor (psd_factor(C), computed once per layer) no d_in³ solve is needed: for U = [K, K_keep] and
    G = (λC)⁻¹U, (λC + UUᵀ) G = U (I + UᵀG), so (λC + UUᵀ)⁻¹ K is the first columns of G (I + UᵀG)⁻¹."""
    R, K, C, K_keep = _f64(_cols(R), _cols(K), C, K_keep)
    keep = K_keep is not None and K_keep.numel() > 0
    if C_factor is None:
        A = lam * C + K @ K.T
        if keep:
            A = A + K_keep @ K_keep.T
        return torch.linalg.solve(A, K @ R.T).T  # A is symmetric
    U = torch.cat([K, K_keep], dim=1) if keep else K
    G = _solve_lam_c(U, C, lam, C_factor)
    S = torch.eye(U.shape[1], dtype=torch.float64, device=U.device) + U.T @ G
    AinvK = torch.linalg.solve(S.T, G.T).T[:, :K.shape[1]]
    return R @ AinvK.T


def written_share(K: torch.Tensor, C: torch.Tensor, lam: float, C_factor: torch.Tensor | None = None) -> torch.Tensor:
    """(n,) float64: s_i = k_iᵀ(λC + k_i k_iᵀ)⁻¹ k_i for each key column, the share of a residual r that the
    one-edit update Δ = r k_iᵀ(λC + k_i k_iᵀ)⁻¹ writes at its own key (Δ k_i = s_i r). By Sherman-Morrison
    s = q / (1 + q) with q = kᵀ(λC)⁻¹k, so only λC is solved (with its Cholesky factor when given)."""
    K, C = _f64(_cols(K), C)
    q = (K * _solve_lam_c(K, C, lam, C_factor)).sum(0)
    return q / (1 + q)


def written_share_at(keys_at: torch.Tensor, k: torch.Tensor, C: torch.Tensor, lam: float,
                     C_factor: torch.Tensor | None = None) -> torch.Tensor:
    """(m,) float64: the share of a residual r that the one-edit update Δ = r kᵀ(λC + kkᵀ)⁻¹ writes at each column
    k_j of keys_at: Δ k_j = s_j r with s_j = k_jᵀ(λC + kkᵀ)⁻¹k = k_jᵀ(λC)⁻¹k / (1 + q) (Sherman-Morrison). k is the
    key the update was solved for (MEMIT's average over contexts); at k itself this is written_share's s."""
    keys_at, k, C = _f64(_cols(keys_at), _cols(k), C)
    g = _solve_lam_c(k, C, lam, C_factor)
    return (keys_at.T @ g).squeeze(1) / (1 + float(k[:, 0] @ g[:, 0]))


def _solve_lam_c(X: torch.Tensor, C: torch.Tensor, lam: float, C_factor: torch.Tensor | None) -> torch.Tensor:
    """(λC)⁻¹X in float64, through C's Cholesky factor when given."""
    if C_factor is not None:
        return torch.cholesky_solve(X, C_factor.to(torch.float64)) / lam
    return torch.linalg.solve(lam * C, X)


def nullspace_projector(C: torch.Tensor, threshold: float) -> torch.Tensor:
    """P = U Uᵀ over the eigenvectors of C whose eigenvalues fall below `threshold` (AlphaEdit; 2e-2 upstream)."""
    evals, evecs = torch.linalg.eigh(C.to(torch.float64))
    U = evecs[:, evals < threshold]
    return U @ U.T


def alphaedit_delta(R: torch.Tensor, K: torch.Tensor, P: torch.Tensor, K_prev: torch.Tensor | None,
                    l2: float) -> torch.Tensor:
    """Δ = R Kᵀ P (K Kᵀ P + K_p K_pᵀ P + L2·I)⁻¹, the null-space-projected update.

    It minimises ‖Δ K − R‖² + ‖Δ K_p‖² + L2‖Δ‖² over Δ = Δ' P, so Δ K0 = 0 for keys in P's null space.
    With V = [K, K_p] and U = P V, (P V Vᵀ + L2·I) U = U (L2·I + VᵀU), so only an (n, n) system is solved: the
    update is R ((U (L2·I + VᵀU)⁻¹) restricted to K's columns)ᵀ, no d_in³ solve.
    """
    R, K, P, K_prev = _f64(_cols(R), _cols(K), P, K_prev)
    V = torch.cat([K, K_prev], dim=1) if K_prev is not None and K_prev.numel() else K
    U = P @ V
    T = l2 * torch.eye(V.shape[1], dtype=torch.float64, device=V.device) + V.T @ U
    return R @ torch.linalg.solve(T.T, U.T)[:K.shape[1]]
