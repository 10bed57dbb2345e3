"""Anatomy: the MNI152 templates, deformed per subject and sampled on the output grid.

The MNI152 2009 GM/WM/brain-mask templates nilearn ships offline are deformed per subject by a
small random affine, a smooth random elastic field and the tumour's mass effect, all composed
into one sampling grid so the templates are interpolated once.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from data_loaders.synthetic.geometry import Geometry
from data_loaders.synthetic.parameters import FIELD_OF_VIEW_MM

NOISE_CLIP = 3.0  # smooth texture fields are clipped to +-3 std, which bounds a tumour's reach
COARSE_CELL_MM = FIELD_OF_VIEW_MM / 24  # node spacing of the coarse grid smooth noise is drawn on


@dataclass(frozen=True)
class Template:
    """MNI tissue maps as one tensor (1, 4, X, Y, Z): CSF, GM, WM, brain mask; 2 mm voxels."""

    maps: torch.Tensor
    origin_mm: np.ndarray  # world position of voxel (0, 0, 0)
    voxel_mm: float
    brain_centre_mm: np.ndarray  # centre of the brain's bounding box, placed at the cube's centre
    wm_candidates_mm: np.ndarray  # (K, 3) deep white-matter positions, centred world mm
    depth_mm: np.ndarray  # (K,) distance of each candidate to the brain surface


@dataclass(frozen=True)
class RandomAnatomy:
    """A subject's draws before the tumour: head pose and size, elastic field, tumour texture."""

    affine: np.ndarray  # 3x3, output mm -> template mm
    translation: np.ndarray
    elastic_mm: torch.Tensor  # (X, Y, Z, 3) displacement
    texture: torch.Tensor  # (X, Y, Z, 4): WT, core, necrosis boundary noise; heterogeneity


@functools.lru_cache(maxsize=4)
def load_template(spacing_mm: float) -> Template:
    """The MNI152 templates, smoothed to the output resolution (partial volume) when it is coarser."""
    from nilearn import datasets
    from scipy import ndimage

    brain = datasets.load_mni152_brain_mask(resolution=2)
    gm = datasets.load_mni152_gm_template(resolution=2).get_fdata().clip(0, 1)
    wm = datasets.load_mni152_wm_template(resolution=2).get_fdata().clip(0, 1)
    mask = brain.get_fdata() > 0.5
    voxel_mm = float(abs(brain.affine[0, 0]))
    gm, wm = gm * mask, wm * mask
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    maps = np.stack([csf, gm, wm, mask.astype(float)])
    smoothing = math.sqrt(max(spacing_mm**2 - voxel_mm**2, 0.0)) / 2.355 / voxel_mm
    if smoothing > 0.1:
        maps = np.stack([ndimage.gaussian_filter(m, smoothing) for m in maps])

    origin = brain.affine[:3, 3].astype(float)
    inside = np.argwhere(mask)
    centre = origin + voxel_mm * (inside.min(axis=0) + inside.max(axis=0)) / 2.0
    depth = ndimage.distance_transform_edt(mask, sampling=voxel_mm)
    deep_wm = np.argwhere((wm > 0.6) & (depth > 12.0))
    mni = origin + voxel_mm * deep_wm
    # Gliomas are mostly supratentorial: keep the cerebellum and brainstem out.
    deep_wm = deep_wm[(mni[:, 2] > 0.0) | ((mni[:, 2] > -15.0) & (mni[:, 1] > -30.0))]
    positions = origin + voxel_mm * deep_wm - centre
    return Template(
        maps=torch.from_numpy(maps[None].astype(np.float32)),
        origin_mm=origin,
        voxel_mm=voxel_mm,
        brain_centre_mm=centre,
        wm_candidates_mm=positions.astype(np.float32),
        depth_mm=depth[tuple(deep_wm.T)].astype(np.float32),
    )


def random_anatomy(rng: np.random.Generator, geometry: Geometry) -> RandomAnatomy:
    """Draw a subject's pose, elastic field and tumour texture, in this order, from ``rng``."""

    affine, translation = random_affine(rng)
    elastic = smooth_noise(rng, 3, geometry, correlation_mm=24.0) * rng.uniform(1.0, 2.5)
    # Oedema lobes are coarser than the core's and the necrosis's.
    texture = torch.cat(
        [smooth_noise(rng, 1, geometry, correlation_mm=16.0), smooth_noise(rng, 3, geometry, correlation_mm=8.0)],
        dim=-1,
    )
    return RandomAnatomy(affine, translation, elastic, texture.clamp(-NOISE_CLIP, NOISE_CLIP))


def random_affine(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A small head pose and head-size change: maps output mm to template mm.

    Brains come out 87-97% of the MNI152 size (the template is larger than most brains),
    which also keeps them clear of the 192 mm cube's faces. Poses vary little: BraTS scans
    are all registered to one atlas.
    """
    angles = np.deg2rad(rng.uniform(-4.0, 4.0, 3))
    rotation = rotation_matrix(angles)
    scale = np.diag(rng.uniform(1.03, 1.15, 3))
    return rotation @ scale, rng.uniform(-3.0, 3.0, 3)


def rotation_matrix(angles: np.ndarray) -> np.ndarray:
    """Rotation about x, then y, then z by ``angles`` (radians)."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def smooth_noise(rng: np.random.Generator, channels: int, geometry: Geometry, correlation_mm: float) -> torch.Tensor:
    """Smooth unit-variance random fields (X, Y, Z, channels): blurred noise on a coarse grid, then trilinear.

    The coarse grid has one node per ``COARSE_CELL_MM`` of field of view (24^3 for the 192 mm cube),
    so a field's correlation length in mm is the same on every geometry.
    """
    from scipy import ndimage

    coarse_size = tuple(math.ceil(fov / COARSE_CELL_MM) for fov in geometry.field_of_view_mm)
    sigma = correlation_mm / COARSE_CELL_MM
    coarse = np.stack([ndimage.gaussian_filter(c, sigma) for c in rng.normal(size=(channels, *coarse_size))])
    coarse /= coarse.std(axis=(1, 2, 3), keepdims=True) + 1e-6
    fine = F.interpolate(
        torch.from_numpy(coarse[None].astype(np.float32)), size=geometry.shape, mode="trilinear", align_corners=True
    )
    return fine[0].permute(1, 2, 3, 0).contiguous()


def sample_template(template: Template, source_mm: torch.Tensor) -> list[torch.Tensor]:
    """Trilinear samples of the template channels at centred world positions (X, Y, Z, 3)."""

    sizes = torch.tensor(template.maps.shape[2:], dtype=torch.float32)
    origin = torch.from_numpy((template.origin_mm - template.brain_centre_mm).astype(np.float32))
    voxels = (source_mm - origin) / template.voxel_mm
    normalised = voxels / (sizes - 1) * 2.0 - 1.0
    # grid_sample's last axis is (W, H, D) = (z, y, x) for a (N, C, x, y, z) input.
    grid = normalised.flip(-1)[None]
    sampled = F.grid_sample(template.maps, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return list(sampled[0])


def inside_field_of_view(brain_mask: torch.Tensor) -> torch.Tensor:
    """Clear the grid's outermost voxels: a rare large brain is cut like a field of view would cut it."""

    inner = torch.zeros_like(brain_mask)
    inner[1:-1, 1:-1, 1:-1] = True
    return brain_mask & inner
