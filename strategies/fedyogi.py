"""FedYogi (Reddi et al. 2021): Yogi on the server over the averaged site update."""

from fedtumor.federation.in_place_fedopt import InPlaceFedYogi
from fedtumor.federation.plugin import FlowerStrategyPlugin, Parameter
from fedtumor.federation.strategy import FedTumorStrategy


class FedYogi(FedTumorStrategy, InPlaceFedYogi):
    """Flower's FedYogi behind fedtumor's reply checks; its moments survive a resume."""

    def state_dict(self) -> dict:
        return {**super().state_dict(), "m_t": self.m_t, "v_t": self.v_t}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.m_t, self.v_t = state.get("m_t"), state.get("v_t")


class FedYogiPlugin(FlowerStrategyPlugin):
    name = "fedyogi"
    description = "Adaptive server optimiser (Yogi) on the averaged update"
    reference = "Reddi et al. 2021, Adaptive Federated Optimization"
    parameters = {
        "eta": Parameter(1e-2, "server learning rate"),
        "eta-l": Parameter(0.0316, "client learning rate (informational, as in Flower)"),
        "beta-1": Parameter(0.9, "first-moment decay"),
        "beta-2": Parameter(0.99, "second-moment decay"),
        "tau": Parameter(1e-3, "adaptivity: larger is closer to FedAvgM"),
    }
    strategy_class = FedYogi
    preserves_identical_updates = False  # the server takes a Yogi step of size eta, not the averaged model
