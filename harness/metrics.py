"""Every metric of METHOD.md §3, described by data, and the per-case computations behind them.

A Metric names its protocol ("prob": mean-token-NLL probabilities, ROME/MEMIT style; "token":
teacher-forced argmax tokens, EasyEdit style; "generation": free text), how cases aggregate and
whether higher is better. Reporters read this table and nothing else.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from fineked.records import LEVELS
from harness.scoring import TargetScore


@dataclass(frozen=True)
class Metric:
    name: str
    protocol: str  # "prob" | "token" | "generation"
    aggregation: str  # "mean" of per-case values | "hmean" / "mean_of" of the components' aggregates
    higher_is_better: bool
    description: str
    components: tuple[str, ...] = ()
    percent: bool = True  # shown x100 in reports


def _rloc(protocol: str, subset: str) -> list[Metric]:
    """R-Loc per level and averaged; subset "" = all facts, "_known" = facts the unedited model knows."""
    what = ("pre/post argmax agreement on o'" if protocol == "tok"
            else "fraction of facts where the model still prefers o' over o*")
    over = "facts the unedited model knows" if subset else "all fine-grained facts"
    full = "token" if protocol == "tok" else "prob"
    per_level = [Metric(f"RLoc_{protocol}{subset}_{lvl}", full, "mean", True, f"R-Loc ({lvl}): {what}, {over}")
                 for lvl in LEVELS]
    avg = Metric(f"RLoc_{protocol}{subset}_avg", full, "mean_of", True, f"R-Loc average of the levels: {what}, {over}",
                 components=tuple(m.name for m in per_level))
    return per_level + [avg]


METRICS: tuple[Metric, ...] = (
    Metric("ES", "prob", "mean", True, "efficacy score: P(o*) > P(o) on the edit prompt"),
    Metric("EM", "prob", "mean", True, "efficacy magnitude: P(o*) - P(o) on the edit prompt"),
    Metric("PS", "prob", "mean", True, "paraphrase score: P(o*) > P(o) on paraphrases"),
    Metric("PM", "prob", "mean", True, "paraphrase magnitude: P(o*) - P(o) on paraphrases"),
    Metric("NS", "prob", "mean", True, "neighbourhood score: P(o) > P(o*) on neighbourhood prompts"),
    Metric("NM", "prob", "mean", True, "neighbourhood magnitude: P(o) - P(o*) on neighbourhood prompts"),
    Metric("Score", "prob", "hmean", True, "harmonic mean of ES, PS and NS", components=("ES", "PS", "NS")),
    Metric("tok_efficacy", "token", "mean", True, "argmax accuracy on the o* tokens of the edit prompt"),
    Metric("tok_generalization", "token", "mean", True, "argmax accuracy on the o* tokens of the paraphrases"),
    Metric("tok_locality", "token", "mean", True, "post/pre argmax agreement on neighbourhood prompts (target o)"),
    *_rloc("tok", ""), *_rloc("prob", ""), *_rloc("tok", "_known"), *_rloc("prob", "_known"),
    Metric("fluency", "generation", "mean", True, "ROME n-gram entropy of greedy generations from the subject",
           percent=False),
)
METRIC_BY_NAME = {m.name: m for m in METRICS}


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def agreement(post: Sequence[int], pre: Sequence[int]) -> float:
    """Fraction of positions where two argmax sequences agree."""
    return sum(a == b for a, b in zip(post, pre)) / len(pre)


@dataclass(frozen=True)
class FactProbe:
    """One fine-grained fact's post-edit scores and pre-edit prediction."""

    level: str
    own: TargetScore  # o' after the fact's prompt, post-edit
    new: TargetScore  # o* after the fact's prompt, post-edit
    pre_argmax: tuple[int, ...]  # the unedited model's argmax on o' positions
    known: bool  # the unedited model's argmax equals o' on every token


def known_fact(pre: TargetScore) -> bool:
    return tuple(pre.argmax) == tuple(pre.target_ids)


def case_metrics(edit_new: TargetScore, edit_true: TargetScore,
                 para: Sequence[tuple[TargetScore, TargetScore]],
                 neigh: Sequence[tuple[TargetScore, TargetScore]],
                 neigh_pre_argmax: Sequence[Sequence[int]],
                 facts: Sequence[FactProbe]) -> dict[str, float | None]:
    """Per-case values of every "mean" metric. para/neigh items are (score of o*, score of o).

    None means "not applicable to this case" (no paraphrases, no fact of that level, ...).
    """
    m: dict[str, float | None] = {
        "ES": float(edit_new.mean_nll < edit_true.mean_nll),
        "EM": edit_new.prob - edit_true.prob,
        "PS": _mean([float(n.mean_nll < t.mean_nll) for n, t in para]),
        "PM": _mean([n.prob - t.prob for n, t in para]),
        "NS": _mean([float(t.mean_nll < n.mean_nll) for n, t in neigh]),
        "NM": _mean([t.prob - n.prob for n, t in neigh]),
        "tok_efficacy": edit_new.token_accuracy,
        "tok_generalization": _mean([n.token_accuracy for n, _ in para]),
        "tok_locality": _mean([agreement(t.argmax, pre) for (_, t), pre in zip(neigh, neigh_pre_argmax)]),
    }
    for subset, keep in (("", lambda f: True), ("_known", lambda f: f.known)):
        for lvl in LEVELS:
            sel = [f for f in facts if f.level == lvl and keep(f)]
            m[f"RLoc_tok{subset}_{lvl}"] = _mean([agreement(f.own.argmax, f.pre_argmax) for f in sel])
            m[f"RLoc_prob{subset}_{lvl}"] = _mean([float(f.own.mean_nll < f.new.mean_nll) for f in sel])
    return m


_WORD = re.compile(r"\w+|[^\w\s]")


def ngram_entropy(text: str, ns: tuple[int, ...] = (2, 3), weights: tuple[float, ...] = (2 / 3, 4 / 3)) -> float:
    """ROME's n-gram entropy of one text: mean over n of weight_n * entropy (bits) of its n-gram distribution.

    ROME tokenizes with nltk.word_tokenize; a word/punctuation regex stands in (no nltk data offline).
    """
    words = _WORD.findall(text)
    parts = []
    for n, w in zip(ns, weights):
        grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        total = sum(grams.values())
        h = -sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0
        parts.append(w * h)
    return sum(parts) / len(parts)
