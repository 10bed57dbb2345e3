"""The study's uncertainty: bootstrap confidence intervals over test subjects and seeds, paired tests.

A method's held-out scores form a seeds x subjects matrix (every seed scores the same test
subjects). Its 95% interval resamples both, seeds and subjects with replacement, and takes
the 2.5th and 97.5th percentiles of the resampled means: the two sources of variation a study
group cares about (another draw of patients, another training run). A paired comparison does
the same on the subject-by-subject differences of two methods trained with the same seeds,
and adds the Wilcoxon signed-rank test on the differences averaged over seeds (one pair per
test subject). The resampling is seeded, so the same scores always give the same interval.

Example::

    scores = np.array([[0.80, 0.70, 0.90], [0.82, 0.68, 0.91]])  # 2 seeds x 3 subjects
    low, high = bootstrap_ci(scores)
    comparison = paired_comparison(scores, scores - 0.1)  # {"mean_difference": 0.1, ...}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import wilcoxon

BOOTSTRAP_SAMPLES = 5000
BOOTSTRAP_SEED = 0  # fixed: two runs of a study print the same intervals
CONFIDENCE = 0.95


def score_matrix(per_seed: Mapping[int, Mapping[str, Mapping[str, float]]], metric: str) -> np.ndarray:
    """seeds x subjects matrix of ``metric`` from ``{seed: {subject: {metric: value}}}``.

    Only the subjects every seed scored are kept, in sorted order, so two methods' matrices pair up.
    """
    if not per_seed:
        return np.empty((0, 0))
    subjects = sorted(set.intersection(*(set(scores) for scores in per_seed.values())))
    return np.array([[per_seed[seed][s][metric] for s in subjects] for seed in sorted(per_seed)], dtype=float)


def bootstrap_means(scores: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Means of ``samples`` resamples of a seeds x subjects matrix, both axes drawn with replacement."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or 0 in scores.shape:
        raise ValueError(f"need a non-empty seeds x subjects matrix, got shape {scores.shape}")
    rng = np.random.default_rng(seed)
    n_seeds, n_subjects = scores.shape
    seed_draws = rng.integers(0, n_seeds, size=(samples, n_seeds))
    subject_draws = rng.integers(0, n_subjects, size=(samples, n_subjects))
    # scores[seeds][:, subjects] for every resample at once: (samples, n_seeds, n_subjects)
    resampled = scores[seed_draws[:, :, None], subject_draws[:, None, :]]
    return np.nanmean(resampled, axis=(1, 2))


def bootstrap_ci(scores: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile interval of the mean of a seeds x subjects matrix."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    means = bootstrap_means(scores)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.nanpercentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def paired_comparison(first: np.ndarray, second: np.ndarray) -> dict[str, float | int]:
    """``first`` minus ``second`` (seeds x subjects, same seeds and subjects): mean, interval, Wilcoxon p."""
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if first.shape != second.shape:
        raise ValueError(
            f"paired scores must have the same seeds x subjects shape, got {first.shape} and {second.shape}"
        )
    differences = first - second
    low, high = bootstrap_ci(differences)
    per_subject = np.nanmean(differences, axis=0)
    p_value = float("nan") if np.allclose(per_subject, 0.0) else float(wilcoxon(per_subject).pvalue)
    return {
        "mean_difference": float(np.nanmean(differences)),
        "ci_low": low,
        "ci_high": high,
        "wilcoxon_p": p_value,
        "subjects": int(differences.shape[1]),
        "seeds": int(differences.shape[0]),
    }


def mean_dice_matrix(per_seed: Mapping[int, Mapping[str, Mapping[str, float]]], regions: Sequence[str]) -> np.ndarray:
    """seeds x subjects matrix of the mean Dice over ``regions`` (e.g. et, tc, wt)."""
    return np.mean([score_matrix(per_seed, f"dice_{region}") for region in regions], axis=0)
