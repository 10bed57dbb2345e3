"""The wrapped Flower strategies aggregate hand-computed examples through fedtumor's plugins."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedtumor.core.config import RunConfig
from fedtumor.federation.conformance import as_serverapp, site_reply
from fedtumor.federation.registry import build_strategy
from tests.strategies.replies import Grid


def record(values) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.asarray(values, dtype=np.float32))})


def reply(node_id: int, values, num_examples: int) -> Message:
    content = RecordDict({"arrays": record(values), "metrics": MetricRecord({"num-examples": num_examples})})
    return site_reply(node_id, content)


def run_round(strategy, server_round: int, global_values, site_values: list, weights: list[int]) -> np.ndarray:
    node_ids = list(range(1, len(site_values) + 1))
    messages = list(strategy.configure_train(server_round, record(global_values), ConfigRecord(), Grid(node_ids)))
    assert sorted(m.metadata.dst_node_id for m in messages) == node_ids
    replies = [reply(n, v, w) for n, v, w in zip(node_ids, site_values, weights)]
    arrays, _ = strategy.aggregate_train(server_round, replies)
    assert arrays["w"].dtype == "float32"
    return arrays["w"].numpy()


@pytest.fixture(autouse=True)
def serverapp_identity():
    with as_serverapp():
        yield


def build(name: str, strategy_config: str = ""):
    return build_strategy(RunConfig(strategy=name, strategy_config=strategy_config, min_available_nodes=1))


# Two sites: A (1 subject) sends [4, 0], B (3 subjects) sends [0, 4]; the weighted mean is [1, 3].
SITES, WEIGHTS = [[4.0, 0.0], [0.0, 4.0]], [1, 3]


@pytest.mark.parametrize("name", ["fedavg", "fedprox"])
def test_fedavg_and_fedprox_take_the_weighted_mean(name):
    np.testing.assert_allclose(run_round(build(name), 1, [0.0, 0.0], SITES, WEIGHTS), [1.0, 3.0])


def test_fedprox_sends_mu_and_names_its_client_hooks():
    strategy = build("fedprox", "proximal-mu=0.25")
    (message, *_) = strategy.configure_train(1, record([0.0]), ConfigRecord(), Grid([1]))
    assert message.content["config"]["proximal-mu"] == 0.25
    assert message.content["config"]["client-hook"] == "fedprox"


def test_fedavgm_applies_server_momentum_over_two_rounds():
    strategy = build("fedavgm", "server-learning-rate=1.0 server-momentum=0.9")
    # Round 1: pseudo-gradient x - mean = [-1, -3] starts the momentum; x1 = x - v = [1, 3].
    np.testing.assert_allclose(run_round(strategy, 1, [0.0, 0.0], SITES, WEIGHTS), [1.0, 3.0])
    # Round 2 from [1, 3], mean [2, 3]: g = [-1, 0], v = 0.9 [-1, -3] + g = [-1.9, -2.7], x2 = [2.9, 5.7].
    x2 = run_round(strategy, 2, [1.0, 3.0], [[2.0, 3.0], [2.0, 3.0]], WEIGHTS)
    np.testing.assert_allclose(x2, [2.9, 5.7], rtol=1e-6)


def test_fedadam_takes_one_bias_corrected_adam_step():
    strategy = build("fedadam", "eta=0.1 beta-1=0.9 beta-2=0.99 tau=0.001")
    # delta = [1, 3]; m = 0.1 delta; v = 0.01 delta^2 so sqrt(v) = 0.1 delta;
    # Flower's bias correction at round t uses t + 1: eta * sqrt(1 - 0.99^2) / (1 - 0.9^2).
    eta_t = 0.1 * np.sqrt(1 - 0.99**2) / (1 - 0.9**2)
    expected = [eta_t * 0.1 / (0.1 + 0.001), eta_t * 0.3 / (0.3 + 0.001)]
    np.testing.assert_allclose(run_round(strategy, 1, [0.0, 0.0], SITES, WEIGHTS), expected, rtol=1e-5)


def test_fedyogi_takes_one_yogi_step():
    strategy = build("fedyogi", "eta=0.1 beta-1=0.9 beta-2=0.99 tau=0.001")
    # From v0 = 0: v = 0 - 0.01 delta^2 sign(0 - delta^2) = 0.01 delta^2; x = eta m / (sqrt(v) + tau).
    expected = [0.1 * 0.1 / (0.1 + 0.001), 0.1 * 0.3 / (0.3 + 0.001)]
    np.testing.assert_allclose(run_round(strategy, 1, [0.0, 0.0], SITES, WEIGHTS), expected, rtol=1e-5)


def test_fedmedian_takes_the_coordinate_wise_median_ignoring_weights():
    sites = [[1.0, 10.0], [2.0, 20.0], [9.0, 0.0]]
    np.testing.assert_allclose(run_round(build("fedmedian"), 1, [0.0, 0.0], sites, [100, 1, 1]), [2.0, 10.0])


def test_fedtrimmedavg_drops_the_extremes():
    # beta 0.2 of 5 sites trims one from each end: mean(2, 3, 4) = 3 despite the outlier 100.
    sites = [[1.0], [2.0], [3.0], [4.0], [100.0]]
    np.testing.assert_allclose(run_round(build("fedtrimmedavg", "beta=0.2"), 1, [0.0], sites, [1] * 5), [3.0])


def test_krum_picks_the_most_central_site():
    # n=4, f=0: each site scores its n - f - 2 = 2 nearest neighbours; the site at 1 has
    # neighbours 0 and 2 at distance 1 each, the lowest score; the outlier at 10 is ignored.
    sites = [[0.0], [1.0], [2.0], [10.0]]
    np.testing.assert_allclose(run_round(build("krum", "num-malicious-nodes=0"), 1, [0.0], sites, [1] * 4), [1.0])
