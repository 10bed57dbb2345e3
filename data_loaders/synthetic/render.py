"""Images: four modalities drawn from the tissue maps, then the site's scanner effects.

The modalities are drawn from the tissue probability maps the way ``tio.LabelsToImage`` does
(per-tissue mean + std noise, weighted by partial volume), each with its own per-tissue contrast;
the site's acquisition is then applied as TorchIO transforms.
"""

from __future__ import annotations

import numpy as np
import torch
import torchio as tio

from data_loaders.synthetic.bias_field import RandomSeparableBiasField
from data_loaders.synthetic.geometry import volume_geometry
from data_loaders.synthetic.parameters import MODALITIES, TISSUES, CohortParameters
from data_loaders.synthetic.sites import SiteProfile
from data_loaders.synthetic.tumour import ED, ET, NCR, SubjectMaps

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


def subject_tissue_means(rng: np.random.Generator, profile: SiteProfile) -> np.ndarray:
    """(modality, tissue) mean intensities: the site's contrast with a little subject variation."""
    base = np.array([TISSUE_MEANS[m] for m in MODALITIES]) * np.array([profile.contrast_factors[m] for m in MODALITIES])
    return base * rng.uniform(1 - SUBJECT_CONTRAST_JITTER, 1 + SUBJECT_CONTRAST_JITTER, base.shape)


def tissue_probabilities(maps: SubjectMaps, heterogeneity: torch.Tensor) -> torch.Tensor:
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


def render_modalities(
    tissues: torch.Tensor, tissue_means: np.ndarray, profile: SiteProfile, params: CohortParameters
) -> np.ndarray:
    """Four modalities (4, X, Y, Z) from the tissue maps, then the site's scanner effects.

    Equivalent to ``tio.LabelsToImage`` with partial-volume maps (each tissue mean + std * noise,
    weighted by its probability), but with one noise draw per modality instead of one per tissue:
    the sum of independent weighted Gaussians is a Gaussian with std * sqrt(sum p^2). Draws from
    torch's global generator, so call it inside ``seeded_torch``.
    """

    flat = tissues.reshape(len(TISSUES), -1)
    means = torch.from_numpy(tissue_means.astype(np.float32)) @ flat
    texture_std = TISSUE_TEXTURE_STD * flat[1:].square().sum(dim=0).sqrt()
    images = (means + texture_std * torch.randn(means.shape)).reshape(len(MODALITIES), *tissues.shape[1:])
    subject = tio.Subject(mri=tio.ScalarImage(tensor=images, affine=volume_geometry(params).affine_array))
    subject = scanner_effects(profile, params.spacing_mm)(subject)
    # Magnitude images: noise folds at zero (roughly Rician) rather than clipping to it.
    return subject["mri"].data.abs().numpy() * profile.intensity_scale


def scanner_effects(profile: SiteProfile, spacing_mm: float) -> tio.Compose:
    """The site's acquisition as TorchIO transforms, ordered roughly as physics applies them.

    The four modalities travel as channels of one image, so they share one bias field (it comes
    from the receive coil, the same for every sequence of a session) and one slice geometry.
    """

    transforms = [
        tio.RandomGamma(log_gamma=(profile.log_gamma - 0.05, profile.log_gamma + 0.05), copy=False),
        RandomSeparableBiasField(coefficients=profile.bias_coefficient, copy=False),
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


def skull_stripped(images: np.ndarray, brain_mask: np.ndarray, profile: SiteProfile) -> dict[str, np.ndarray]:
    """Zero outside the brain and never zero inside, so any modality gives back the brain mask."""
    floor = np.float32(1e-4 * profile.intensity_scale)
    return {
        m: np.where(brain_mask, np.maximum(images[i], floor), 0.0).astype(np.float32) for i, m in enumerate(MODALITIES)
    }
