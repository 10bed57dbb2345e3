"""The cohort's independent random streams, so that every draw is reproducible on its own.

Cohort-level choices, each site's profile and each subject come from their own
``numpy.random.SeedSequence`` stream (tagged by ``spawn_key``), so a subject comes out the same
whatever order the cohort is generated in. TorchIO draws from torch's global generator, which
:func:`seeded_torch` seeds and restores around a subject.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

# Seed-sequence stream tags: each kind of draw gets its own stream.
COHORT_STREAM, SITE_STREAM, SUBJECT_STREAM = 0, 1, 2


def stream_rng(seed: int, *stream: int) -> np.random.Generator:
    """The generator of one stream, e.g. ``stream_rng(seed, SITE_STREAM, site)``."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=stream))


def subject_sequence(seed: int, index: int) -> np.random.SeedSequence:
    """The seed sequence of subject ``index``; it seeds both its numpy draws and its torch seed."""
    return np.random.SeedSequence(entropy=seed, spawn_key=(SUBJECT_STREAM, index))


def torch_seed(sequence: np.random.SeedSequence) -> int:
    """A non-negative 63-bit torch seed derived from ``sequence``."""
    return int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))


@contextmanager
def seeded_torch(seed: int) -> Iterator[None]:
    """Seed torch's global generator (which TorchIO uses) and restore it afterwards."""

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
