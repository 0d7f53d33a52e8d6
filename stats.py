"""Statistics over runs: the mean and spread of several seeds, and paired comparisons of two methods on the same
items (an exact McNemar / sign test, and a paired bootstrap interval of the accuracy difference).

Why paired: two methods that ran on the same items share each item's difficulty, so item-by-item comparison sees
much smaller differences than two independent accuracies would (e.g. +3 points on 300 items can be clear when
the methods disagree on few items, and noise when they disagree on many).

With several seeds the unit is still the item: each item's correctness is averaged over the seeds both methods
ran, and items (not item x seed pairs, which are not independent) are tested and resampled. With one seed this is
exactly McNemar's exact test on the discordant pairs and the usual paired bootstrap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # fixed: a report shows the same interval every time it is rendered
SIGNIFICANCE = 0.05


# ------------------------------------------------------------------------------------------------------- seeds


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1 in the denominator, as for "mean of 3 runs +- sd"); the standard
    deviation of a single value is None, not 0."""
    if not values:
        raise ValueError("mean_std of no values")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# Per-seed metrics that are averaged over seeds (with their standard deviation alongside).
AVERAGED = ("accuracy", "avg_output_tokens", "total_output_tokens", "judger_output_tokens", "seconds",
            "seconds_per_item", "cut_at_budget_share")


def aggregate_seeds(per_seed: dict[int, dict]) -> dict:
    """One method's summary entry from its per-seed metrics (methods/runner.py summarize()). One seed: its metrics
    unchanged (the format of single-seed summaries). Several: the averaged metrics under their usual names (so
    readers of single-seed summaries keep working: accuracy is the mean accuracy), each with a *_std, n = items
    per seed, n_total and correct summed over seeds, and every seed's own metrics under per_seed."""
    if len(per_seed) == 1:
        return dict(next(iter(per_seed.values())))
    runs = list(per_seed.values())
    out: dict = {"seeds": list(per_seed), "n": min(m["n"] for m in runs), "n_total": sum(m["n"] for m in runs),
                 "correct": sum(m["correct"] for m in runs)}
    for key in AVERAGED:
        values = [m[key] for m in runs if m.get(key) is not None]
        if len(values) == len(runs):
            out[key], out[f"{key}_std"] = mean_std(values)
    for key in ("peak_kv_bytes_per_item", "peak_kv_bytes_total"):
        values = [m[key] for m in runs if m.get(key) is not None]
        out[key] = max(values) if values else None
    out["per_seed"] = {str(seed): m for seed, m in per_seed.items()}
    return out


# ---------------------------------------------------------------------------------------- paired comparisons


def exact_mcnemar(better: int, worse: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts: items only the second method got right
    (better) and items only the first got right (worse). Under "no difference" each discordant item goes either way
    with probability 1/2, so the p-value is a binomial tail, doubled and capped at 1. No discordant item: p = 1."""
    n = better + worse
    if n == 0:
        return 1.0
    k = min(better, worse)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def bootstrap_interval(differences: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, level: float = 0.95,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile interval of the mean of per-item differences, items resampled with replacement (fixed seed)."""
    import numpy as np

    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        raise ValueError("bootstrap_interval of no items")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // d.size)  # bounded memory on large splits
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = d[rng.integers(0, d.size, size=(stop - start, d.size))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


@dataclass
class PairedComparison:
    """Second method minus first, on the items (and seeds) both ran."""
    first: str
    second: str
    items: int
    seeds: int
    first_accuracy: float   # percent, over the shared items
    second_accuracy: float
    difference: float       # percentage points, second - first
    ci_low: float           # 95% paired bootstrap interval of the difference, points
    ci_high: float
    better: int             # items the second method got right more often than the first
    worse: int              # items the first got right more often
    p_value: float          # exact McNemar (one seed) / exact sign test over items (several seeds)

    @property
    def significant(self) -> bool:
        return self.p_value < SIGNIFICANCE

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"significant": self.significant}


def correctness_by_item(records: Iterable[dict]) -> dict[str, dict[int, bool]]:
    """{item id: {seed: correct}} from predictions.jsonl records of one method."""
    table: dict[str, dict[int, bool]] = {}
    for r in records:
        table.setdefault(str(r.get("id", r["index"])), {})[r.get("seed")] = bool(r["correct"])
    return table


def compare_paired(first: dict[str, dict[int, bool]], second: dict[str, dict[int, bool]], first_name: str,
                   second_name: str) -> PairedComparison | None:
    """Compare two methods item by item on the (item, seed) pairs both ran (correctness_by_item tables); None when
    they share no item."""
    diffs, a_scores, b_scores, seeds = [], [], [], set()
    for item, a in first.items():
        b = second.get(item, {})
        shared = [s for s in a if s in b]
        if not shared:
            continue
        seeds.update(shared)
        a_mean = sum(a[s] for s in shared) / len(shared)
        b_mean = sum(b[s] for s in shared) / len(shared)
        a_scores.append(a_mean)
        b_scores.append(b_mean)
        diffs.append(b_mean - a_mean)
    if not diffs:
        return None
    better, worse = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    low, high = bootstrap_interval(diffs)
    n = len(diffs)
    return PairedComparison(first_name, second_name, n, len(seeds), 100 * sum(a_scores) / n, 100 * sum(b_scores) / n,
                            100 * sum(diffs) / n, 100 * low, 100 * high, better, worse, exact_mcnemar(better, worse))
