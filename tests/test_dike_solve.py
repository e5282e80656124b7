"""DKE's four-term closed form against a brute-force least-squares solve of its objective."""
import torch

from editors.dike.solve import dike_delta


def _kron_rows(M: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Rows of the linear map vec(Ŵ) -> vec(M Ŵ X) (column-major vec): Xᵀ ⊗ M."""
    return torch.kron(X.T.contiguous(), M.contiguous())


def _vec(Y: torch.Tensor) -> torch.Tensor:
    return Y.T.reshape(-1)


def _brute_force(W, W3, k, v, K0, lam, three_terms=False):
    d_out, d_in = W.shape
    I = torch.eye(d_out, dtype=torch.float64)
    s = lam ** 0.5
    V0, v0 = W @ K0, W @ k
    blocks = [(_kron_rows(I, k), _vec(v)), (s * _kron_rows(I, K0), s * _vec(V0)),
              (_kron_rows(W3, k), _vec(W3 @ v0))]
    if not three_terms:
        blocks.append((s * _kron_rows(W3, K0), s * _vec(W3 @ V0)))
    A = torch.cat([b[0] for b in blocks])
    y = torch.cat([b[1] for b in blocks])
    sol = torch.linalg.lstsq(A, y.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    return sol.reshape(d_in, d_out).T


def _problem(seed, n_edits=1):
    g = torch.Generator().manual_seed(seed)
    d_out, d_in, n0 = 5, 4, 9
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    return r(d_out, d_in), r(d_out, d_out), r(d_in, n_edits), r(d_out, n_edits), r(d_in, n0)


def test_four_term_closed_form_equals_brute_force_least_squares():
    for seed, n in [(0, 1), (1, 1), (2, 3)]:
        W, W3, k, v, K0 = _problem(seed, n)
        lam = 1.7
        closed = W + dike_delta(v - W @ k, k, K0 @ K0.T, lam, W3)
        brute = _brute_force(W, W3, k, v, K0, lam)
        assert torch.allclose(closed, brute, atol=1e-8, rtol=0), (closed - brute).abs().max()


def test_three_term_objective_gives_a_different_answer():
    W, W3, k, v, K0 = _problem(3)
    closed = W + dike_delta(v - W @ k, k, K0 @ K0.T, 1.7, W3)
    three = _brute_force(W, W3, k, v, K0, 1.7, three_terms=True)
    assert (closed - three).abs().max() > 1e-3


def test_no_fik_is_plain_memit_least_squares():
    W, W3, k, v, K0 = _problem(4, 2)
    lam = 0.9
    d_out = W.shape[0]
    closed = W + dike_delta(v - W @ k, k, K0 @ K0.T, lam, None)
    brute = _brute_force(W, torch.zeros(d_out, d_out, dtype=torch.float64), k, v, K0, lam)
    assert torch.allclose(closed, brute, atol=1e-8, rtol=0)
    assert not torch.allclose(closed, W + dike_delta(v - W @ k, k, K0 @ K0.T, lam, W3), atol=1e-4)
