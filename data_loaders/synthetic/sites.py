"""Sites and subjects: each site's scanner and population, the long-tailed site sizes, who goes where.

Per-site scanner effects (contrast, gamma, bias field, blur, slice thickness, ghosting, noise,
intensity scale) and a per-site tumour-size distribution make the federation non-IID; site sizes
follow a long (Zipf-like) tail as in FeTS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_loaders.synthetic.parameters import MIN_SUBJECTS_PER_SITE, MODALITIES, TISSUES, CohortParameters
from data_loaders.synthetic.streams import COHORT_STREAM, SITE_STREAM, stream_rng

SUBJECT_PREFIX = "SYNTH_"


@dataclass(frozen=True)
class SiteProfile:
    """One site's scanner and population: the effect parameters that make sites differ."""

    site: int
    contrast_factors: dict[str, list[float]]  # per modality, per tissue multiplicative change
    log_gamma: float
    bias_coefficient: float
    blur_std_mm: float
    slice_axis: int
    slice_thickness_mm: float  # equal to the voxel spacing when the site acquires isotropically
    ghosting_probability: float
    noise_std: float  # relative to T1 white matter (about 0.85)
    intensity_scale: float
    tumour_median_wt_ml: float
    tumour_volume_spread: float  # sigma of log WT volume
    necrosis_probability: float


@dataclass(frozen=True)
class SubjectPlan:
    """Which subject to make and with which site's profile."""

    subject_id: str
    index: int  # the number in the id; seeds the subject's own random stream
    site: int | None  # partition it belongs to; None for held-out test subjects
    profile_site: int  # whose scanner profile and tumour sizes it gets


def draw_site_profile(params: CohortParameters, site: int) -> SiteProfile:
    """A site's scanner effects and tumour population, from the site's own random stream.

    Intensity scale, noise and tumour size are stratified over the sites, so that even a
    federation of three spans their ranges (non-IID whatever the seed).
    """
    rng = stream_rng(params.seed, SITE_STREAM, site)

    def stratified(low: float, high: float, stratum_stream: int) -> float:
        """Log-uniform draw from this site's own slice of [low, high]."""
        order = stream_rng(params.seed, COHORT_STREAM, stratum_stream).permutation(params.n_sites)
        quantile = (order[site - 1] + rng.random()) / params.n_sites
        return float(np.exp(np.log(low) + quantile * (np.log(high) - np.log(low))))

    contrast = {m: [1.0] + np.exp(rng.normal(0.0, 0.06, len(TISSUES) - 1)).round(4).tolist() for m in MODALITIES}
    anisotropic = rng.random() < 0.6
    slice_axis = int(rng.choice([0, 1, 2], p=[0.2, 0.2, 0.6]))
    thickness = float(rng.uniform(3.5, 6.0)) if anisotropic else params.spacing_mm
    ghosting = float(rng.uniform(0.3, 0.7)) if rng.random() < 0.25 else 0.0
    return SiteProfile(
        site=site,
        contrast_factors=contrast,
        log_gamma=round(float(rng.uniform(-0.3, 0.3)), 4),
        bias_coefficient=round(float(rng.uniform(0.1, 0.5)), 4),
        blur_std_mm=round(float(rng.uniform(0.5, 1.3)), 4),
        slice_axis=slice_axis,
        slice_thickness_mm=round(max(thickness, params.spacing_mm), 4),
        ghosting_probability=round(ghosting, 4),
        noise_std=round(stratified(0.005, 0.022, 1), 5),
        intensity_scale=round(stratified(100.0, 4000.0, 2), 2),
        tumour_median_wt_ml=round(stratified(40.0, 140.0, 3), 2),
        tumour_volume_spread=round(float(rng.uniform(0.3, 0.6)), 4),
        necrosis_probability=round(float(rng.uniform(0.7, 0.95)), 4),
    )


def long_tail_site_sizes(n_sites: int, n_subjects: int, rng: np.random.Generator) -> list[int]:
    """Site sizes, largest first: a Zipf-like tail on top of the minimum per site."""
    exponent = rng.uniform(1.1, 1.7)
    weights = np.arange(1, n_sites + 1) ** -exponent * np.exp(rng.normal(0.0, 0.15, n_sites))
    weights = np.sort(weights)[::-1] / weights.sum()
    spare = n_subjects - MIN_SUBJECTS_PER_SITE * n_sites
    extra = np.floor(weights * spare).astype(int)
    by_remainder = np.argsort(-(weights * spare - extra), kind="stable")
    extra[by_remainder[: spare - extra.sum()]] += 1  # largest-remainder rounding keeps the sum exact
    return (extra + MIN_SUBJECTS_PER_SITE).tolist()


def plan_subjects(params: CohortParameters) -> list[SubjectPlan]:
    """Ids, sites and scanner profiles of every subject; held-out subjects come last."""
    rng = stream_rng(params.seed, COHORT_STREAM)
    sizes = long_tail_site_sizes(params.n_sites, params.n_subjects, rng)
    # Shuffled ids, so that an id reveals nothing about its site (as in BraTS).
    indices = rng.permutation(np.arange(1, params.n_subjects + params.n_test + 1)).tolist()
    site_of = np.repeat(np.arange(1, params.n_sites + 1), sizes).tolist()
    test_profiles = rng.integers(1, params.n_sites + 1, params.n_test).tolist()
    plans = [SubjectPlan(subject_id(i), i, site, site) for i, site in zip(indices, site_of)]
    plans += [
        SubjectPlan(subject_id(i), i, None, profile) for i, profile in zip(indices[params.n_subjects :], test_profiles)
    ]
    return plans


def subject_id(index: int) -> str:
    """The BraTS-style id of subject ``index``, e.g. ``SYNTH_00007``."""
    return f"{SUBJECT_PREFIX}{index:05d}"
