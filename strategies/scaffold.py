"""SCAFFOLD (Karimireddy et al. 2020): control variates correct each site's client drift.

Karimireddy, Kale, Mohri, Reddi, Stich, Suresh. "SCAFFOLD: Stochastic Controlled Averaging for
Federated Learning", ICML 2020, Algorithm 1 with option II for the control-variate update.

With x the global model, c the server's control variate, c_i site i's, K the site's optimiser
steps this round and lr its learning rate:

- site (:class:`ScaffoldClientHooks`): every step adds ``c - c_i`` to each parameter's gradient;
  after training (model y_i), ``c_i+ = c_i - c + (x - y_i) / (K lr)``; it replies y_i plus
  ``scaffold-delta/<key> = c_i+ - c_i`` and keeps c_i+ in ``context.state`` (zeros at first);
- server (:class:`FlowerScaffold`): ``x <- x + eta_g * sum_i w_i (y_i - x)`` with
  ``w_i = n_i / sum n`` (``num-examples``; the paper's mean is unweighted, we weight like
  Flower's FedAvg, so eta_g = 1 is exactly FedAvg of the models), and
  ``c <- c + (|S| / N) * mean_i (c_i+ - c_i)`` with N the nodes connected this round.
  c starts at zero and is sent each round as the ArrayRecord ``scaffold-control``.

Control variates exist for floating-point arrays; sites update them for trainable parameters
only (buffers have no gradient, so their c stays zero). Floating-point buffers are updated like
parameters (eta_g = 1: averaged like FedAvg); integer arrays (e.g. BatchNorm's
``num_batches_tracked``) are averaged like FedAvg, rounded and kept in their dtype.

Optimiser: SCAFFOLD is derived for plain SGD local steps (FLamby's Scaffold even asserts
``torch.optim.SGD``): only then is ``(x - y_i) / (K lr)`` the mean corrected gradient. The
plugin therefore requires run-config ``optimizer = "sgd"`` (``required_run_config``; the run
is refused before it starts with Adam, whose normalised steps would break the control-variate
update). Sites build a fresh SGD each round; ``momentum`` 0 is the paper's setting (with
momentum, option II measures the mean momentum step instead), ``weight-decay`` adds to the
gradient SGD steps along, as in any SGD.

Example::

    flwr run . local --run-config "strategy='scaffold' optimizer='sgd' learning-rate=0.01"
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import FLOWER_LOGGER as log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from fedtumor.core.errors import ConfigError
from fedtumor.federation.array_views import array_view, weighted_sum
from fedtumor.federation.client_hooks import ClientHooks
from fedtumor.federation.options import StrategyOptions
from fedtumor.federation.plugin import FlowerStrategyPlugin, Parameter, ParameterValue
from fedtumor.federation.strategy import FedTumorStrategy

CONTROL_KEY = "scaffold-control"  # ArrayRecord in every train message: the server's c
DELTA_PREFIX = "scaffold-delta/"  # reply arrays: c_i+ - c_i per parameter
LOCAL_CONTROL_KEY = "scaffold-local-control"  # ArrayRecord in the node's context.state: c_i


def _is_float(array: Array) -> bool:
    return np.issubdtype(np.dtype(array.dtype), np.floating)


class FlowerScaffold(FlowerFedAvg):
    """SCAFFOLD's server side as a plain Flower Message-API strategy."""

    def __init__(self, *, server_learning_rate: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.server_learning_rate = server_learning_rate
        self.control: dict[str, np.ndarray] = {}  # c, per floating-point key of the global model
        self.num_nodes = 0  # N: nodes connected when the round was configured
        self._global: ArrayRecord | None = None  # x: the model this round's sites started from

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._global = arrays
        self.num_nodes = len(list(grid.get_node_ids()))
        if not self.control:
            self.control = {k: np.zeros(a.shape, np.dtype(a.dtype)) for k, a in arrays.items() if _is_float(a)}
        control = ArrayRecord({key: Array(value) for key, value in self.control.items()})
        for message in messages:
            message.content[CONTROL_KEY] = control
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        contents = [message.content for message in valid]
        records = [next(iter(content.array_records.values())) for content in contents]
        examples = [float(next(iter(c.metric_records.values()))[self.weighted_by_key]) for c in contents]
        weights = [n / sum(examples) for n in examples]  # Python floats keep float32 arrays float32
        model_keys = [key for key in records[0] if not key.startswith(DELTA_PREFIX)]
        mean = {key: weighted_sum(records, key, weights) for key in model_keys}

        previous = self._global
        if previous is None:  # only when aggregate_train is called without configure_train
            log.warning("SCAFFOLD: no global model was configured this round; taking the mean as the new model")
            previous = ArrayRecord({key: Array(np.asarray(value)) for key, value in mean.items()})
        arrays: dict[str, np.ndarray] = {}
        for key, array in previous.items():
            x = array_view(array)
            if key not in mean:  # no site sent it: keep it
                arrays[key] = x
            elif _is_float(array):  # sum_i w_i (y_i - x) = mean - x, as the weights sum to 1
                # x + eta_g (mean - x), computed in the mean's own buffer
                step = np.multiply(np.subtract(mean[key], x, out=mean[key]), self.server_learning_rate, out=mean[key])
                arrays[key] = np.add(step, x, out=step).astype(x.dtype, copy=False)
            else:  # integer arrays: FedAvg, rounded back to their dtype
                arrays[key] = np.rint(mean[key]).astype(x.dtype, copy=False)

        fraction = len(valid) / max(self.num_nodes, len(valid))  # |S| / N
        for key, control in self.control.items():
            name = DELTA_PREFIX + key
            if all(name in record for record in records):
                mean_delta = weighted_sum(records, name, [1.0 / len(records)] * len(records))
                update = np.multiply(mean_delta, fraction, out=mean_delta)  # c + fraction * mean, in its buffer
                self.control[key] = np.add(update, control, out=update).astype(control.dtype, copy=False)

        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        return ArrayRecord({key: Array(np.asarray(value)) for key, value in arrays.items()}), metrics


class Scaffold(FedTumorStrategy, FlowerScaffold):
    """SCAFFOLD behind fedtumor's reply checks; control-variate deltas are expected extras."""

    extra_reply_prefixes = (DELTA_PREFIX,)

    def state_dict(self) -> dict:
        """The server's control variate c; the sites' c_i live in their own context.state."""
        return {**super().state_dict(), "control": dict(self.control)}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.control = {key: np.asarray(value) for key, value in state.get("control", {}).items()}


def _tensors(record: ArrayRecord | None) -> Mapping[str, torch.Tensor]:
    return record.to_torch_state_dict() if record is not None else {}


class ScaffoldClientHooks(ClientHooks):
    """Corrects every gradient by ``c - c_i`` and sends the change of ``c_i`` with the model."""

    def load_global(self, model: torch.nn.Module, content: RecordDict) -> None:
        super().load_global(model, content)
        params = {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}
        server, local = _tensors(content.get(CONTROL_KEY)), _tensors(self.state.get(LOCAL_CONTROL_KEY))
        self.global_params = params  # x
        self.control = {name: server.get(name, torch.zeros_like(x)) for name, x in params.items()}  # c
        self.local_control = {name: local.get(name, torch.zeros_like(x)) for name, x in params.items()}  # c_i
        self.correction = {name: self.control[name] - self.local_control[name] for name in params}

    def before_optimizer_step(self, model: torch.nn.Module) -> None:
        for name, param in model.named_parameters():
            if param.grad is None or name not in self.correction:
                continue
            correction = self.correction[name]
            if correction.device != param.grad.device:
                correction = self.correction[name] = correction.to(param.grad.device)
            param.grad.add_(correction)

    def reply_arrays(self, model: torch.nn.Module, num_steps: int, learning_rate: float) -> ArrayRecord:
        arrays = super().reply_arrays(model, num_steps, learning_rate)
        trained = dict(model.named_parameters())
        new_local = {}
        for name, x in self.global_params.items():
            c, c_i = self.control[name], self.local_control[name]
            if num_steps > 0 and learning_rate > 0:  # option II
                y = trained[name].detach().cpu()
                new_local[name] = c_i - c + (x - y) / (num_steps * learning_rate)
            else:  # no step taken: nothing learnt about the drift
                new_local[name] = c_i
            arrays[DELTA_PREFIX + name] = Array((new_local[name] - c_i).numpy())
        self.state[LOCAL_CONTROL_KEY] = ArrayRecord(new_local)
        return arrays


class ScaffoldPlugin(FlowerStrategyPlugin):
    name = "scaffold"
    description = "Control variates that correct each site's drift from the global update (SCAFFOLD, option II)"
    reference = "Karimireddy et al. 2020, SCAFFOLD: Stochastic Controlled Averaging for Federated Learning"
    parameters = {
        "server-learning-rate": Parameter(1.0, "global step size eta_g on the averaged update (1: FedAvg of models)")
    }
    client_hooks = ScaffoldClientHooks
    strategy_class = Scaffold
    # Checked with the run config (fedtumor/federation/settings.py) before a run starts.
    required_run_config = {"optimizer": "sgd"}

    def build(self, params: Mapping[str, ParameterValue], options: StrategyOptions) -> Scaffold:
        if not float(params["server-learning-rate"]) > 0:
            raise ConfigError("run-config key 'strategy-config': scaffold's 'server-learning-rate' must be > 0")
        return super().build(params, options)
