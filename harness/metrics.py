"""Every metric of METHOD.md §3, described by data: one table, read by everything that computes, aggregates or
shows a metric.

A Metric carries its per-case compute function (None for composites of other metrics), how cases aggregate,
whether higher is better, its protocol ("prob": mean-token-NLL probabilities, ROME/MEMIT style; "token":
teacher-forced argmax tokens, EasyEdit style; "generation": free text), the level and fact subset it covers, and
view tags that choose where it is shown. Adding a metric is adding one entry to METRICS.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from fineked.records import LEVELS
from harness.scoring import TargetScore

# View tags: which short lists a metric appears in (every metric with values is a report column regardless).
HEADLINE = "headline"  # the one-line summary `fineked run` prints
PROGRESS = "progress"  # live means on the run's progress bar
CURVE = "curve"  # columns of the sequential / batch-size tables
CURVE_PLOT = "curve_plot"  # panels of the sequential / batch-size plots
LEADERBOARD = "leaderboard"  # columns the demo prints from a leaderboard CSV


@dataclass(frozen=True)
class FactProbe:
    """One fine-grained fact's post-edit scores and pre-edit prediction."""

    level: str
    own: TargetScore  # o' after the fact's prompt, post-edit
    new: TargetScore  # o* after the fact's prompt, post-edit
    pre_argmax: tuple[int, ...]  # the unedited model's argmax on o' positions
    known: bool  # the unedited model's argmax equals o' on every token


@dataclass(frozen=True)
class CaseScores:
    """Everything one case's metrics are computed from. para/neigh items are (score of o*, score of o)."""

    edit_new: TargetScore
    edit_true: TargetScore
    para: Sequence[tuple[TargetScore, TargetScore]]
    neigh: Sequence[tuple[TargetScore, TargetScore]]
    neigh_pre_argmax: Sequence[Sequence[int]]
    facts: Sequence[FactProbe]
    generation: str | None = None  # greedy text from the subject (fluency), None when not generated


@dataclass(frozen=True)
class Metric:
    name: str
    protocol: str  # "prob" | "token" | "generation"
    aggregation: str  # "mean" of per-case values | "hmean" / "mean_of" of the components' aggregates
    higher_is_better: bool
    description: str
    compute: Callable[[CaseScores], float | None] | None = None  # per case, for "mean"; None = not applicable
    components: tuple[str, ...] = ()
    percent: bool = True  # shown x100 in reports
    level: str | None = None  # fine-grained level, "avg" for the mean of the levels; None for the edit's own metrics
    known_only: bool = False  # only facts the unedited model knows
    tags: frozenset[str] = frozenset()


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def agreement(post: Sequence[int], pre: Sequence[int]) -> float:
    """Fraction of positions where two argmax sequences agree."""
    return sum(a == b for a, b in zip(post, pre)) / len(pre)


def known_fact(pre: TargetScore) -> bool:
    return tuple(pre.argmax) == tuple(pre.target_ids)


def _facts(c: CaseScores, level: str, known_only: bool) -> list[FactProbe]:
    return [f for f in c.facts if f.level == level and (f.known or not known_only)]


def _rloc_tok(f: FactProbe) -> float:
    return agreement(f.own.argmax, f.pre_argmax)


def _rloc_prob(f: FactProbe) -> float:
    return float(f.own.mean_nll < f.new.mean_nll)


def _rloc(protocol: str, known_only: bool, shown: dict[str, frozenset[str]]) -> list[Metric]:
    """R-Loc per level and averaged over levels; known_only: facts the unedited model knows."""
    short = "tok" if protocol == "token" else "prob"
    stem = f"RLoc_{short}{'_known' if known_only else ''}"
    per_fact = _rloc_tok if protocol == "token" else _rloc_prob
    what = ("pre/post argmax agreement on o'" if protocol == "token"
            else "fraction of facts where the model still prefers o' over o*")
    over = "facts the unedited model knows" if known_only else "all fine-grained facts"

    def compute(lvl: str) -> Callable[[CaseScores], float | None]:
        return lambda c: _mean([per_fact(f) for f in _facts(c, lvl, known_only)])
    per_level = [Metric(f"{stem}_{lvl}", protocol, "mean", True, f"R-Loc ({lvl}): {what}, {over}", compute(lvl),
                        level=lvl, known_only=known_only, tags=shown.get(lvl, frozenset()))
                 for lvl in LEVELS]
    avg = Metric(f"{stem}_avg", protocol, "mean_of", True, f"R-Loc average of the levels: {what}, {over}",
                 components=tuple(m.name for m in per_level), level="avg", known_only=known_only,
                 tags=shown.get("avg", frozenset()))
    return per_level + [avg]


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


def _tags(*names: str) -> frozenset[str]:
    return frozenset(names)


METRICS: tuple[Metric, ...] = (
    Metric("ES", "prob", "mean", True, "efficacy score: P(o*) > P(o) on the edit prompt",
           lambda c: float(c.edit_new.mean_nll < c.edit_true.mean_nll),
           tags=_tags(HEADLINE, PROGRESS, CURVE, CURVE_PLOT, LEADERBOARD)),
    Metric("EM", "prob", "mean", True, "efficacy magnitude: P(o*) - P(o) on the edit prompt",
           lambda c: c.edit_new.prob - c.edit_true.prob),
    Metric("PS", "prob", "mean", True, "paraphrase score: P(o*) > P(o) on paraphrases",
           lambda c: _mean([float(n.mean_nll < t.mean_nll) for n, t in c.para]),
           tags=_tags(HEADLINE, PROGRESS, CURVE, LEADERBOARD)),
    Metric("PM", "prob", "mean", True, "paraphrase magnitude: P(o*) - P(o) on paraphrases",
           lambda c: _mean([n.prob - t.prob for n, t in c.para])),
    Metric("NS", "prob", "mean", True, "neighbourhood score: P(o) > P(o*) on neighbourhood prompts",
           lambda c: _mean([float(t.mean_nll < n.mean_nll) for n, t in c.neigh]),
           tags=_tags(HEADLINE, PROGRESS, CURVE, LEADERBOARD)),
    Metric("NM", "prob", "mean", True, "neighbourhood magnitude: P(o) - P(o*) on neighbourhood prompts",
           lambda c: _mean([t.prob - n.prob for n, t in c.neigh])),
    Metric("Score", "prob", "hmean", True, "harmonic mean of ES, PS and NS", components=("ES", "PS", "NS"),
           tags=_tags(HEADLINE)),
    Metric("tok_efficacy", "token", "mean", True, "argmax accuracy on the o* tokens of the edit prompt",
           lambda c: c.edit_new.token_accuracy),
    Metric("tok_generalization", "token", "mean", True, "argmax accuracy on the o* tokens of the paraphrases",
           lambda c: _mean([n.token_accuracy for n, _ in c.para])),
    Metric("tok_locality", "token", "mean", True, "post/pre argmax agreement on neighbourhood prompts (target o)",
           lambda c: _mean([agreement(t.argmax, pre) for (_, t), pre in zip(c.neigh, c.neigh_pre_argmax)]),
           tags=_tags(HEADLINE, PROGRESS)),
    *_rloc("token", False, {"easy": _tags(CURVE, CURVE_PLOT, LEADERBOARD),
                            "middle": _tags(CURVE, CURVE_PLOT, LEADERBOARD),
                            "hard": _tags(PROGRESS, CURVE, CURVE_PLOT, LEADERBOARD),
                            "avg": _tags(HEADLINE, CURVE, LEADERBOARD)}),
    *_rloc("prob", False, {"avg": _tags(HEADLINE, LEADERBOARD)}),
    *_rloc("token", True, {}),
    *_rloc("prob", True, {}),
    Metric("fluency", "generation", "mean", True, "ROME n-gram entropy of greedy generations from the subject",
           lambda c: ngram_entropy(c.generation) if c.generation is not None else None, percent=False,
           tags=_tags(HEADLINE)),
)


def by_name(name: str) -> Metric:
    return {m.name: m for m in METRICS}[name]


def tagged(tag: str) -> list[Metric]:
    """The metrics carrying a view tag, in table order."""
    return [m for m in METRICS if tag in m.tags]


def rloc_levels(protocol: str) -> list[Metric]:
    """R-Loc over all facts at each level and averaged, in table order (the R-Loc chart's bars)."""
    return [m for m in METRICS if m.level is not None and m.protocol == protocol and not m.known_only]


def case_metrics(edit_new: TargetScore, edit_true: TargetScore,
                 para: Sequence[tuple[TargetScore, TargetScore]],
                 neigh: Sequence[tuple[TargetScore, TargetScore]],
                 neigh_pre_argmax: Sequence[Sequence[int]],
                 facts: Sequence[FactProbe], generation: str | None = None) -> dict[str, float | None]:
    """Per-case values of every metric with a compute function. para/neigh items are (score of o*, score of o).

    None means "not applicable to this case" (no paraphrases, no fact of that level, no generation, ...).
    """
    c = CaseScores(edit_new, edit_true, para, neigh, neigh_pre_argmax, facts, generation)
    return {m.name: m.compute(c) for m in METRICS if m.compute is not None}
