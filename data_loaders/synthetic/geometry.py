"""Voxel grids a cohort is written on: the demo's cube, or the BraTS grid (240x240x155, 1 mm, LPS).

Every synthetic draw happens in *centred world* millimetres: RAS world coordinates whose origin
is the centre of the template brain's bounding box. A :class:`Geometry` says where each voxel of
the output grid lies in that frame, so anatomy, tumours and noise fields never depend on the grid.

- ``cube``: ``shape``^3 voxels over a 192 mm field of view, RAS axes, brain at the cube's centre.
- ``brats``: the BraTS 2021/2023 grid (SRI24 atlas space): 240x240x155 voxels of 1 mm, LPS axes,
  the affine of the BraTS releases, the brain centred where the real BraTS brains are.

Example:
    >>> from data_loaders.synthetic.geometry import brats_geometry
    >>> brats_geometry().shape
    (240, 240, 155)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from data_loaders.synthetic.parameters import BRATS_SHAPE, BRATS_SPACING_MM, FIELD_OF_VIEW_MM, CohortParameters

# The affine every BraTS 2021/2023 volume carries (qform = sform, code 1): LPS, 1 mm, j flipped at 239.
BRATS_AFFINE: tuple[tuple[float, ...], ...] = (
    (-1.0, 0.0, 0.0, 0.0),
    (0.0, -1.0, 0.0, 239.0),
    (0.0, 0.0, 1.0, 0.0),
    (0.0, 0.0, 0.0, 1.0),
)
# Voxel position of the brain's bounding-box centre in BraTS-GLI-00001-000 (bounding box
# 49-188, 28-217, 10-146 of its non-zero mask); SRI24 places every BraTS brain about there.
BRATS_BRAIN_CENTRE_VOXEL: tuple[float, float, float] = (118.5, 122.5, 78.0)


@dataclass(frozen=True)
class Geometry:
    """An output voxel grid placed in centred world millimetres.

    Args:
        name: ``"cube"`` or ``"brats"``.
        shape: Voxels per axis.
        spacing_mm: Isotropic voxel size.
        axis_signs: RAS direction of each voxel axis (+1 R/A/S, -1 L/P/I).
        centre_voxel: Voxel position of the centred frame's origin (the brain's centre).
        affine: The NIfTI affine the files are written with (voxel -> RAS world mm).
    """

    name: str
    shape: tuple[int, int, int]
    spacing_mm: float
    axis_signs: tuple[float, float, float]
    centre_voxel: tuple[float, float, float]
    affine: tuple[tuple[float, ...], ...]

    @property
    def affine_array(self) -> np.ndarray:
        return np.array(self.affine, dtype=float)

    @property
    def field_of_view_mm(self) -> tuple[float, float, float]:
        return tuple(n * self.spacing_mm for n in self.shape)

    def voxel_of(self, centred_mm: np.ndarray) -> np.ndarray:
        """The (fractional) voxel position of a point given in centred world mm."""
        return np.asarray(self.axis_signs) * (np.asarray(centred_mm) / self.spacing_mm) + np.asarray(self.centre_voxel)


def output_affine(shape: int) -> np.ndarray:
    """RAS affine of the output cube: isotropic 192 mm / shape voxels, world origin at the centre."""
    spacing = FIELD_OF_VIEW_MM / shape
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -spacing * (shape - 1) / 2.0
    return affine


@functools.lru_cache(maxsize=8)
def cube_geometry(shape: int) -> Geometry:
    """The demo cube: ``shape``^3 voxels over 192 mm, RAS, brain centre at the cube's centre."""
    centre = (shape - 1) / 2.0
    return Geometry(
        name="cube",
        shape=(shape,) * 3,
        spacing_mm=FIELD_OF_VIEW_MM / shape,
        axis_signs=(1.0, 1.0, 1.0),
        centre_voxel=(centre,) * 3,
        affine=tuple(tuple(float(v) for v in row) for row in output_affine(shape)),
    )


@functools.lru_cache(maxsize=1)
def brats_geometry() -> Geometry:
    """The BraTS grid: 240x240x155 voxels of 1 mm, LPS, the brain where SRI24 puts it."""
    return Geometry(
        name="brats",
        shape=BRATS_SHAPE,
        spacing_mm=BRATS_SPACING_MM,
        axis_signs=(-1.0, -1.0, 1.0),
        centre_voxel=BRATS_BRAIN_CENTRE_VOXEL,
        affine=BRATS_AFFINE,
    )


def volume_geometry(params: CohortParameters) -> Geometry:
    """The grid the cohort of ``params`` is written on."""
    return brats_geometry() if params.geometry == "brats" else cube_geometry(params.shape)


@functools.lru_cache(maxsize=2)
def grid_mm(geometry: Geometry) -> torch.Tensor:
    """Centred world coordinates (X, Y, Z, 3) of every voxel centre; shared, so never modify it in place."""
    axes = [
        (torch.arange(n, dtype=torch.float32) - centre) * geometry.spacing_mm * sign
        for n, centre, sign in zip(geometry.shape, geometry.centre_voxel, geometry.axis_signs)
    ]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
