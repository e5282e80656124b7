"""The closed-form updates equal brute-force least-squares solves of their objectives (float64, 1e-8)."""
import pytest
import torch

from editors.locate.solve import alphaedit_delta, memit_delta, nullspace_projector, psd_factor, rome_delta

D_OUT, D_IN = 7, 9
g = torch.Generator().manual_seed(0)


def rnd(*shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def lstsq(A, B):
    """min ‖X A − B‖ over X, solved by torch.linalg.lstsq on the transposed system."""
    return torch.linalg.lstsq(A.T, B.T, driver="gelsd").solution.T


def test_rome_equals_constrained_least_squares():
    W, K0, k, v = rnd(D_OUT, D_IN), rnd(D_IN, 30), rnd(D_IN), rnd(D_OUT)
    C = K0 @ K0.T
    # KKT system of min tr(Δ C Δᵀ) s.t. Δ k = v − W k, one row of Δ at a time.
    kkt = torch.zeros(D_IN + 1, D_IN + 1, dtype=torch.float64)
    kkt[:D_IN, :D_IN], kkt[:D_IN, D_IN], kkt[D_IN, :D_IN] = 2 * C, k, k
    rhs = torch.zeros(D_IN + 1, D_OUT, dtype=torch.float64)
    rhs[D_IN] = v - W @ k
    brute = torch.linalg.lstsq(kkt, rhs, driver="gelsd").solution[:D_IN].T
    assert torch.allclose(rome_delta(W, C, k, v), brute, atol=1e-8, rtol=0)
    W_hat = W + rome_delta(W, C, k, v)
    assert torch.allclose(W_hat @ k, v, atol=1e-10)
    # the explicit rank-one formula of METHOD.md §4
    u = torch.linalg.solve(C, k)
    assert torch.allclose(W_hat, W + torch.outer(v - W @ k, u) / (u @ k), atol=1e-10)


def test_memit_delta_equals_stacked_least_squares():
    K, R, K0, Kp = rnd(D_IN, 4), rnd(D_OUT, 4), rnd(D_IN, 25), rnd(D_IN, 2)
    lam = 3.7
    C = K0 @ K0.T
    brute = lstsq(torch.cat([K, lam ** 0.5 * K0], 1), torch.cat([R, torch.zeros(D_OUT, 25, dtype=torch.float64)], 1))
    assert torch.allclose(memit_delta(R, K, C, lam), brute, atol=1e-8, rtol=0)
    # MEMIT-C: preserved keys are extra columns whose residual is zero (keep W k_p)
    brute_c = lstsq(torch.cat([K, lam ** 0.5 * K0, Kp], 1),
                    torch.cat([R, torch.zeros(D_OUT, 27, dtype=torch.float64)], 1))
    assert torch.allclose(memit_delta(R, K, C, lam, K_keep=Kp), brute_c, atol=1e-8, rtol=0)
    # the factored path (a Cholesky factor of C, computed once per layer; no d_in³ solve per edit)
    L = psd_factor(C)
    assert L is not None
    assert torch.allclose(memit_delta(R, K, C, lam, C_factor=L), brute, atol=1e-8, rtol=0)
    assert torch.allclose(memit_delta(R, K, C, lam, K_keep=Kp, C_factor=L), brute_c, atol=1e-8, rtol=0)


def test_psd_factor_refuses_a_singular_matrix():
    K0 = rnd(D_IN, 3)  # rank 3 < D_IN
    assert psd_factor(K0 @ K0.T) is None
    assert psd_factor(K0 @ K0.T + torch.eye(D_IN, dtype=torch.float64)) is not None


def preserved_setup(rank_kept=5):
    """C whose top eigen-directions hold the preserved keys K0, and P onto the rest (threshold between)."""
    basis, _ = torch.linalg.qr(rnd(D_IN, D_IN))
    K0 = basis[:, :rank_kept] @ rnd(rank_kept, 40)
    C = K0 @ K0.T / 40 + 1e-6 * torch.eye(D_IN, dtype=torch.float64)
    return K0, C, nullspace_projector(C, threshold=1e-3)


def test_alphaedit_delta_equals_projected_least_squares():
    _, C, P = preserved_setup()
    K, R, Kp = rnd(D_IN, 3), rnd(D_OUT, 3), rnd(D_IN, 4)
    l2 = 0.3
    evals, evecs = torch.linalg.eigh(P)
    B = evecs[:, evals > 0.5]  # orthonormal basis of range(P); Δ = Y Bᵀ
    r = B.shape[1]
    A = torch.cat([B.T @ K, B.T @ Kp, l2 ** 0.5 * torch.eye(r, dtype=torch.float64)], 1)
    Y = lstsq(A, torch.cat([R, torch.zeros(D_OUT, 4 + r, dtype=torch.float64)], 1))
    assert torch.allclose(alphaedit_delta(R, K, P, Kp, l2), Y @ B.T, atol=1e-8, rtol=0)


def test_alphaedit_leaves_preserved_keys_unchanged():
    K0, _, P = preserved_setup()
    assert round(torch.trace(P).item()) == D_IN - 5
    delta = alphaedit_delta(rnd(D_OUT, 3), rnd(D_IN, 3), P, None, 1.0)
    assert delta.abs().max() > 1e-3  # it does change something
    assert (delta @ K0).abs().max() < 1e-10


def test_nullspace_projector_is_an_orthogonal_projector():
    _, C, P = preserved_setup()
    assert torch.allclose(P @ P, P, atol=1e-12) and torch.allclose(P, P.T, atol=1e-12)
    assert (P @ C).abs().max() < 1e-5


def test_written_share_at_other_keys_matches_the_applied_update():
    """s_j = k_jᵀ(λC + kkᵀ)⁻¹k: the one-edit update solved for k, applied to other keys k_j, writes s_j r there
    (checked by building Δ with a dense solve and multiplying), and s at k itself is written_share's."""
    from editors.locate.solve import written_share, written_share_at

    g = torch.Generator().manual_seed(3)
    d_in, d_out = 12, 7
    X = torch.randn(d_in, 40, generator=g, dtype=torch.float64)
    C = X @ X.T / 40
    k, r = torch.randn(d_in, generator=g, dtype=torch.float64), torch.randn(d_out, generator=g, dtype=torch.float64)
    others = torch.randn(d_in, 5, generator=g, dtype=torch.float64)
    lam = 2.5
    delta = torch.outer(r, torch.linalg.solve(lam * C + torch.outer(k, k), k))
    want = (delta @ others) / r[:, None]  # every output row gives the same ratio
    got = written_share_at(others, k, C, lam)
    assert torch.allclose(want, got.expand_as(want), rtol=1e-9)
    L = torch.linalg.cholesky(C)
    assert torch.allclose(written_share_at(others, k, C, lam, L), got, rtol=1e-9)
    assert float(written_share_at(k, k, C, lam)[0]) == pytest.approx(float(written_share(k, C, lam)[0]), rel=1e-12)
