"""What a synthetic cohort is made of, and the checks on the parameters that choose one.

A bad parameter raises :class:`CohortParameterError`, a :class:`~fedtumor.core.errors.ConfigError`
whose one-line message names the run-config key and the ``fedtumor synth`` option that set it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from fedtumor.core.errors import ConfigError

GENERATOR_VERSION = "1"
MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
FIELD_OF_VIEW_MM = 192.0
MIN_SUBJECTS_PER_SITE = 3
MIN_SHAPE = 32
GEOMETRIES: tuple[str, ...] = ("cube", "brats")  # data_loaders/synthetic/geometry.py
BRATS_SHAPE: tuple[int, int, int] = (240, 240, 155)
BRATS_SPACING_MM = 1.0

# Tissue channels of the partial-volume map the images are drawn from.
TISSUES: tuple[str, ...] = ("background", "csf", "gm", "wm", "oedema", "enhancing", "necrosis")

# Where each parameter comes from: its run-config key and its ``fedtumor synth`` option.
PARAMETER_SOURCES: dict[str, tuple[str, str]] = {
    "n_sites": ("synth-sites", "--sites"),
    "n_subjects": ("synth-subjects", "--subjects"),
    "n_test": ("synth-test-subjects", "--test-subjects"),
    "seed": ("synth-seed", "--seed"),
    "shape": ("synth-shape", "--shape"),
    "geometry": ("synth-geometry", "--geometry"),
}


class CohortParameterError(ConfigError, ValueError):
    """A cohort parameter out of range; also a ``ValueError``, which callers caught before."""

    def __init__(self, parameter: str, problem: str):
        key, option = PARAMETER_SOURCES[parameter]
        self.key = key
        super().__init__(f"run-config key '{key}' (fedtumor synth {option}): {problem}")


@dataclass(frozen=True)
class CohortParameters:
    """Everything that chooses a cohort; equal parameters give byte-identical cohorts.

    Args:
        n_sites: Number of sites (partitions).
        n_subjects: Site (training-side) subjects over all sites.
        n_test: Held-out test subjects that no site trains on.
        seed: Entropy of every random stream.
        shape: Edge length, in voxels, of the cubic volumes; ignored by the ``brats`` geometry.
        geometry: ``"cube"`` (``shape``^3 over 192 mm) or ``"brats"`` (240x240x155 at 1 mm, LPS).
    """

    n_sites: int
    n_subjects: int
    n_test: int
    seed: int
    shape: int
    geometry: str = "cube"

    @property
    def spacing_mm(self) -> float:
        return BRATS_SPACING_MM if self.geometry == "brats" else FIELD_OF_VIEW_MM / self.shape

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        return BRATS_SHAPE if self.geometry == "brats" else (self.shape,) * 3

    def as_dict(self) -> dict:
        """The cache key's parameters; a cube cohort's are what they were before geometries existed."""
        values = asdict(self)
        if values.pop("geometry") == "cube":
            return {**values, "spacing_mm": self.spacing_mm}
        values.pop("shape")
        return {**values, "geometry": self.geometry, "shape": list(self.volume_shape), "spacing_mm": self.spacing_mm}


def validated_parameters(
    n_sites: int, n_subjects: int, seed: int, shape: int, n_test: int | None, geometry: str = "cube"
) -> CohortParameters:
    """Check the parameters and fill in the default number of test subjects (about 20%).

    Raises:
        CohortParameterError: naming the run-config key of the first parameter out of range.
    """
    if n_sites < 1:
        raise CohortParameterError("n_sites", f"{n_sites} sites; a cohort needs at least 1")
    if n_subjects < MIN_SUBJECTS_PER_SITE * n_sites:
        raise CohortParameterError(
            "n_subjects",
            f"{n_subjects} subjects cannot fill {n_sites} sites (at least {MIN_SUBJECTS_PER_SITE} each, "
            f"so at least {MIN_SUBJECTS_PER_SITE * n_sites})",
        )
    if seed < 0:
        raise CohortParameterError("seed", f"{seed} is negative; the seed must be a non-negative integer")
    if geometry not in GEOMETRIES:
        raise CohortParameterError("geometry", f"{geometry!r} is not one of {', '.join(GEOMETRIES)}")
    if geometry == "cube" and shape < MIN_SHAPE:
        raise CohortParameterError("shape", f"{shape} voxels is too small; the shape must be at least {MIN_SHAPE}")
    if n_test is None:
        n_test = max(2, round(0.2 * n_subjects))
    if n_test < 1:
        raise CohortParameterError("n_test", f"{n_test} held-out test subjects; the cohort needs at least 1")
    return CohortParameters(
        n_sites=n_sites, n_subjects=n_subjects, n_test=n_test, seed=seed, shape=shape, geometry=geometry
    )
