"""The FeTS Challenge time model: measured compute and network profiles, per-round noise, slowest collaborator.

FeTS Challenge Task 1 (2021/2022) timed every round from measurements taken at real FeTS
institutions, not from bandwidth and model size. This module holds those measurements as
data and computes, for one collaborator and one round, the seconds FeTS would have counted.
The numbers are the tables ``TRAINING_TIMES``, ``VALIDATION_TIMES``, ``DOWNLOAD_TIMES`` and
``UPLOAD_TIMES`` of ``Task_1/fets_challenge/experiment.py`` in github.com/FETS-AI/Challenge;
each entry is a normal distribution (mean, standard deviation) in seconds. docs/fets.md
explains the model in full.

**Profiles.** 21 *compute* profiles (seconds to train on one patient, seconds to validate one
patient) and 16 *network* profiles (seconds to download the model, seconds to upload it).
Each site gets one of each, drawn uniformly from the run's ``seed`` and its site id
(:func:`fets_profile`), so every method run with the same seed meets the same hardware.

**A collaborator's round** (:func:`fets_site_seconds`), with every term drawn afresh each round
from its normal distribution and floored at 1 s (FeTS's ``max(1, ...)``)::

    download + n_val * validate                                      (every collaborator)
             + n_train * epochs * train + n_val * validate + upload  (only if it trained)

``n_train`` and ``n_val`` are patients (subjects), not patches; a collaborator that trained also
validates its locally updated model, as FeTS's did. The draws come from a generator seeded by
(``seed``, round, site id), in the order above, so a round's times repeat from run to run.

**A round** lasts as long as its slowest collaborator, trained or not
(``fedtumor/federation/fets_ledger.py`` puts the pieces together).

This module imports neither Flower nor torch.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

MIN_SECONDS = 1.0  # FeTS floors every drawn time at one second
_PROFILE_SALT = "fets-profile"


@dataclass(frozen=True)
class Gaussian:
    """A measured time: mean and standard deviation in seconds."""

    mean: float
    sd: float

    def draw(self, rng: np.random.Generator) -> float:
        return max(MIN_SECONDS, float(rng.normal(self.mean, self.sd)))


@dataclass(frozen=True)
class ComputeProfile:
    """Seconds to train on one patient and to validate one patient."""

    train: Gaussian
    validate: Gaussian

    @classmethod
    def of(cls, train: tuple[float, float], validate: tuple[float, float]) -> ComputeProfile:
        return cls(Gaussian(*train), Gaussian(*validate))


@dataclass(frozen=True)
class NetworkProfile:
    """Seconds to download the global model and to upload an update."""

    download: Gaussian
    upload: Gaussian

    @classmethod
    def of(cls, download: tuple[float, float], upload: tuple[float, float]) -> NetworkProfile:
        return cls(Gaussian(*download), Gaussian(*upload))


# (train, validate) per patient: TRAINING_TIMES and VALIDATION_TIMES of FETS-AI/Challenge experiment.py
COMPUTE_PROFILES: tuple[ComputeProfile, ...] = (
    ComputeProfile.of((6.710741331207654, 0.8726112813698301), (23.129135113591072, 2.5975116854269507)),
    ComputeProfile.of((2.7343911917098445, 0.023976155580152165), (12.965544041450777, 0.3476297824941513)),
    ComputeProfile.of((3.173076923076923, 0.04154320960517865), (14.782051282051283, 0.5262660449172765)),
    ComputeProfile.of((6.580379746835443, 0.22461890673025595), (16.444936708860762, 0.42613177203005187)),
    ComputeProfile.of((3.452046783625731, 0.47136389322749656), (15.728654970760235, 4.327559980390658)),
    ComputeProfile.of((6.090788461700995, 0.08541499003440205), (12.946098012884802, 0.2449927822869217)),
    ComputeProfile.of((3.206933911159263, 0.1927067498514361), (15.335950126991456, 1.1587597276712558)),
    ComputeProfile.of((3.3358208955223883, 0.2950567549663471), (24.024875621890544, 3.087348297794285)),
    ComputeProfile.of((4.391304347826087, 0.37464538999161057), (38.361702127659576, 2.240113332190875)),
    ComputeProfile.of((6.324805129494594, 0.1413885448869165), (16.320970580839827, 0.4995108101783225)),
    ComputeProfile.of((7.415133477633478, 1.1198881747151301), (30.805555555555554, 3.1836337269688237)),
    ComputeProfile.of((5.806410256410255, 0.029926699295169234), (12.100899742930592, 0.41122386959584895)),
    ComputeProfile.of((6.300204918032787, 0.24932319729777577), (13.099897540983607, 0.6693132795197584)),
    ComputeProfile.of((5.886317567567567, 0.018627858809133223), (9.690202702702702, 0.17513593019922968)),
    ComputeProfile.of((5.478184991273998, 0.04902740607167421), (10.06980802792321, 0.7947848617875114)),
    ComputeProfile.of((6.32440159574468, 0.15838847558954935), (14.605333333333334, 0.6012305898922827)),
    ComputeProfile.of((20.661918328585003, 6.085405543890793), (36.30294396961064, 9.24123672148819)),
    ComputeProfile.of((3.197901325478645, 0.07049966132127056), (16.9130060292851, 0.7452868131028928)),
    ComputeProfile.of((6.523963730569948, 0.2533266757118492), (40.244078460399706, 3.7700993678269037)),
    ComputeProfile.of((2.6540077569489338, 0.025503099659276184), (13.161603102779575, 0.1975347910041472)),
    ComputeProfile.of((1.8025746183640918, 0.06805805332403576), (11.222161868549701, 0.7021223062972527)),
)

# (download, upload) per model: DOWNLOAD_TIMES and UPLOAD_TIMES of FETS-AI/Challenge experiment.py
NETWORK_PROFILES: tuple[NetworkProfile, ...] = (
    NetworkProfile.of((112.42869743589742, 14.456734719659513), (192.28497409326425, 21.537450985376967)),
    NetworkProfile.of((117.26870618556701, 12.549951446132013), (194.60103626943004, 24.194406902237056)),
    NetworkProfile.of((13.059666666666667, 4.8700489616521185), (20.0, 0.0)),
    NetworkProfile.of((47.50220338983051, 14.92128656898884), (52.43859649122807, 5.047207127169352)),
    NetworkProfile.of((162.27864210526315, 32.562113378948396), (182.82417582417582, 14.793519078918195)),
    NetworkProfile.of((99.46072058823529, 13.808785580783224), (143.38059701492537, 7.910690646792151)),
    NetworkProfile.of((33.6347090909091, 25.00299299660141), (30.695652173913043, 9.668122350904568)),
    NetworkProfile.of((216.25489393939392, 19.176465340447848), (430.95360824742266, 54.97790476867727)),
    NetworkProfile.of((217.4117230769231, 20.757673955585453), (348.3174603174603, 30.14347985347738)),
    NetworkProfile.of((98.38857297297298, 13.205048376808929), (141.43715846994536, 5.271340868190727)),
    NetworkProfile.of((88.87509473684209, 23.152936862511545), (158.7433155080214, 64.87526819391198)),
    NetworkProfile.of((66.96994262295081, 16.682497150763503), (81.06086956521739, 7.003461202082419)),
    NetworkProfile.of((36.668852040816326, 13.759109844677598), (32.60621761658031, 5.0418315093016615)),
    NetworkProfile.of((149.31716326530614, 26.018185409516104), (281.5388601036269, 90.60338778706557)),
    NetworkProfile.of((139.847, 80.04755583050091), (194.34065934065933, 36.6519776778435)),
    NetworkProfile.of((54.97624444444445, 16.645170929316794), (66.53787878787878, 16.456280602190606)),
)


@dataclass(frozen=True)
class FetsSiteProfile:
    """A site's FeTS hardware: one compute and one network profile (indices into the tables)."""

    compute_index: int
    network_index: int

    @property
    def compute(self) -> ComputeProfile:
        return COMPUTE_PROFILES[self.compute_index]

    @property
    def network(self) -> NetworkProfile:
        return NETWORK_PROFILES[self.network_index]

    def round_seconds(self, download_bytes: float, num_samples: float, upload_bytes: float) -> float:
        """The mean network time: what the ledger shows of a training reply until its round closes.

        FeTS times do not depend on bytes or patches; the round's real time needs its validation
        replies and is set when the round closes (:func:`fets_site_seconds`).
        """
        return self.network.download.mean + self.network.upload.mean


def fets_profile(site_id: str, seed: int) -> FetsSiteProfile:
    """The profiles of ``site_id`` in a run of ``seed``: uniform over the tables, the same each time."""
    rng = np.random.default_rng([seed % 2**32, zlib.crc32(f"{_PROFILE_SALT}/{site_id}".encode())])
    return FetsSiteProfile(int(rng.integers(len(COMPUTE_PROFILES))), int(rng.integers(len(NETWORK_PROFILES))))


class FetsProfiles:
    """Profile lookup by site id for a run of ``seed`` (the ledger's ``profiles``)."""

    def __init__(self, seed: int):
        self.seed = seed

    def __getitem__(self, site_id: str) -> FetsSiteProfile:
        return fets_profile(site_id, self.seed)


def round_noise(site_id: str, seed: int, server_round: int) -> np.random.Generator:
    """The generator of one collaborator's times in one round."""
    return np.random.default_rng([seed % 2**32, server_round, zlib.crc32(site_id.encode())])


def fets_site_seconds(
    compute: ComputeProfile,
    network: NetworkProfile,
    rng: np.random.Generator,
    *,
    val_subjects: int,
    train_subjects: int = 0,
    epochs: float = 1.0,
    trained: bool,
) -> float:
    """One collaborator's round as FeTS timed it (see the module docstring); all five draws are always made."""
    download, validate, train, validate_local, upload = (
        network.download.draw(rng),
        compute.validate.draw(rng),
        compute.train.draw(rng),
        compute.validate.draw(rng),
        network.upload.draw(rng),
    )
    seconds = download + val_subjects * validate
    if trained:
        seconds += train_subjects * epochs * train + val_subjects * validate_local + upload
    return seconds
