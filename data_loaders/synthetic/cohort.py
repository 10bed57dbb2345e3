"""A synthetic multi-site brain-tumour cohort, written exactly like BraTS 2021 plus a FeTS partition CSV.

No real BraTS data can be downloaded here, so this module stands in for it (see DESIGN.md, "Data"):

- anatomy: the MNI152 2009 GM/WM/brain-mask templates nilearn ships offline, deformed per subject
  by a small random affine, a smooth random elastic field and the tumour's mass effect, all
  composed into one sampling grid so the templates are interpolated once;
- tumour: a blobby ellipsoid (smoothed-noise boundary) of oedema around a tumour core, the core an
  enhancing rim around a necrotic centre (occasionally no necrosis), nested by construction;
- images: four modalities drawn from the tissue probability maps the way ``tio.LabelsToImage`` does
  (per-tissue mean + std noise, weighted by partial volume), each with its own per-tissue contrast;
- sites: per-site scanner effects (contrast, gamma, bias field, blur, slice thickness, ghosting,
  noise, intensity scale) and a per-site tumour-size distribution make the federation non-IID;
  site sizes follow a long (Zipf-like) tail as in FeTS.

Everything is deterministic from the seed: cohort-level choices, each site's profile and each
subject come from their own ``numpy.random.SeedSequence`` stream (and a torch seed derived from
it), so a subject is reproducible regardless of generation order. ``cohort.json`` is written last
and doubles as the cache key.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchio as tio

GENERATOR_VERSION = "1"
MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
FIELD_OF_VIEW_MM = 192.0
SUBJECT_PREFIX = "SYNTH_"
MIN_SUBJECTS_PER_SITE = 3

COHORT_FILE = "cohort.json"
PARTIAL_FILE = ".cohort.partial.json"  # marks a generation in progress, so a rerun may overwrite it
LOCK_FILE = ".cohort.lock"
PARTITION_FILE = "partitioning.csv"
HELDOUT_FILE = "heldout.csv"
MONTAGE_FILE = "montage.png"

# BraTS 2021 label values.
NCR, ED, ET = 1, 2, 4

# Tissue channels of the partial-volume map the images are drawn from.
TISSUES: tuple[str, ...] = ("background", "csf", "gm", "wm", "oedema", "enhancing", "necrosis")

# Mean intensity per tissue (order of TISSUES), relative to T1 white matter at about 0.85.
# T1: WM > GM > CSF, tumour hypointense; T1ce: bright enhancing rim, dark necrosis;
# T2: CSF and oedema bright; FLAIR: CSF suppressed, oedema brightest.
TISSUE_MEANS: dict[str, tuple[float, ...]] = {
    "t1": (0.0, 0.22, 0.55, 0.85, 0.48, 0.58, 0.30),
    "t1ce": (0.0, 0.22, 0.55, 0.80, 0.50, 1.35, 0.25),
    "t2": (0.0, 1.00, 0.58, 0.40, 0.86, 0.68, 0.95),
    "flair": (0.0, 0.12, 0.60, 0.46, 0.98, 0.78, 0.52),
}
TISSUE_TEXTURE_STD = 0.012  # within-tissue voxel variation, before scanner noise
SUBJECT_CONTRAST_JITTER = 0.04  # relative spread of each tissue mean between subjects
OEDEMA_TISSUE_FRACTION = 0.75  # oedema infiltrates tissue: some underlying anatomy shows through

# Seed-sequence stream tags: each kind of draw gets its own stream.
_COHORT_STREAM, _SITE_STREAM, _SUBJECT_STREAM = 0, 1, 2


@dataclass(frozen=True)
class CohortInfo:
    """Where a cohort lies and what it holds."""

    root: Path  # absolute
    n_sites: int
    n_subjects: int  # site (training-side) subjects over all sites
    n_test: int  # held-out test subjects
    montage: Path  # absolute path of montage.png
    cached: bool  # True when an existing identical cohort was reused


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


@dataclass(frozen=True)
class CohortParameters:
    n_sites: int
    n_subjects: int
    n_test: int
    seed: int
    shape: int

    @property
    def spacing_mm(self) -> float:
        return FIELD_OF_VIEW_MM / self.shape

    def as_dict(self) -> dict:
        return {**asdict(self), "spacing_mm": self.spacing_mm}


# --------------------------------------------------------------------------- public entry point


def generate_cohort(
    out_dir: Path,
    n_sites: int,
    n_subjects: int,
    seed: int,
    shape: int = 64,
    n_test: int | None = None,
    progress: bool = True,
) -> CohortInfo:
    """Write (or reuse) a synthetic cohort in ``out_dir``; see the module docstring.

    Raises ValueError for invalid parameters (naming the CLI option) and when ``out_dir`` holds
    anything other than a cohort with exactly these parameters (never deletes user data).
    """
    params = _validated_parameters(n_sites, n_subjects, seed, shape, n_test)
    root = Path(out_dir).expanduser().resolve()
    info = CohortInfo(
        root=root,
        n_sites=params.n_sites,
        n_subjects=params.n_subjects,
        n_test=params.n_test,
        montage=root / MONTAGE_FILE,
        cached=True,
    )
    if _reusable_cohort(root, params):
        return info
    root.mkdir(parents=True, exist_ok=True)
    with _cohort_lock(root):
        # Another process (a simulated client, say) may have finished it while we waited.
        if _reusable_cohort(root, params):
            return info
        _write_cohort(root, params, progress)
    return CohortInfo(**{**asdict(info), "cached": False})


def _write_cohort(root: Path, params: CohortParameters, progress: bool) -> None:
    _write_json(root / PARTIAL_FILE, _cache_key(params))
    profiles = [draw_site_profile(params, site) for site in range(1, params.n_sites + 1)]
    plans = plan_subjects(params)
    records = []
    with _progress_bar(len(plans), enabled=progress) as advance:
        for plan in plans:
            records.append(write_subject(root, plan, profiles[plan.profile_site - 1], params))
            advance()
    _write_partitions(root, plans)
    _write_montage(root, plans, records, params.n_sites)
    # Written last: its presence means the cohort is complete.
    _write_json(root / COHORT_FILE, {**_cache_key(params), "sites": [asdict(p) for p in profiles], "subjects": records})
    (root / PARTIAL_FILE).unlink()


@contextmanager
def _cohort_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cohort folder, so concurrent callers generate it once."""
    import fcntl

    with open(root / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- parameters and cache


def _validated_parameters(n_sites: int, n_subjects: int, seed: int, shape: int, n_test: int | None) -> CohortParameters:
    if n_sites < 1:
        raise ValueError(f"--sites must be at least 1, got {n_sites}")
    if n_subjects < MIN_SUBJECTS_PER_SITE * n_sites:
        raise ValueError(
            f"--subjects must be at least {MIN_SUBJECTS_PER_SITE} per site "
            f"({MIN_SUBJECTS_PER_SITE * n_sites} for {n_sites} sites), got {n_subjects}"
        )
    if seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {seed}")
    if shape < 32:
        raise ValueError(f"--shape must be at least 32 voxels, got {shape}")
    if n_test is None:
        n_test = max(2, round(0.2 * n_subjects))
    if n_test < 1:
        raise ValueError(f"--test-subjects must be at least 1, got {n_test}")
    return CohortParameters(n_sites=n_sites, n_subjects=n_subjects, n_test=n_test, seed=seed, shape=shape)


def _cache_key(params: CohortParameters) -> dict:
    return {"generator": "fedtumor.synthetic", "generator_version": GENERATOR_VERSION, "parameters": params.as_dict()}


def _same_cohort(stored: dict, params: CohortParameters) -> bool:
    key = _cache_key(params)
    return all(stored.get(name) == key[name] for name in key)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _reusable_cohort(root: Path, params: CohortParameters) -> bool:
    """True when ``root`` already holds this exact cohort, complete; raise when it holds anything else.

    Returns False (generate) for a missing or empty folder, or for our own unfinished or
    damaged generation with the same parameters.
    """
    if root.exists() and not root.is_dir():
        raise ValueError(f"cohort folder {root} exists and is not a folder")
    if not root.exists() or not any(entry.name != LOCK_FILE for entry in root.iterdir()):
        return False
    for marker in (COHORT_FILE, PARTIAL_FILE):
        if (root / marker).exists():
            stored = _read_json(root / marker)
            if not _same_cohort(stored, params):
                found = _describe(stored.get("parameters"), stored.get("generator_version"))
                wanted = _describe(params.as_dict(), GENERATOR_VERSION)
                raise ValueError(
                    f"cohort folder {root} holds a synthetic cohort with other parameters ({found}) "
                    f"than requested ({wanted}); choose another --out or delete that folder"
                )
            return marker == COHORT_FILE and _cohort_complete(root, stored)
    raise ValueError(
        f"cohort folder {root} is not empty and holds no synthetic cohort ({COHORT_FILE}); "
        "choose another --out or an empty folder"
    )


def _describe(parameters: object, version: object) -> str:
    if not isinstance(parameters, dict):
        return "unreadable"
    names = {"n_sites": "sites", "n_subjects": "subjects", "n_test": "test", "seed": "seed", "shape": "shape"}
    shown = [f"{label}={parameters.get(key, '?')}" for key, label in names.items()]
    return ", ".join([*shown, f"generator {version or '?'}"])


def _cohort_complete(root: Path, stored: dict) -> bool:
    expected = [root / PARTITION_FILE, root / HELDOUT_FILE, root / MONTAGE_FILE]
    for subject in stored.get("subjects", []):
        sid = subject["subject_id"]
        expected += [root / sid / f"{sid}_{suffix}.nii.gz" for suffix in (*MODALITIES, "seg")]
    return bool(stored.get("subjects")) and all(path.is_file() for path in expected)


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


# --------------------------------------------------------------------------- cohort-level draws


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=stream))


def draw_site_profile(params: CohortParameters, site: int) -> SiteProfile:
    """A site's scanner effects and tumour population, from the site's own random stream.

    Intensity scale, noise and tumour size are stratified over the sites, so that even a
    federation of three spans their ranges (non-IID whatever the seed).
    """
    rng = _rng(params.seed, _SITE_STREAM, site)

    def stratified(low: float, high: float, stratum_stream: int) -> float:
        """Log-uniform draw from this site's own slice of [low, high]."""
        order = _rng(params.seed, _COHORT_STREAM, stratum_stream).permutation(params.n_sites)
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
    rng = _rng(params.seed, _COHORT_STREAM)
    sizes = long_tail_site_sizes(params.n_sites, params.n_subjects, rng)
    # Shuffled ids, so that an id reveals nothing about its site (as in BraTS).
    indices = rng.permutation(np.arange(1, params.n_subjects + params.n_test + 1)).tolist()
    site_of = np.repeat(np.arange(1, params.n_sites + 1), sizes).tolist()
    test_profiles = rng.integers(1, params.n_sites + 1, params.n_test).tolist()
    plans = [SubjectPlan(_subject_id(i), i, site, site) for i, site in zip(indices, site_of)]
    plans += [
        SubjectPlan(_subject_id(i), i, None, profile) for i, profile in zip(indices[params.n_subjects :], test_profiles)
    ]
    return plans


def _subject_id(index: int) -> str:
    return f"{SUBJECT_PREFIX}{index:05d}"


# --------------------------------------------------------------------------- template anatomy


@dataclass(frozen=True)
class Template:
    """MNI tissue maps as one tensor (1, 4, X, Y, Z): CSF, GM, WM, brain mask; 2 mm voxels."""

    maps: torch.Tensor
    origin_mm: np.ndarray  # world position of voxel (0, 0, 0)
    voxel_mm: float
    brain_centre_mm: np.ndarray  # centre of the brain's bounding box, placed at the cube's centre
    wm_candidates_mm: np.ndarray  # (K, 3) deep white-matter positions, centred world mm
    depth_mm: np.ndarray  # (K,) distance of each candidate to the brain surface


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


def output_affine(shape: int) -> np.ndarray:
    """RAS affine of the output cube: isotropic 192 mm / shape voxels, world origin at the centre."""
    spacing = FIELD_OF_VIEW_MM / shape
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -spacing * (shape - 1) / 2.0
    return affine


# --------------------------------------------------------------------------- one subject


@dataclass(frozen=True)
class TumourShape:
    centre_mm: np.ndarray  # output world coordinates of the whole tumour's centre
    rotation: np.ndarray  # 3x3, columns are the ellipsoid axes
    wt_radii_mm: np.ndarray
    core_offset_mm: np.ndarray  # the core sits off-centre in its oedema
    core_fraction: float  # core radii / WT radii
    necrosis_offset_mm: np.ndarray  # so the enhancing rim is thicker on one side
    necrosis_fraction: float  # necrosis radii / core radii; 0 means no necrosis
    mass_effect: float  # 0..1, strength of the radial push


# Boundary noise amplitudes (in units of the normalised radius) and the reach they imply.
WT_BOUNDARY_NOISE, CORE_BOUNDARY_NOISE, NECROSIS_BOUNDARY_NOISE = 0.22, 0.2, 0.28
WT_WHITE_MATTER_PULL = 0.35  # oedema reaches further along white matter
NOISE_CLIP = 3.0
MIN_WT_ML = 2.0  # a drawn tumour squeezed smaller than this by the brain's edge is drawn again
TUMOUR_ATTEMPTS = 10
WT_REACH = 1.0 + WT_BOUNDARY_NOISE * NOISE_CLIP + WT_WHITE_MATTER_PULL * 0.5


def write_subject(root: Path, plan: SubjectPlan, profile: SiteProfile, params: CohortParameters) -> dict:
    """Generate one subject, write its five NIfTI files and return its cohort.json record."""
    images, seg = synthesize_subject(plan, profile, params)
    _save_subject(root / plan.subject_id, plan.subject_id, images, seg, output_affine(params.shape))
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


def synthesize_subject(
    plan: SubjectPlan, profile: SiteProfile, params: CohortParameters
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Images (float32, zero outside the brain) and segmentation (uint8 BraTS labels) of one subject."""
    sequence = np.random.SeedSequence(entropy=params.seed, spawn_key=(_SUBJECT_STREAM, plan.index))
    rng = np.random.default_rng(sequence)
    anatomy = _random_anatomy(rng, params.shape)
    tissue_means = _subject_tissue_means(rng, profile)
    maps = _anatomy_with_tumour(rng, anatomy, profile, params, plan.subject_id)
    tissues = _tissue_probabilities(maps, anatomy.texture[..., 3])
    torch_seed = int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))
    with _seeded_torch(torch_seed):
        images = _render_modalities(tissues, tissue_means, profile, params)
    return _skull_stripped(images, maps.brain_mask.numpy(), profile), maps.seg


@dataclass(frozen=True)
class RandomAnatomy:
    """A subject's draws before the tumour: head pose and size, elastic field, tumour texture."""

    affine: np.ndarray  # 3x3, output mm -> template mm
    translation: np.ndarray
    elastic_mm: torch.Tensor  # (X, Y, Z, 3) displacement
    texture: torch.Tensor  # (X, Y, Z, 4): WT, core, necrosis boundary noise; heterogeneity


@dataclass(frozen=True)
class SubjectMaps:
    """Deformed tissue maps and the tumour labels on the output grid."""

    csf: torch.Tensor
    gm: torch.Tensor
    wm: torch.Tensor
    brain_mask: torch.Tensor
    seg: np.ndarray


def _random_anatomy(rng: np.random.Generator, shape: int) -> RandomAnatomy:

    affine, translation = _random_affine(rng)
    elastic = _smooth_noise(rng, 3, shape, correlation_mm=24.0) * rng.uniform(1.0, 2.5)
    # Oedema lobes are coarser than the core's and the necrosis's.
    texture = torch.cat(
        [_smooth_noise(rng, 1, shape, correlation_mm=16.0), _smooth_noise(rng, 3, shape, correlation_mm=8.0)], dim=-1
    )
    return RandomAnatomy(affine, translation, elastic, texture.clamp(-NOISE_CLIP, NOISE_CLIP))


def _anatomy_with_tumour(
    rng: np.random.Generator, anatomy: RandomAnatomy, profile: SiteProfile, params: CohortParameters, subject_id: str
) -> SubjectMaps:
    """Place a tumour, deform the template around it and label it; redraw a tumour the brain squeezes away."""

    template = load_template(params.spacing_mm)
    grid_mm = _output_grid_mm(params.shape)
    for _ in range(TUMOUR_ATTEMPTS):
        tumour = _random_tumour(rng, template, profile, anatomy.affine, anatomy.translation)
        source_mm = _mass_effect(grid_mm, tumour) @ torch.from_numpy(anatomy.affine.T.astype(np.float32))
        source_mm += torch.from_numpy(anatomy.translation.astype(np.float32)) + anatomy.elastic_mm
        csf, gm, wm, brain = _sample_template(template, source_mm)
        brain_mask = _inside_field_of_view(brain > 0.5)
        seg = _tumour_labels(grid_mm, tumour, anatomy.texture, wm, csf, brain_mask)
        if (seg > 0).sum() * params.spacing_mm**3 >= MIN_WT_ML * 1000:
            return SubjectMaps(csf, gm, wm, brain_mask, seg)
    raise RuntimeError(f"{subject_id}: no tumour of at least {MIN_WT_ML} mL fits after {TUMOUR_ATTEMPTS} attempts")


def _skull_stripped(images: np.ndarray, brain_mask: np.ndarray, profile: SiteProfile) -> dict[str, np.ndarray]:
    """Zero outside the brain and never zero inside, so any modality gives back the brain mask."""
    floor = np.float32(1e-4 * profile.intensity_scale)
    return {
        m: np.where(brain_mask, np.maximum(images[i], floor), 0.0).astype(np.float32) for i, m in enumerate(MODALITIES)
    }


def _inside_field_of_view(brain_mask: torch.Tensor) -> torch.Tensor:
    """Clear the cube's outermost voxels: a rare large brain is cut like a field of view would cut it."""

    inner = torch.zeros_like(brain_mask)
    inner[1:-1, 1:-1, 1:-1] = True
    return brain_mask & inner


@functools.lru_cache(maxsize=2)
def _output_grid_mm(shape: int) -> torch.Tensor:
    """World coordinates (X, Y, Z, 3) of every output voxel centre; shared, so never modify it in place."""

    spacing = FIELD_OF_VIEW_MM / shape
    axis = (torch.arange(shape, dtype=torch.float32) - (shape - 1) / 2.0) * spacing
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)


def _random_affine(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A small head pose and head-size change: maps output mm to template mm.

    Brains come out 87-97% of the MNI152 size (the template is larger than most brains),
    which also keeps them clear of the 192 mm cube's faces. Poses vary little: BraTS scans
    are all registered to one atlas.
    """
    angles = np.deg2rad(rng.uniform(-4.0, 4.0, 3))
    rotation = _rotation_matrix(angles)
    scale = np.diag(rng.uniform(1.03, 1.15, 3))
    return rotation @ scale, rng.uniform(-3.0, 3.0, 3)


def _rotation_matrix(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _random_tumour(
    rng: np.random.Generator, template: Template, profile: SiteProfile, affine: np.ndarray, translation: np.ndarray
) -> TumourShape:
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
        rotation=_quaternion_matrix(quaternion / np.linalg.norm(quaternion)),
        wt_radii_mm=radius * axis_ratios / np.cbrt(axis_ratios.prod()),
        core_offset_mm=rng.normal(0.0, 0.12 * radius, 3),
        core_fraction=core_fraction,
        necrosis_offset_mm=rng.normal(0.0, 0.08 * radius * core_fraction, 3),
        necrosis_fraction=float(rng.uniform(0.5, 0.8)) if has_necrosis else 0.0,
        mass_effect=float(rng.uniform(0.25, 0.55)),
    )


def _quaternion_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _subject_tissue_means(rng: np.random.Generator, profile: SiteProfile) -> np.ndarray:
    """(modality, tissue) mean intensities: the site's contrast with a little subject variation."""
    base = np.array([TISSUE_MEANS[m] for m in MODALITIES]) * np.array([profile.contrast_factors[m] for m in MODALITIES])
    return base * rng.uniform(1 - SUBJECT_CONTRAST_JITTER, 1 + SUBJECT_CONTRAST_JITTER, base.shape)


def _smooth_noise(rng: np.random.Generator, channels: int, shape: int, correlation_mm: float) -> torch.Tensor:
    """Smooth unit-variance random fields (X, Y, Z, channels): blurred noise on a coarse grid, then trilinear."""
    from scipy import ndimage

    coarse_size = 24
    sigma = correlation_mm / (FIELD_OF_VIEW_MM / coarse_size)
    coarse = np.stack([ndimage.gaussian_filter(c, sigma) for c in rng.normal(size=(channels, *(coarse_size,) * 3))])
    coarse /= coarse.std(axis=(1, 2, 3), keepdims=True) + 1e-6
    fine = F.interpolate(
        torch.from_numpy(coarse[None].astype(np.float32)), size=(shape,) * 3, mode="trilinear", align_corners=True
    )
    return fine[0].permute(1, 2, 3, 0).contiguous()


def _mass_effect(grid_mm: torch.Tensor, tumour: TumourShape) -> torch.Tensor:
    """Where each output voxel samples the anatomy: closer to the tumour, so tissue looks pushed outward.

    r_source = r (1 - k exp(-r^2 / 2 sigma^2)) is monotonic in r for k < 1, so nothing folds.
    """

    centre = torch.from_numpy((tumour.centre_mm + tumour.core_offset_mm).astype(np.float32))
    offset = grid_mm - centre
    sigma = float(np.cbrt(tumour.wt_radii_mm.prod())) * 0.9
    squared = (offset**2).sum(dim=-1, keepdim=True)
    return centre + offset * (1.0 - tumour.mass_effect * torch.exp(-squared / (2.0 * sigma**2)))


def _sample_template(template: Template, source_mm: torch.Tensor) -> list[torch.Tensor]:
    """Trilinear samples of the template channels at centred world positions (X, Y, Z, 3)."""

    sizes = torch.tensor(template.maps.shape[2:], dtype=torch.float32)
    origin = torch.from_numpy((template.origin_mm - template.brain_centre_mm).astype(np.float32))
    voxels = (source_mm - origin) / template.voxel_mm
    normalised = voxels / (sizes - 1) * 2.0 - 1.0
    # grid_sample's last axis is (W, H, D) = (z, y, x) for a (N, C, x, y, z) input.
    grid = normalised.flip(-1)[None]
    sampled = F.grid_sample(template.maps, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return list(sampled[0])


def _tumour_box(tumour: TumourShape, shape: int) -> tuple[slice, slice, slice]:
    """Voxel box that holds every voxel the whole tumour can reach (saves work on big volumes)."""
    spacing = FIELD_OF_VIEW_MM / shape
    reach = WT_REACH * tumour.wt_radii_mm.max() + 2 * spacing
    centre = tumour.centre_mm / spacing + (shape - 1) / 2.0
    low = np.clip(np.floor(centre - reach / spacing), 0, shape).astype(int)
    high = np.clip(np.ceil(centre + reach / spacing) + 1, 0, shape).astype(int)
    return tuple(slice(lo, hi) for lo, hi in zip(low, high))


def _tumour_labels(
    grid_mm: torch.Tensor,
    tumour: TumourShape,
    texture: torch.Tensor,
    wm: torch.Tensor,
    csf: torch.Tensor,
    brain_mask: torch.Tensor,
) -> np.ndarray:
    """BraTS labels: oedema around a core, the core an enhancing rim around necrosis, nested by erosion."""
    from scipy import ndimage

    full_shape = tuple(brain_mask.shape)
    box = _tumour_box(tumour, full_shape[0])
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


def _tissue_probabilities(maps: SubjectMaps, heterogeneity: torch.Tensor) -> torch.Tensor:
    """Partial-volume maps (7, X, Y, Z) in the order of TISSUES; tumour borders softened slightly.

    Tumour channels are then scaled by a smooth field (+-12% per unit), so a lesion is not
    uniformly bright; they may sum a little above one there, which only changes brightness.
    """
    from scipy import ndimage

    seg = maps.seg
    tumour = torch.zeros((3, *seg.shape))
    box = tuple(slice(max(idx.min() - 3, 0), idx.max() + 4) for idx in np.nonzero(seg))
    for channel, label in enumerate((ED, ET, NCR)):
        soft = ndimage.gaussian_filter((seg[box] == label).astype(np.float32), 0.6)
        tumour[(channel, *box)] = torch.from_numpy(soft)
    tumour[0] *= OEDEMA_TISSUE_FRACTION
    brain = maps.brain_mask.float()
    normal = torch.stack([maps.csf, maps.gm, maps.wm]) * brain
    normal = normal / normal.sum(dim=0).clamp_min(1e-6) * brain
    remaining = (1.0 - tumour.sum(dim=0)).clamp_min(0.0)
    tumour = tumour * brain * (1.0 + 0.12 * heterogeneity)
    return torch.cat([(1.0 - brain)[None], normal * remaining, tumour])


@contextmanager
def _seeded_torch(seed: int) -> Iterator[None]:
    """Seed torch's global generator (which TorchIO uses) and restore it afterwards."""

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _render_modalities(
    tissues: torch.Tensor, tissue_means: np.ndarray, profile: SiteProfile, params: CohortParameters
) -> np.ndarray:
    """Four modalities (4, X, Y, Z) from the tissue maps, then the site's scanner effects.

    Equivalent to ``tio.LabelsToImage`` with partial-volume maps (each tissue mean + std * noise,
    weighted by its probability), but with one noise draw per modality instead of one per tissue:
    the sum of independent weighted Gaussians is a Gaussian with std * sqrt(sum p^2).
    """

    flat = tissues.reshape(len(TISSUES), -1)
    means = torch.from_numpy(tissue_means.astype(np.float32)) @ flat
    texture_std = TISSUE_TEXTURE_STD * flat[1:].square().sum(dim=0).sqrt()
    images = (means + texture_std * torch.randn(means.shape)).reshape(len(MODALITIES), *tissues.shape[1:])
    subject = tio.Subject(mri=tio.ScalarImage(tensor=images, affine=output_affine(params.shape)))
    subject = _scanner_effects(profile, params.spacing_mm)(subject)
    # Magnitude images: noise folds at zero (roughly Rician) rather than clipping to it.
    return subject["mri"].data.abs().numpy() * profile.intensity_scale


def _scanner_effects(profile: SiteProfile, spacing_mm: float) -> tio.Compose:
    """The site's acquisition as TorchIO transforms, ordered roughly as physics applies them.

    The four modalities travel as channels of one image, so they share one bias field (it comes
    from the receive coil, the same for every sequence of a session) and one slice geometry.
    """

    transforms = [
        tio.RandomGamma(log_gamma=(profile.log_gamma - 0.05, profile.log_gamma + 0.05), copy=False),
        tio.RandomBiasField(coefficients=profile.bias_coefficient, copy=False),
    ]
    thickness_factor = profile.slice_thickness_mm / spacing_mm
    slice_blur = [0.0, 0.0, 0.0]
    if thickness_factor > 1.05:
        # A thick slice averages along its axis before the resolution loss.
        slice_blur[profile.slice_axis] = profile.slice_thickness_mm / 2.355
    blur = [max(profile.blur_std_mm, s) for s in slice_blur]
    if max(blur) > 0.05:
        transforms.append(tio.RandomBlur(std=tuple(v for b in blur for v in (b, b)), copy=False))
    if thickness_factor > 1.05:
        transforms.append(
            tio.RandomAnisotropy(
                axes=(profile.slice_axis,), downsampling=(thickness_factor, thickness_factor), copy=False
            )
        )
    if profile.ghosting_probability > 0:
        transforms.append(
            tio.RandomGhosting(
                num_ghosts=(2, 5),
                axes=(profile.slice_axis,),
                intensity=(0.2, 0.5),
                p=profile.ghosting_probability,
                copy=False,
            )
        )
    noise = profile.noise_std
    transforms.append(tio.RandomNoise(std=(0.8 * noise, 1.2 * noise), copy=False))
    return tio.Compose(transforms, copy=False)


def _save_subject(
    folder: Path, subject_id: str, images: dict[str, np.ndarray], seg: np.ndarray, affine: np.ndarray
) -> None:
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (*images.items(), ("seg", seg)):
        image = nib.Nifti1Image(data, affine)
        image.header.set_xyzt_units("mm")
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        nib.save(image, folder / f"{subject_id}_{name}.nii.gz")


# --------------------------------------------------------------------------- cohort files


def _write_partitions(root: Path, plans: Sequence[SubjectPlan]) -> None:
    site_rows = sorted((p.site, p.index, p.subject_id) for p in plans if p.site is not None)
    lines = ["Partition_ID,Subject_ID", *(f"{site},{sid}" for site, _, sid in site_rows)]
    (root / PARTITION_FILE).write_text("\n".join(lines) + "\n")
    test_ids = sorted((p.index, p.subject_id) for p in plans if p.site is None)
    (root / HELDOUT_FILE).write_text("\n".join(["Subject_ID", *(sid for _, sid in test_ids)]) + "\n")


def _write_montage(root: Path, plans: Sequence[SubjectPlan], records: Sequence[dict], n_sites: int) -> None:
    from data_loaders.montage import MontageRow, write_montage

    rows = []
    for site in range(1, n_sites + 1):
        # The site's subject with the median tumour volume: typical, not an extreme.
        members = sorted((r["wt_ml"], p.index, p.subject_id) for p, r in zip(plans, records) if p.site == site)
        wt_ml, _, subject_id = members[(len(members) - 1) // 2]
        title = f"site {site} · {subject_id} · WT {wt_ml:.0f} mL"
        rows.append(MontageRow(title=title, subject_dir=root / subject_id))
    write_montage(rows, root / MONTAGE_FILE)


@contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator:
    """Yield an ``advance()`` callable; a rich progress bar when enabled."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("synthetic cohort"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task("subjects", total=total)
        yield lambda: bar.advance(task)


__all__ = ["CohortInfo", "GENERATOR_VERSION", "MODALITIES", "generate_cohort", "output_affine"]
