"""KRD diagnostics on held-out samples: the premise metrics (reconstruction, routing of o and o' through z_r and
z_u), a t-SNE plot of z_r against z_u, and their silhouette score."""
from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from editors.adapters import ModelAdapter
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
    X = torch.cat([z_r, z_u]).double().cpu().numpy()
    labels = [0] * len(z_r) + [1] * len(z_u)
    return float(silhouette_score(X, labels, metric=metric))


@torch.no_grad()
def plot_tsne(krd: KRD, h_s: torch.Tensor, h_r: torch.Tensor, path: Path, title: str = "", seed: int = 0) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    z_r, z_u = krd.components(h_s, h_r)
    X = torch.cat([z_r, z_u]).double().cpu().numpy()
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


# Issue 13's targets for a KRD that meets METHOD.md §5.1's premise.
PREMISE_TARGETS = {"recon_rel": 0.10, "nll_gap": 0.5, "silhouette": 0.3}


@torch.no_grad()
def premise_metrics(model: Any, tok: Any, adapter: ModelAdapter, krd: KRD, layer: int, samples: Sequence[Any],
                    h_s: torch.Tensor, h_r: torch.Tensor, siblings: int = 10, seed: int = 0, llm_batch: int = 32,
                    prefix: Any = None, silhouette_points: int = 1000) -> dict[str, Any]:
    """Does the KRD do what DKE assumes, on these (held-out) samples?

    - recon_rel: median over samples of ‖ĥ_s − h_s‖ / ‖h_s‖ (target ≤ 0.10);
    - nll_o: median NLL of o for p(s, r) with h_s (the clean model), z_r (routed) and z_u (crossed) in place of h_s;
    - nll_o_prime: the same for every sibling fact o' of p(s, r'), with h_s (that prompt's own, i.e. clean), z_u
      (routed) and z_r (crossed), where z_r, z_u come from the sample's p(s, r);
    - gap_o_z_r = median NLL(o | z_r) − median NLL(o | h_s), gap_o_prime_z_u likewise (target ≤ 0.5 nats);
    - silhouette of {z_r} against {z_u} (target > 0.3).
    `samples` are KRDSamples matching the rows of h_s, h_r; `prefix` is an optional states.PrefixCache.
    """
    from editors.dike.train import constraint_rows, rows_nll

    z_r, z_u, h_hat = krd(h_s, h_r)
    recon = ((h_hat - h_s).norm(dim=-1) / h_s.norm(dim=-1)).tolist()
    rows = constraint_rows(samples, siblings, seed)
    nll: dict[str, list[float]] = {"h": [], "z_r": [], "z_u": []}
    for c in range(0, len(rows), llm_batch):
        chunk = rows[c:c + llm_batch]
        idx = [r[4] for r in chunk]
        for name, vecs in (("h", None), ("z_r", z_r[idx]), ("z_u", z_u[idx])):
            nll[name] += rows_nll(model, tok, adapter, layer, chunk, vecs, prefix).tolist()
    is_o = [r[3] == "r" for r in rows]

    def med(name: str, want_o: bool) -> float:
        vals = [v for v, o in zip(nll[name], is_o) if o == want_o]
        return statistics.median(vals) if vals else float("nan")

    def split(routed: str, crossed: str, want_o: bool) -> dict[str, float]:
        """Per-row NLL(crossed) − NLL(routed): positive where the routed component carries the fact and the other
        does not. The 0.5-nat gaps above hold for a KRD with no split at all (z_r = z_u = h_s)."""
        d = [c - r for r, c, o in zip(nll[routed], nll[crossed], is_o) if o == want_o]
        if not d:
            return {"median": float("nan"), "share_positive": float("nan")}
        return {"median": statistics.median(d), "share_positive": sum(x > 0 for x in d) / len(d)}

    o = {"h_s": med("h", True), "z_r": med("z_r", True), "z_u": med("z_u", True)}
    o_prime = {"h_s": med("h", False), "z_u": med("z_u", False), "z_r": med("z_r", False)}
    m = {"n_samples": len(samples), "n_o_prime_rows": len(rows) - sum(is_o),
         "recon_rel": statistics.median(recon), "nll_o": o, "nll_o_prime": o_prime,
         "gap_o_z_r": o["z_r"] - o["h_s"], "gap_o_prime_z_u": o_prime["z_u"] - o_prime["h_s"],
         "split_o": split("z_r", "z_u", True), "split_o_prime": split("z_u", "z_r", False),
         "fik_keep": fik_keep_spectrum(krd),
         "silhouette": silhouette(krd, h_s[:silhouette_points], h_r[:silhouette_points])}
    t = PREMISE_TARGETS
    m["meets"] = {"recon_rel": m["recon_rel"] <= t["recon_rel"], "gap_o_z_r": m["gap_o_z_r"] <= t["nll_gap"],
                  "gap_o_prime_z_u": m["gap_o_prime_z_u"] <= t["nll_gap"], "silhouette": m["silhouette"] > t["silhouette"]}
    m["premise_met"] = all(m["meets"].values())
    m["targets"] = dict(t)
    return m


@torch.no_grad()
def fik_keep_spectrum(krd: KRD, mu: float = 1.0) -> dict[str, float]:
    """Eigenvalues of (μ W3ᵀW3 + I)⁻¹, the share of each direction of a residual that DKE writes. All equal
    (W3 = −I at the split initialisation: 1/(1 + μ) everywhere) means DKE shrinks the edit but protects no
    direction more than another."""
    from editors.dike.solve import fik_matrix

    keep = 1.0 / torch.linalg.eigvalsh(fik_matrix(krd.W3.weight.detach(), mu))
    return {"min": keep.min().item(), "median": keep.median().item(), "max": keep.max().item()}


def format_premise(m: dict[str, Any]) -> str:
    """The premise metrics as a few printed lines."""
    ok = lambda k: "ok" if m["meets"][k] else "MISSED"
    o, op = m["nll_o"], m["nll_o_prime"]
    return "\n".join([
        f"  premise on {m['n_samples']} held-out samples ({m['n_o_prime_rows']} sibling facts): "
        f"{'MET' if m['premise_met'] else 'NOT MET'}",
        f"    reconstruction  median ‖ĥ_s − h_s‖/‖h_s‖ = {m['recon_rel']:.3f} (≤ 0.10: {ok('recon_rel')})",
        f"    o  (p(s,r))     median NLL: h_s {o['h_s']:.2f} | z_r {o['z_r']:.2f} (gap {m['gap_o_z_r']:+.2f}, "
        f"≤ 0.5: {ok('gap_o_z_r')}) | crossed z_u {o['z_u']:.2f}",
        f"    o' (p(s,r'))    median NLL: h_s {op['h_s']:.2f} | z_u {op['z_u']:.2f} (gap {m['gap_o_prime_z_u']:+.2f}, "
        f"≤ 0.5: {ok('gap_o_prime_z_u')}) | crossed z_r {op['z_r']:.2f}",
        f"    split           crossed − routed NLL, median per row: o {m['split_o']['median']:+.2f} "
        f"({m['split_o']['share_positive']:.0%} > 0), o' {m['split_o_prime']['median']:+.2f} "
        f"({m['split_o_prime']['share_positive']:.0%} > 0)",
        f"    DKE keep (μ = 1) eigenvalues of (W3ᵀW3 + I)⁻¹: min {m['fik_keep']['min']:.3f}, median "
        f"{m['fik_keep']['median']:.3f}, max {m['fik_keep']['max']:.3f}",
        f"    silhouette (cosine) {m['silhouette']:.3f} (> 0.3: {ok('silhouette')})"])
