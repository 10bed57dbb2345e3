"""Tumours: their geometry, their mass effect on the anatomy, and their BraTS labels.

A tumour is a blobby ellipsoid (smoothed-noise boundary) of oedema around a tumour core, the core
an enhancing rim around a necrotic centre (occasionally no necrosis), nested by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from data_loaders.synthetic.anatomy import (
    NOISE_CLIP,
    RandomAnatomy,
    Template,
    inside_field_of_view,
    load_template,
    sample_template,
)
from data_loaders.synthetic.geometry import Geometry, grid_mm, volume_geometry
from data_loaders.synthetic.parameters import CohortParameters
from data_loaders.synthetic.sites import SiteProfile

# BraTS 2021 label values.
NCR, ED, ET = 1, 2, 4

# Boundary noise amplitudes (in units of the normalised radius) and the reach they imply.
WT_BOUNDARY_NOISE, CORE_BOUNDARY_NOISE, NECROSIS_BOUNDARY_NOISE = 0.22, 0.2, 0.28
WT_WHITE_MATTER_PULL = 0.35  # oedema reaches further along white matter
MIN_WT_ML = 2.0  # a drawn tumour squeezed smaller than this by the brain's edge is drawn again
TUMOUR_ATTEMPTS = 10
WT_REACH = 1.0 + WT_BOUNDARY_NOISE * NOISE_CLIP + WT_WHITE_MATTER_PULL * 0.5


@dataclass(frozen=True)
class TumourShape:
    """Where a tumour lies and how its whole tumour, core and necrosis are shaped."""

    centre_mm: np.ndarray  # output world coordinates of the whole tumour's centre
    rotation: np.ndarray  # 3x3, columns are the ellipsoid axes
    wt_radii_mm: np.ndarray
    core_offset_mm: np.ndarray  # the core sits off-centre in its oedema
    core_fraction: float  # core radii / WT radii
    necrosis_offset_mm: np.ndarray  # so the enhancing rim is thicker on one side
    necrosis_fraction: float  # necrosis radii / core radii; 0 means no necrosis
    mass_effect: float  # 0..1, strength of the radial push


@dataclass(frozen=True)
class SubjectMaps:
    """Deformed tissue maps and the tumour labels on the output grid."""

    csf: torch.Tensor
    gm: torch.Tensor
    wm: torch.Tensor
    brain_mask: torch.Tensor
    seg: np.ndarray


def anatomy_with_tumour(
    rng: np.random.Generator, anatomy: RandomAnatomy, profile: SiteProfile, params: CohortParameters, subject_id: str
) -> SubjectMaps:
    """Place a tumour, deform the template around it and label it; redraw a tumour the brain squeezes away."""

    template = load_template(params.spacing_mm)
    geometry = volume_geometry(params)
    output_mm = grid_mm(geometry)
    for _ in range(TUMOUR_ATTEMPTS):
        tumour = random_tumour(rng, template, profile, anatomy.affine, anatomy.translation)
        source_mm = mass_effect(output_mm, tumour) @ torch.from_numpy(anatomy.affine.T.astype(np.float32))
        source_mm += torch.from_numpy(anatomy.translation.astype(np.float32)) + anatomy.elastic_mm
        csf, gm, wm, brain = sample_template(template, source_mm)
        brain_mask = inside_field_of_view(brain > 0.5)
        seg = tumour_labels(output_mm, geometry, tumour, anatomy.texture, wm, csf, brain_mask)
        if (seg > 0).sum() * params.spacing_mm**3 >= MIN_WT_ML * 1000:
            return SubjectMaps(csf, gm, wm, brain_mask, seg)
    raise RuntimeError(f"{subject_id}: no tumour of at least {MIN_WT_ML} mL fits after {TUMOUR_ATTEMPTS} attempts")


def random_tumour(
    rng: np.random.Generator, template: Template, profile: SiteProfile, affine: np.ndarray, translation: np.ndarray
) -> TumourShape:
    """A tumour of the site's size distribution, centred in deep white matter of the posed template."""
    volume_ml = float(
        np.clip(profile.tumour_median_wt_ml * np.exp(rng.normal(0.0, profile.tumour_volume_spread)), 12.0, 250.0)
    )
    radius = (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    # Deep enough that most of the tumour lies inside the brain; relax for big tumours.
    depth_needed = min(0.6 * radius, float(np.quantile(template.depth_mm, 0.8)))
    candidates = template.wm_candidates_mm[template.depth_mm >= depth_needed]
    centre_template = candidates[rng.integers(len(candidates))]
    centre = np.linalg.solve(affine, centre_template - translation)
    axis_ratios = np.exp(rng.normal(0.0, 0.15, 3))
    quaternion = rng.normal(size=4)
    core_fraction = float(rng.uniform(0.5, 0.78))
    has_necrosis = rng.random() < profile.necrosis_probability
    return TumourShape(
        centre_mm=centre,
        rotation=quaternion_matrix(quaternion / np.linalg.norm(quaternion)),
        wt_radii_mm=radius * axis_ratios / np.cbrt(axis_ratios.prod()),
        core_offset_mm=rng.normal(0.0, 0.12 * radius, 3),
        core_fraction=core_fraction,
        necrosis_offset_mm=rng.normal(0.0, 0.08 * radius * core_fraction, 3),
        necrosis_fraction=float(rng.uniform(0.5, 0.8)) if has_necrosis else 0.0,
        mass_effect=float(rng.uniform(0.25, 0.55)),
    )


def quaternion_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of the unit quaternion ``q = (w, x, y, z)``."""
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def mass_effect(grid_mm: torch.Tensor, tumour: TumourShape) -> torch.Tensor:
    """Where each output voxel samples the anatomy: closer to the tumour, so tissue looks pushed outward.

    r_source = r (1 - k exp(-r^2 / 2 sigma^2)) is monotonic in r for k < 1, so nothing folds.
    """

    centre = torch.from_numpy((tumour.centre_mm + tumour.core_offset_mm).astype(np.float32))
    offset = grid_mm - centre
    sigma = float(np.cbrt(tumour.wt_radii_mm.prod())) * 0.9
    squared = (offset**2).sum(dim=-1, keepdim=True)
    return centre + offset * (1.0 - tumour.mass_effect * torch.exp(-squared / (2.0 * sigma**2)))


def tumour_box(tumour: TumourShape, geometry: Geometry) -> tuple[slice, slice, slice]:
    """Voxel box that holds every voxel the whole tumour can reach (saves work on big volumes)."""
    spacing = geometry.spacing_mm
    reach = WT_REACH * tumour.wt_radii_mm.max() + 2 * spacing
    centre = geometry.voxel_of(tumour.centre_mm)
    shape = np.asarray(geometry.shape)
    low = np.clip(np.floor(centre - reach / spacing), 0, shape).astype(int)
    high = np.clip(np.ceil(centre + reach / spacing) + 1, 0, shape).astype(int)
    return tuple(slice(lo, hi) for lo, hi in zip(low, high))


def tumour_labels(
    grid_mm: torch.Tensor,
    geometry: Geometry,
    tumour: TumourShape,
    texture: torch.Tensor,
    wm: torch.Tensor,
    csf: torch.Tensor,
    brain_mask: torch.Tensor,
) -> np.ndarray:
    """BraTS labels: oedema around a core, the core an enhancing rim around necrosis, nested by erosion."""
    from scipy import ndimage

    full_shape = tuple(brain_mask.shape)
    box = tumour_box(tumour, geometry)
    grid_mm, texture, wm, csf, brain_mask = grid_mm[box], texture[box], wm[box], csf[box], brain_mask[box]
    rotation = torch.from_numpy(tumour.rotation.astype(np.float32))

    def inside(origin_mm: np.ndarray, radii_mm: np.ndarray, noise: torch.Tensor) -> np.ndarray:
        origin = torch.from_numpy(origin_mm.astype(np.float32))
        scaled = ((grid_mm - origin) @ rotation) / torch.from_numpy(radii_mm.astype(np.float32))
        return ((scaled**2).sum(dim=-1).sqrt() < 1.0 + noise).numpy()

    # Oedema spreads along white matter and spares the ventricles.
    wt = inside(
        tumour.centre_mm, tumour.wt_radii_mm, WT_BOUNDARY_NOISE * texture[..., 0] + WT_WHITE_MATTER_PULL * (wm - 0.5)
    )
    wt &= (brain_mask & (csf < 0.6)).numpy()
    core_centre = tumour.centre_mm + tumour.core_offset_mm
    core_radii = tumour.wt_radii_mm * tumour.core_fraction
    core = inside(core_centre, core_radii, CORE_BOUNDARY_NOISE * texture[..., 1])
    core &= ndimage.binary_erosion(wt)
    labels = np.zeros(wt.shape, dtype=np.uint8)
    labels[wt] = ED
    labels[core] = ET
    if tumour.necrosis_fraction > 0:
        necrosis = inside(
            core_centre + tumour.necrosis_offset_mm,
            core_radii * tumour.necrosis_fraction,
            NECROSIS_BOUNDARY_NOISE * texture[..., 2],
        )
        labels[necrosis & ndimage.binary_erosion(core)] = NCR
    seg = np.zeros(full_shape, dtype=np.uint8)
    seg[box] = labels
    return seg
