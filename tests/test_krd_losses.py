"""Each KRD loss on a hand-built batch, against a hand computation."""
import math

import torch

from editors.dike.krd import KRD, KRDConfig, contrastive_loss, info_nce, reconstruction_loss


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _nce_by_hand(anchor, pos, other, tau):
    total = 0.0
    for i, a in enumerate(anchor):
        logits = [_cos(a, p) / tau for p in pos] + [_cos(a, other[i]) / tau]
        total += -logits[i] + math.log(sum(math.exp(x) for x in logits))
    return total / len(anchor)


Z_R = [[1.0, 0.0, 0.5], [0.2, 1.0, -0.3]]
Z_U = [[0.0, 1.0, 0.0], [1.0, -0.5, 0.1]]
H_S = [[0.9, 0.3, 0.4], [-0.1, 0.8, 0.2]]


def test_info_nce_matches_hand_computation():
    t = lambda x: torch.tensor(x, dtype=torch.float64)
    got = info_nce(t(Z_R), t(H_S), t(Z_U), 0.1).item()
    assert abs(got - _nce_by_hand(Z_R, H_S, Z_U, 0.1)) < 1e-10
    # the anchor's own h_s is the positive: putting z_r on h_s itself lowers the loss
    assert info_nce(t(H_S), t(H_S), t(Z_U), 0.1).item() < got


def test_contrastive_loss_is_both_components():
    t = lambda x: torch.tensor(x, dtype=torch.float64)
    want = _nce_by_hand(Z_R, H_S, Z_U, 0.5) + _nce_by_hand(Z_U, H_S, Z_R, 0.5)
    assert abs(contrastive_loss(t(Z_R), t(Z_U), t(H_S), 0.5).item() - want) < 1e-10


def test_reconstruction_loss_matches_hand_computation():
    h = torch.tensor(H_S, dtype=torch.float64)
    h_hat = torch.tensor(Z_R, dtype=torch.float64)
    # METHOD.md §5.1: the squared norm per sample (summed over d, not a per-element mean), averaged over the batch
    want = sum(sum((a - b) ** 2 for a, b in zip(r1, r2)) for r1, r2 in zip(H_S, Z_R)) / 2
    assert abs(reconstruction_loss(h, h_hat).item() - want) < 1e-12


def test_krd_module_formulas():
    torch.manual_seed(0)
    krd = KRD(KRDConfig(d=3)).double()
    h_s, h_r = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    z_r, z_u, h_hat = krd(h_s, h_r)
    gelu = lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    W = {i: getattr(krd, f"W{i}").weight for i in range(1, 7)}
    assert torch.allclose(z_r, gelu(h_s @ W[1].T + h_r @ W[2].T))
    assert torch.allclose(z_u, gelu(h_s @ W[3].T + h_r @ W[4].T))
    assert torch.allclose(h_hat, z_r @ W[5].T + z_u @ W[6].T)
    assert all(getattr(krd, f"W{i}").bias is None for i in range(1, 7))


def test_split_init_reconstructs_exactly_and_separates_the_components():
    """GELU(x) − GELU(−x) = x, so W1 = I, W3 = −I, W5 = I, W6 = −I gives ĥ_s = h_s whatever h_r is."""
    torch.manual_seed(0)
    krd = KRD(KRDConfig(d=8)).split_init()
    h_s, h_r = 100 * torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    z_r, z_u, h_hat = krd.double()(h_s, h_r)
    assert torch.allclose(h_hat, h_s, rtol=0, atol=1e-9)
    gelu = lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    assert torch.allclose(z_r, gelu(h_s)) and torch.allclose(z_u, gelu(-h_s))
