"""FedAdam (Reddi et al. 2021): Adam on the server over the averaged site update."""

from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAdam as FlowerFedAdam

from fedtumor.federation.in_place_fedavg import InPlaceFedAvg
from fedtumor.federation.plugin import FlowerStrategyPlugin, Parameter
from fedtumor.federation.strategy import FedTumorStrategy


class FedAdam(FedTumorStrategy, FlowerFedAdam, InPlaceFedAvg):
    """Flower's FedAdam behind fedtumor's reply checks, keeping the model's dtypes.

    Flower's bias-corrected step size is a NumPy float64 scalar, which (NumPy 2) turns the
    float32 model into float64; the next round every site's float32 reply would be rejected.
    """

    def state_dict(self) -> dict:
        return {**super().state_dict(), "m_t": self.m_t, "v_t": self.v_t}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.m_t, self.v_t = state.get("m_t"), state.get("v_t")

    def aggregate_train(self, server_round, replies):
        arrays, metrics = super().aggregate_train(server_round, replies)
        sent = self.sent_arrays
        if arrays is not None and sent is not None:
            arrays = ArrayRecord(
                {
                    key: Array(array.numpy().astype(sent[key].dtype, copy=False)) if key in sent else array
                    for key, array in arrays.items()
                }
            )
        return arrays, metrics


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
