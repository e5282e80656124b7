"""The KRD module (METHOD.md §5.1) and its three losses.

z_r = GELU(W1 h_s + W2 h_r), z_u = GELU(W3 h_s + W4 h_r), ĥ_s = W5 z_r + W6 z_u; all d × d.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class KRDConfig:
    d: int
    bias: bool = False  # [open] in the paper; none by default


class KRD(nn.Module):
    """Disentangler (W1..W4) plus recomposer (W5, W6)."""

    def __init__(self, config: KRDConfig):
        super().__init__()
        self.config = config
        d, b = config.d, config.bias
        self.W1, self.W2, self.W3, self.W4, self.W5, self.W6 = (nn.Linear(d, d, bias=b) for _ in range(6))
        for lin in (self.W1, self.W2, self.W3, self.W4, self.W5, self.W6):
            # Small init keeps the GELU in its near-linear range at the start of training.
            nn.init.normal_(lin.weight, std=1.0 / (2 * d) ** 0.5)

    @torch.no_grad()
    def split_init(self) -> "KRD":
        """W1 = I, W3 = −I, W5 = I, W6 = −I, W2 = W4 = 0: z_r = GELU(h_s), z_u = GELU(−h_s), and since
        GELU(x) − GELU(−x) = x, ĥ_s = h_s exactly. Training starts from a perfect reconstruction with the two
        components already apart (they hold h_s's positive and negative parts)."""
        eye = torch.eye(self.config.d)
        for lin, w in ((self.W1, eye), (self.W2, 0 * eye), (self.W3, -eye), (self.W4, 0 * eye), (self.W5, eye),
                       (self.W6, -eye)):
            lin.weight.copy_(w)
            if lin.bias is not None:
                lin.bias.zero_()
        return self

    def components(self, h_s: torch.Tensor, h_r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_r, z_u) for hidden states (..., d)."""
        z_r = F.gelu(self.W1(h_s) + self.W2(h_r))
        z_u = F.gelu(self.W3(h_s) + self.W4(h_r))
        return z_r, z_u

    def recompose(self, z_r: torch.Tensor, z_u: torch.Tensor) -> torch.Tensor:
        return self.W5(z_r) + self.W6(z_u)

    def forward(self, h_s: torch.Tensor, h_r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z_r, z_u = self.components(h_s, h_r)
        return z_r, z_u, self.recompose(z_r, z_u)

    def config_dict(self) -> dict:
        return asdict(self.config)


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, other: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE for one component, mean over the batch.

    anchor: the component (B, d); positive: h_s (B, d), whose off-diagonal rows are the other subjects'
    negatives; other: the other component of the same sample (B, d), one more negative per row.
    """
    a = F.normalize(anchor, dim=-1)
    sims = a @ F.normalize(positive, dim=-1).T  # (B, B): diagonal = positive, off-diagonal = other subjects
    other_sim = (a * F.normalize(other, dim=-1)).sum(-1, keepdim=True)  # (B, 1)
    logits = torch.cat([sims, other_sim], dim=1) / tau
    labels = torch.arange(a.shape[0], device=a.device)
    return F.cross_entropy(logits, labels)


def contrastive_loss(z_r: torch.Tensor, z_u: torch.Tensor, h_s: torch.Tensor, tau: float) -> torch.Tensor:
    """L_ctr = InfoNCE(z_r) + InfoNCE(z_u): each close to h_s, away from the other component and other subjects."""
    return info_nce(z_r, h_s, z_u, tau) + info_nce(z_u, h_s, z_r, tau)


def reconstruction_loss(h_s: torch.Tensor, h_hat: torch.Tensor) -> torch.Tensor:
    """L_rec = ‖h_s − ĥ_s‖², summed over d and averaged over the batch (METHOD.md §5.1).

    On SmolLM2 (‖h_s‖ ≈ 130 at l = 7) a relative error of 0.1 is L_rec ≈ 170, so β is chosen against that scale
    (see README, "KRD")."""
    return (h_s - h_hat).pow(2).sum(-1).mean()
