"""One site's training patches for one round: seeded, queued, one epoch per call.

The federated ClientApp, the baselines and the overhead bench all draw their patches here,
so a baseline trained on a site's subjects sees exactly that site's federated patches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torchio as tio

from data_loaders.pipelines import patch_batches, patch_queue
from fedtumor.core.config import RunConfig
from fedtumor.core.training import Batch, patch_seed


def round_patch_batches(
    subjects: Sequence[tio.Subject], config: RunConfig, stream: str, server_round: int
) -> Callable[[], Iterator[Batch]]:
    """Seeds torch for ``stream`` (a site id) and ``server_round``, builds the patch queue; each call is one epoch.

    Seeding comes first: the queue's shuffles and samples, the probe patches and every epoch
    draw from torch's generator in that order, so the patches repeat exactly.
    """
    torch.manual_seed(patch_seed(config.seed, stream, server_round))
    queue = patch_queue(subjects, config.patch_size, config.samples_per_volume, config.queue_length, config.augment)
    return lambda: patch_batches(queue, config.batch_size)
