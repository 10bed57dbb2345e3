"""The run's ledger under the chosen time model (run-config key ``time-model``).

``"fedtumor"`` (the default): :class:`~fedtumor.federation.ledger.SiteLedger` with
:class:`~fedtumor.federation.simulated_time.SiteProfiles`; a site's round is download +
patches x seconds per patch + upload from its bandwidth and the bytes it moved.

``"fets"``: :class:`FetsLedger`, FeTS Challenge Task 1's own model
(``fedtumor/federation/fets_profiles.py``): measured per-patient training and validation
times, measured download and upload times, fresh noise every round, and every collaborator of
the round counted, trained or not. When a round is first read (its metrics.csv rows or its
close), each site with a sound train or evaluate reply in it gets its FeTS time:

- validation patients: the ``num-examples`` of its evaluate reply this round, else the last
  one it sent, else 0 (a site never asked to validate costs no validation time);
- training patients: the ``num-examples`` of its train reply, times the round's ``local-epochs``.

The round lasts as long as the slowest of them (the ledger's ``close_round``).
"""

from __future__ import annotations

import dataclasses

from fedtumor.core.config import TIME_MODELS, RunConfig
from fedtumor.federation.fets_profiles import FetsProfiles, fets_site_seconds, round_noise
from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.simulated_time import SiteProfiles
from fedtumor.federation.wire import LOCAL_EPOCHS_KEY, NUM_EXAMPLES_KEY

FEDTUMOR_TIME, FETS_TIME = TIME_MODELS


class FetsLedger(SiteLedger):
    """A :class:`SiteLedger` whose simulated time is FeTS's (see the module docstring)."""

    def __init__(self, seed: int):
        super().__init__(FetsProfiles(seed))
        self.seed = seed

    def _epochs(self, server_round: int) -> float:
        record = self.rounds.get(server_round)
        if record is not None and LOCAL_EPOCHS_KEY in record.hyperparameters:
            return float(record.hyperparameters[LOCAL_EPOCHS_KEY])
        plan = self.plan(server_round, "train")
        return float(plan.config.get(LOCAL_EPOCHS_KEY, 1)) if plan is not None else 1.0

    def fets_times(self, server_round: int) -> None:
        """Give every collaborator of the round its FeTS seconds (once; a closed round keeps its own)."""
        record = self.rounds.get(server_round)
        if server_round < 1 or record is None or server_round in self.round_seconds:
            return
        evaluated = {node: int(m.get(NUM_EXAMPLES_KEY, 0)) for node, m in record.evaluate.items()}
        epochs = self._epochs(server_round)
        for node_id in sorted(set(record.train) | set(evaluated)):
            site = self.site(node_id)
            val_subjects = evaluated.get(node_id, site.num_val_examples or 0)
            trained = node_id in record.train
            profile = self.profiles[site.site_id]
            seconds = fets_site_seconds(
                profile.compute,
                profile.network,
                round_noise(site.site_id, self.seed, server_round),
                val_subjects=val_subjects,
                train_subjects=int(record.train[node_id].get(NUM_EXAMPLES_KEY, 0)) if trained else 0,
                epochs=epochs,
                trained=trained,
            )
            record.simulated_s[node_id] = seconds
            if trained:  # SiteInfo.simulated_s is its last *training* round (fastest-first reads it)
                self.sites[node_id] = dataclasses.replace(site, simulated_s=seconds)

    def site_rows(self, server_round: int) -> list[tuple[str, str, dict[str, float]]]:
        self.fets_times(server_round)
        return super().site_rows(server_round)

    def close_round(self, server_round: int) -> tuple[float, float] | None:
        self.fets_times(server_round)
        return super().close_round(server_round)


def ledger_for_time_model(config: RunConfig, profiles: SiteProfiles | None = None) -> SiteLedger:
    """The run's ledger: FeTS's time model, or today's with ``profiles`` (read from ``site-profiles``)."""
    if config.time_model == FETS_TIME:
        return FetsLedger(config.seed)
    return SiteLedger(profiles if profiles is not None else SiteProfiles.from_setting(config.site_profiles))
