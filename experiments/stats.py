"""Small, honest statistics for comparing runs: bootstrap CIs, IQM, Wilson intervals."""

from __future__ import annotations

import math

import numpy as np


def bootstrap_ci(
    values: np.ndarray, statistic=np.mean, confidence: float = 0.95, reps: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """
    Point estimate and percentile bootstrap confidence interval of ``statistic`` over ``values``.

    :return: ``(estimate, low, high)``; with one value the interval is that value.
    """
    values = np.asarray(values, dtype=float)
    estimate = float(statistic(values))
    if len(values) < 2:
        return estimate, estimate, estimate
    rng = np.random.default_rng(seed)
    samples = values[rng.integers(0, len(values), size=(reps, len(values)))]
    replicated = np.array([statistic(sample) for sample in samples])
    tail = (1 - confidence) / 2 * 100
    return estimate, float(np.percentile(replicated, tail)), float(np.percentile(replicated, 100 - tail))


def _bootstrap_two_groups(
    statistic, treated: np.ndarray, control: np.ndarray, confidence: float, reps: int, seed: int
) -> tuple[float, float, float]:
    """
    ``statistic(treated, control)`` and its percentile bootstrap CI, each group resampled on its own.
    ``statistic`` takes arrays whose last axis holds the runs (a leading axis holds the replicates).
    """
    treated, control = np.asarray(treated, dtype=float), np.asarray(control, dtype=float)
    estimate = float(statistic(treated, control))
    if len(treated) < 2 or len(control) < 2:
        return estimate, estimate, estimate
    rng = np.random.default_rng(seed)
    first = treated[rng.integers(0, len(treated), size=(reps, len(treated)))]
    second = control[rng.integers(0, len(control), size=(reps, len(control)))]
    replicated = statistic(first, second)
    tail = (1 - confidence) / 2 * 100
    return estimate, float(np.percentile(replicated, tail)), float(np.percentile(replicated, 100 - tail))


def _mean_difference(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    return first.mean(-1) - second.mean(-1)


def _probability_above(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    above = (first[..., :, None] > second[..., None, :]).mean((-2, -1))
    tied = (first[..., :, None] == second[..., None, :]).mean((-2, -1))
    return above + 0.5 * tied


def difference_ci(
    treated: np.ndarray, control: np.ndarray, confidence: float = 0.95, reps: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``treated`` minus mean of ``control`` with a bootstrap CI (each group resampled)."""
    return _bootstrap_two_groups(_mean_difference, treated, control, confidence, reps, seed)


def probability_of_improvement(
    treated: np.ndarray, control: np.ndarray, confidence: float = 0.95, reps: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """
    P(a run of ``treated`` scores above a run of ``control``), ties counting half (rliable's
    probability of improvement on one task), with a bootstrap CI (each group resampled).
    """
    return _bootstrap_two_groups(_probability_above, treated, control, confidence, reps, seed)


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (Agarwal et al. 2021)."""
    values = np.sort(np.asarray(values, dtype=float).reshape(-1))
    if len(values) < 4:
        return float(values.mean())
    cut = len(values) // 4
    return float(values[cut : len(values) - cut].mean())


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate."""
    if trials == 0:
        return math.nan, math.nan
    rate = successes / trials
    denominator = 1 + z**2 / trials
    centre = (rate + z**2 / (2 * trials)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / trials + z**2 / (4 * trials**2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_ci(values: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """Mean and half-width of a normal-approximation 95% CI."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()) if len(values) else math.nan, math.nan
    return float(values.mean()), float(z * values.std(ddof=1) / math.sqrt(len(values)))
