"""Disentanglement diagnostics: a t-SNE plot of z_r against z_u on held-out samples, and their silhouette score."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from editors.dike.krd import KRD

log = logging.getLogger(__name__)


@dataclass
class Disentanglement:
    silhouette: float  # of the two clusters {z_r}, {z_u}; the seed's success mark is > 0.3
    metric: str
    n: int  # held-out samples (each gives one z_r and one z_u)
    png: Path | None


@torch.no_grad()
def silhouette(krd: KRD, h_s: torch.Tensor, h_r: torch.Tensor, metric: str = "cosine") -> float:
    from sklearn.metrics import silhouette_score

    z_r, z_u = krd.components(h_s, h_r)
    X = torch.cat([z_r, z_u]).double().numpy()
    labels = [0] * len(z_r) + [1] * len(z_u)
    return float(silhouette_score(X, labels, metric=metric))


@torch.no_grad()
def plot_tsne(krd: KRD, h_s: torch.Tensor, h_r: torch.Tensor, path: Path, title: str = "", seed: int = 0) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    z_r, z_u = krd.components(h_s, h_r)
    X = torch.cat([z_r, z_u]).double().numpy()
    n = len(z_r)
    emb = TSNE(n_components=2, perplexity=min(30.0, max(2.0, (2 * n - 1) / 3)), init="pca", random_state=seed,
               metric="cosine").fit_transform(X)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(emb[:n, 0], emb[:n, 1], s=6, alpha=0.7, label="z_r (related)")
    ax.scatter(emb[n:, 0], emb[n:, 1], s=6, alpha=0.7, label="z_u (unrelated)")
    ax.set_title(title or "KRD components, held-out samples (t-SNE)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def diagnose(krd: KRD, h_s: torch.Tensor, h_r: torch.Tensor, directory: Path | None, metric: str = "cosine",
             max_points: int = 1000) -> Disentanglement:
    """Silhouette score and (if directory is given and there are enough points) tsne.png next to the checkpoint."""
    h_s, h_r = h_s[:max_points], h_r[:max_points]
    score = silhouette(krd, h_s, h_r, metric)
    png = None
    if directory is not None and len(h_s) >= 3:
        png = plot_tsne(krd, h_s, h_r, Path(directory) / "tsne.png",
                        title=f"z_r vs z_u (held-out n={len(h_s)}), silhouette {score:.3f}")
    return Disentanglement(score, metric, len(h_s), png)


def plot_curves(history: dict, path: Path) -> Path:
    """Per-step training loss terms and per-epoch validation totals."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = history.get("steps", [])
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("ctr", "con_r", "con_u", "rec", "total"):
        ax.plot([s[key] for s in steps], label=key, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
