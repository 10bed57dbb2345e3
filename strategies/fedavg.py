"""FedAvg (McMahan et al. 2017): example-weighted mean of the sites' models.

Flower's FedAvg, with each site's reply shown to the run's recorder first.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from strategies.recording import SiteReplyRecorder


class FedAvg(SiteReplyRecorder, FlowerFedAvg):
    """Federated averaging weighted by ``num-examples`` (training patches seen)."""
