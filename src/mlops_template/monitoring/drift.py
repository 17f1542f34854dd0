"""Distribution shift between a baseline sample and a window of served rows.

- Population stability index over the baseline's quantile bins (deciles by default), with
  missing values as a bin of their own: sum((a - e) * ln(a / e)) over the bins' shares, shares
  floored at `epsilon` so an empty bin does not make it infinite. Discrete features get fewer
  bins (repeated quantiles collapse), which is what they need.
- Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs,
  missing values left out (scipy's `ks_2samp` statistic, without the p-value, which on large
  samples flags any difference at all).
"""

from __future__ import annotations

import numpy as np

DEFAULT_BINS = 10
EPSILON = 1e-4


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The share of `values` in each bin cut at `edges`, then the share of missing values."""
    missing = np.isnan(values)
    bins = np.searchsorted(edges, values[~missing], side="right")
    counts = np.append(np.bincount(bins, minlength=len(edges) + 1), missing.sum())
    return counts / len(values)


def population_stability_index(
    expected: np.ndarray, actual: np.ndarray, bins: int = DEFAULT_BINS, epsilon: float = EPSILON
) -> float:
    """PSI of `actual` against `expected` (the baseline); NaN when either is empty."""
    expected, actual = np.asarray(expected, dtype="float64"), np.asarray(actual, dtype="float64")
    if expected.size == 0 or actual.size == 0:
        return float("nan")
    present = expected[~np.isnan(expected)]
    cuts = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]) if present.size else np.array([])
    edges = np.unique(cuts)
    e = np.clip(_shares(expected, edges), epsilon, None)
    a = np.clip(_shares(actual, edges), epsilon, None)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_statistic(expected: np.ndarray, actual: np.ndarray) -> float:
    """The two-sample KS statistic of the non-missing values; NaN when either side has none."""
    a = np.sort(np.asarray(expected, dtype="float64"))
    b = np.sort(np.asarray(actual, dtype="float64"))
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if a.size == 0 or b.size == 0:
        return float("nan")
    values = np.concatenate([a, b])
    gap = (
        np.searchsorted(a, values, side="right") / a.size - np.searchsorted(b, values, side="right") / b.size
    )
    return float(np.max(np.abs(gap)))
