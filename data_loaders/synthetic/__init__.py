"""A synthetic multi-site brain-tumour cohort, written exactly like BraTS 2021 plus a FeTS partition CSV.

No real BraTS data can be downloaded here, so this package stands in for it:

- anatomy (:mod:`.anatomy`): the MNI152 2009 GM/WM/brain-mask templates nilearn ships offline,
  deformed per subject by a small random affine, a smooth random elastic field and the tumour's
  mass effect, all composed into one sampling grid so the templates are interpolated once;
- tumour (:mod:`.tumour`): a blobby ellipsoid (smoothed-noise boundary) of oedema around a tumour
  core, the core an enhancing rim around a necrotic centre (occasionally no necrosis), nested by
  construction;
- images (:mod:`.render`): four modalities drawn from the tissue probability maps the way
  ``tio.LabelsToImage`` does (per-tissue mean + std noise, weighted by partial volume), each with
  its own per-tissue contrast;
- geometry (:mod:`.geometry`): the demo's cube (``shape``^3 over 192 mm, RAS) or the BraTS grid
  (240x240x155 voxels of 1 mm, LPS, the BraTS affine, the brain where SRI24 puts it);
- sites (:mod:`.sites`): per-site scanner effects (contrast, gamma, bias field, blur, slice
  thickness, ghosting, noise, intensity scale) and a per-site tumour-size distribution make the
  federation non-IID; site sizes follow a long (Zipf-like) tail as in FeTS.

Everything is deterministic from the seed: cohort-level choices, each site's profile and each
subject come from their own ``numpy.random.SeedSequence`` stream (and a torch seed derived from
it), so a subject is reproducible regardless of generation order (:mod:`.streams`).
``cohort.json`` is written last and doubles as the cache key (:mod:`.cohort`).

Example:
    >>> from data_loaders.synthetic import generate_cohort
    >>> info = generate_cohort("/tmp/cohort", n_sites=3, n_subjects=9, seed=0)  # doctest: +SKIP
    >>> info = generate_cohort("/tmp/brats", n_sites=1, n_subjects=3, seed=0, geometry="brats")  # doctest: +SKIP
"""

from data_loaders.synthetic.cohort import CohortInfo, generate_cohort
from data_loaders.synthetic.geometry import output_affine
from data_loaders.synthetic.parameters import GENERATOR_VERSION, MODALITIES, CohortParameterError

__all__ = ["CohortInfo", "CohortParameterError", "GENERATOR_VERSION", "MODALITIES", "generate_cohort", "output_affine"]
