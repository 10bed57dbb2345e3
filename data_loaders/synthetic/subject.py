"""One subject, end to end: its random stream, anatomy, tumour, images, files and record."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_loaders.synthetic.anatomy import random_anatomy
from data_loaders.synthetic.geometry import volume_geometry
from data_loaders.synthetic.parameters import CohortParameters
from data_loaders.synthetic.render import render_modalities, skull_stripped, subject_tissue_means, tissue_probabilities
from data_loaders.synthetic.sites import SiteProfile, SubjectPlan
from data_loaders.synthetic.streams import seeded_torch, subject_sequence, torch_seed
from data_loaders.synthetic.tumour import ED, ET, NCR, anatomy_with_tumour
from data_loaders.synthetic.writing import save_subject


def synthesize_subject(
    plan: SubjectPlan, profile: SiteProfile, params: CohortParameters
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Images (float32, zero outside the brain) and segmentation (uint8 BraTS labels) of one subject.

    Depends only on the plan, the profile and the parameters, never on what was generated before.
    """
    sequence = subject_sequence(params.seed, plan.index)
    rng = np.random.default_rng(sequence)
    anatomy = random_anatomy(rng, volume_geometry(params))
    tissue_means = subject_tissue_means(rng, profile)
    maps = anatomy_with_tumour(rng, anatomy, profile, params, plan.subject_id)
    tissues = tissue_probabilities(maps, anatomy.texture[..., 3])
    with seeded_torch(torch_seed(sequence)):
        images = render_modalities(tissues, tissue_means, profile, params)
    return skull_stripped(images, maps.brain_mask.numpy(), profile), maps.seg


def write_subject(root: Path, plan: SubjectPlan, profile: SiteProfile, params: CohortParameters) -> dict:
    """Generate one subject, write its five NIfTI files and return its cohort.json record."""
    images, seg = synthesize_subject(plan, profile, params)
    save_subject(root / plan.subject_id, plan.subject_id, images, seg, volume_geometry(params).affine_array)
    voxel_ml = params.spacing_mm**3 / 1000.0
    volumes = {
        name: round(float((seg == value).sum() * voxel_ml), 3) for name, value in (("NCR", NCR), ("ED", ED), ("ET", ET))
    }
    return {
        "subject_id": plan.subject_id,
        "site": plan.site,
        "profile_site": plan.profile_site,
        "split": "test" if plan.site is None else "site",
        "volume_ml": volumes,
        "wt_ml": round(sum(volumes.values()), 3),
    }
