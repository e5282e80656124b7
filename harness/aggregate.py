"""Aggregating per-case metric values into means with seeded bootstrap 95 % confidence intervals."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from harness import metrics as metric_table
from harness.metrics import Metric


@dataclass(frozen=True)
class Aggregate:
    value: float
    lo: float  # bootstrap 2.5 % quantile
    hi: float  # bootstrap 97.5 % quantile
    n: int  # cases that had a value


def _combine(metric: Metric, comps: list[np.ndarray]) -> np.ndarray:
    stacked = np.stack(comps)
    if metric.aggregation == "hmean":
        with np.errstate(divide="ignore", invalid="ignore"):
            out = len(comps) / np.sum(1.0 / stacked, axis=0)
        return np.where(np.any(stacked <= 0, axis=0), 0.0, out)
    if metric.aggregation == "mean_of":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            return np.nanmean(stacked, axis=0)
    raise ValueError(f"unknown aggregation {metric.aggregation!r} for {metric.name}")


def aggregate(rows: Sequence[Mapping[str, float | None]], metrics: Sequence[Metric] | None = None,
              n_boot: int = 1000, seed: int = 0) -> dict[str, Aggregate]:
    """Mean of each metric over cases, with a case-resampling bootstrap CI; metrics with no values are left out.

    Composite metrics (harmonic mean, mean of levels) are recomputed inside every resample. metrics: default every
    metric of the table.
    """
    metrics = metric_table.METRICS if metrics is None else metrics
    n = len(rows)
    if n == 0:
        return {}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    point: dict[str, float] = {}
    boot: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for m in metrics:
        if m.aggregation != "mean":
            continue
        vals = np.array([np.nan if r.get(m.name) is None else float(r[m.name]) for r in rows])
        ok = ~np.isnan(vals)
        if not ok.any():
            continue
        counts[m.name] = int(ok.sum())
        point[m.name] = float(vals[ok].mean())
        sample = vals[idx]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no value gives NaN, dropped below
            boot[m.name] = np.nanmean(sample, axis=1)
    for m in metrics:
        if m.aggregation == "mean" or not all(c in point for c in m.components if m.aggregation == "hmean"):
            continue
        comps = [c for c in m.components if c in point]
        if not comps:
            continue
        point[m.name] = float(_combine(m, [np.array([point[c]]) for c in comps])[0])
        boot[m.name] = _combine(m, [boot[c] for c in comps])
        counts[m.name] = min(counts[c] for c in comps)
    out = {}
    for m in metrics:
        if m.name in point:
            b = boot[m.name][~np.isnan(boot[m.name])]
            lo, hi = (np.quantile(b, [0.025, 0.975]) if len(b) else (np.nan, np.nan))
            out[m.name] = Aggregate(point[m.name], float(lo), float(hi), counts[m.name])
    return out
