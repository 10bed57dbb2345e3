"""FedAdam (Reddi et al. 2021): Adam on the server over the averaged site update."""

from fedtumor.federation.in_place_fedopt import InPlaceFedAdam
from fedtumor.federation.plugin import FlowerStrategyPlugin, Parameter
from fedtumor.federation.strategy import FedTumorStrategy


class FedAdam(FedTumorStrategy, InPlaceFedAdam):
    """Flower's FedAdam behind fedtumor's reply checks, keeping the model's dtypes; its moments survive a resume."""

    def state_dict(self) -> dict:
        return {**super().state_dict(), "m_t": self.m_t, "v_t": self.v_t}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.m_t, self.v_t = state.get("m_t"), state.get("v_t")


class FedAdamPlugin(FlowerStrategyPlugin):
    name = "fedadam"
    description = "Adaptive server optimiser (Adam) on the averaged update"
    reference = "Reddi et al. 2021, Adaptive Federated Optimization"
    parameters = {
        "eta": Parameter(1e-2, "server learning rate"),
        "eta-l": Parameter(1e-2, "client learning rate (informational, as in Flower)"),
        "beta-1": Parameter(0.9, "first-moment decay"),
        "beta-2": Parameter(0.99, "second-moment decay"),
        "tau": Parameter(1e-3, "adaptivity: larger is closer to FedAvgM"),
    }
    strategy_class = FedAdam
    preserves_identical_updates = False  # the server takes an Adam step of size eta, not the averaged model
