"""Flower's FedAdam and FedYogi server steps, one array at a time and without reserialising.

Flower's ``FedOpt`` family deserialises the averaged model, then builds each of
``delta_t``, ``m_t``, ``v_t`` and the new model as a dict over the whole model, and its
FedAdam step is in float64 (its bias-corrected step size is a NumPy float64). Here the
same expressions run key by key on the in-place weighted mean (:class:`InPlaceFedAvg`), so
the extra memory is a few arrays of one key, and each key's new value is serialised once.
The floats are Flower's: the same operations on the same dtypes in the same order.

Put these where Flower's class would go: ``class FedAdam(FedTumorStrategy, InPlaceFedAdam)``.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp.exception import AggregationError
from flwr.serverapp.strategy import FedAdam as FlowerFedAdam
from flwr.serverapp.strategy import FedYogi as FlowerFedYogi

from fedtumor.federation.in_place_fedavg import InPlaceFedAvg

STEP_CHUNK = 1 << 16  # elements: a chunk's temporaries stay in cache


class InPlaceFedOptStep:
    """The FedOpt skeleton: weighted mean, then :meth:`server_step` per key of the global model.

    The new model keeps the global model's dtypes. Flower's does not: its FedAdam step size
    is a NumPy float64, which (NumPy 2) turns a float32 model into float64, and both steps turn
    integer arrays (BatchNorm's ``num_batches_tracked``) into float64; the next round every
    site's reply, in the model's own dtypes, would be refused.
    """

    # Set by Flower's FedOpt and InPlaceFedAvg, the other bases of a concrete class.
    current_arrays: dict[str, np.ndarray] | None
    m_t: dict[str, np.ndarray] | None
    v_t: dict[str, np.ndarray] | None
    beta_1: float

    # InPlaceFedAvg's, not Flower's FedAdam's or FedYogi's (which come first in a concrete class's bases).
    aggregate_train = InPlaceFedAvg.aggregate_train

    def model_from_means(self, server_round: int, means: dict[str, np.ndarray]) -> ArrayRecord:
        """Flower's FedOpt checks, then the server step key by key."""
        current = self.current_arrays
        if current is None:
            raise AggregationError(
                reason="Current arrays not set. Ensure that `configure_train` has been called before aggregation."
            )
        if set(means) != set(current):
            raise AggregationError(reason="Keys of the aggregated arrays do not match those of the global model.")
        for key, mean in means.items():
            if mean.shape != current[key].shape:
                raise AggregationError(reason=f"Shape of aggregated array '{key}' does not match the global model's.")
        m_t, v_t = dict(self.m_t or {}), dict(self.v_t or {})
        new_arrays = {}
        for key, x in current.items():
            mean = means.pop(key)
            m_t[key], v_t[key], new_value = self._key_step(server_round, x, mean, m_t.get(key), v_t.get(key))
            new_arrays[key] = Array(new_value)
        self.m_t, self.v_t = m_t, v_t
        return ArrayRecord(new_arrays)

    def _key_step(self, server_round: int, x: np.ndarray, mean: np.ndarray, m: np.ndarray | None, v: np.ndarray | None):
        """(m_t, v_t, new value) of one key, Flower's expressions a cache-sized chunk at a time.

        Every operation is element-wise, so a chunk's floats are the whole array's.
        """
        flat_x, flat_mean = np.ravel(x), np.ravel(mean)
        flat_m = np.ravel(m) if m is not None else None
        flat_v = np.ravel(v) if v is not None else None
        outputs: list[np.ndarray] = []
        for start in range(0, max(flat_x.size, 1), STEP_CHUNK):
            stop = min(flat_x.size, start + STEP_CHUNK)
            delta = flat_mean[start:stop] - flat_x[start:stop]
            # Flower starts both moments at zeros_like(the mean).
            m_old = flat_m[start:stop] if flat_m is not None else np.zeros_like(flat_mean[start:stop])
            v_old = flat_v[start:stop] if flat_v is not None else np.zeros_like(flat_mean[start:stop])
            m_new = self.beta_1 * m_old + (1 - self.beta_1) * delta
            v_new = self.second_moment(v_old, delta)
            new = self.server_step(server_round, flat_x[start:stop], m_new, v_new).astype(x.dtype, copy=False)
            if not outputs:
                outputs = [np.empty(flat_x.size, part.dtype) for part in (m_new, v_new, new)]
            for output, part in zip(outputs, (m_new, v_new, new)):
                output[start:stop] = part
        return tuple(output.reshape(x.shape) for output in outputs)

    def second_moment(self, v: np.ndarray, delta: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def server_step(self, server_round: int, x: np.ndarray, m: np.ndarray, v: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class InPlaceFedAdam(InPlaceFedOptStep, FlowerFedAdam, InPlaceFedAvg):
    """Flower's FedAdam, key by key."""

    def second_moment(self, v: np.ndarray, delta: np.ndarray) -> np.ndarray:
        return self.beta_2 * v + (1 - self.beta_2) * (delta**2)

    def server_step(self, server_round: int, x: np.ndarray, m: np.ndarray, v: np.ndarray) -> np.ndarray:
        bias_correction = np.sqrt(1 - np.power(self.beta_2, server_round + 1.0))
        eta_norm = self.eta * bias_correction / (1 - np.power(self.beta_1, server_round + 1.0))
        return x + eta_norm * m / (np.sqrt(v) + self.tau)


class InPlaceFedYogi(InPlaceFedOptStep, FlowerFedYogi, InPlaceFedAvg):
    """Flower's FedYogi, key by key."""

    def second_moment(self, v: np.ndarray, delta: np.ndarray) -> np.ndarray:
        return v - (1.0 - self.beta_2) * (delta**2) * np.sign(v - delta**2)

    def server_step(self, server_round: int, x: np.ndarray, m: np.ndarray, v: np.ndarray) -> np.ndarray:
        return x + self.eta * m / (np.sqrt(v) + self.tau)
