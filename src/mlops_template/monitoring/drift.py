"""Distribution shift between a baseline sample and a window of served rows.

- Population stability index over the baseline's quantile bins (deciles by default), with
  missing values as a bin of their own: sum((a - e) * ln(a / e)) over the bins' shares, shares
  floored at `epsilon` so an empty bin does not make it infinite. Discrete features get fewer
  bins (repeated quantiles collapse), which is what they need. String (categorical) inputs are
  binned by value instead: the baseline's values, one bin for values it never had, and missing.
- Two-sample Kolmogorov-Smirnov statistic (`scipy.stats.ks_2samp`), missing values left out:
  the statistic only, not its p-value, which on large samples flags any difference at all.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

DEFAULT_BINS = 10
EPSILON = 1e-4


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The share of `values` in each bin cut at `edges`, then the share of missing values."""
    missing = np.isnan(values)
    bins = np.searchsorted(edges, values[~missing], side="right")
    counts = np.append(np.bincount(bins, minlength=len(edges) + 1), missing.sum())
    return counts / len(values)


def _psi(expected_shares: np.ndarray, actual_shares: np.ndarray, epsilon: float) -> float:
    e, a = np.clip(expected_shares, epsilon, None), np.clip(actual_shares, epsilon, None)
    return float(np.sum((a - e) * np.log(a / e)))


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
    return _psi(_shares(expected, edges), _shares(actual, edges), epsilon)


def _category_shares(values: pd.Series, categories: pd.Index) -> np.ndarray:
    """Shares of each of `categories`, then of other values, then of missing values."""
    present = values.dropna().astype(str)
    counts = present.value_counts().reindex(categories, fill_value=0).to_numpy()
    other = len(present) - counts.sum()
    return np.append(counts, [other, values.isna().sum()]) / len(values)


def categorical_psi(expected: pd.Series, actual: pd.Series, epsilon: float = EPSILON) -> float:
    """PSI of a string input over the baseline's values; NaN when either side is empty."""
    if expected.empty or actual.empty:
        return float("nan")
    categories = pd.Index(sorted(expected.dropna().astype(str).unique()))
    return _psi(_category_shares(expected, categories), _category_shares(actual, categories), epsilon)


def ks_statistic(expected: np.ndarray, actual: np.ndarray) -> float:
    """The two-sample KS statistic of the non-missing values; NaN when either side has none."""
    a, b = np.asarray(expected, dtype="float64"), np.asarray(actual, dtype="float64")
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(ks_2samp(a, b).statistic)
