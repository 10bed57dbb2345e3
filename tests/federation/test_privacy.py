"""Client-level DP: the site clips its update, the server adds calibrated noise, the resume state is forwarded."""

import subprocess
import sys

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.common import MessageType
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from client_app.privacy import clip_update_when_asked
from fedtumor.core.config import RunConfig, load_run_config
from fedtumor.core.errors import ConfigError
from fedtumor.federation.conformance import as_serverapp, site_reply
from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.privacy import ClientLevelDP, privacy_summary, with_client_level_dp
from fedtumor.federation.registry import build_strategy, load_registry
from tests import REPO
from tests.strategies.replies import Grid

AVERAGING = {"fedavg", "fedprox", "ditto"}  # ditto: FedAvg on the global model, personal models stay local


@pytest.fixture(autouse=True)
def serverapp_identity():
    with as_serverapp():
        yield


def arrays(values) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.asarray(values, dtype=np.float32))})


def config(**changes) -> RunConfig:
    return RunConfig(min_available_nodes=1, dp_noise_multiplier=1.0, dp_clipping_norm=2.0, **changes)


def dp_strategy(name: str = "fedavg", ledger: SiteLedger | None = None, **changes) -> ClientLevelDP:
    run_config = config(strategy=name, **changes)
    strategy = with_client_level_dp(build_strategy(run_config, ledger=ledger), run_config)
    assert isinstance(strategy, ClientLevelDP)
    return strategy


# -- the site: clipping on the train handler --------------------------------------------------


def train_instruction(received, clipping_norm: float | None) -> Message:
    settings = {"server-round": 1} if clipping_norm is None else {"server-round": 1, KEY_CLIPPING_NORM: clipping_norm}
    content = RecordDict({"arrays": arrays(received), "config": ConfigRecord(settings)})
    return site_reply(7, content, MessageType.TRAIN)  # a message with metadata, as a ClientApp receives it


def handler_sending(sent):
    def handler(message: Message, context: Context) -> Message:
        content = RecordDict({"arrays": arrays(sent), "metrics": MetricRecord({"num-examples": 3})})
        return Message(content=content, reply_to=message)

    return handler


def context() -> Context:
    return Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})


def test_an_update_longer_than_the_bound_is_scaled_to_it():
    received, trained = [1.0, 1.0, 1.0], [4.0, 5.0, 1.0]  # update [3, 4, 0], norm 5
    reply = clip_update_when_asked(train_instruction(received, 2.0), context(), handler_sending(trained))
    sent = reply.content["arrays"]["w"].numpy()
    update = sent - np.asarray(received)
    np.testing.assert_allclose(np.linalg.norm(update), 2.0, rtol=1e-6)
    np.testing.assert_allclose(update, [1.2, 1.6, 0.0], rtol=1e-6)  # same direction, norm 2
    assert sent.dtype == np.float32
    assert reply.content["metrics"]["num-examples"] == 3


def test_an_update_within_the_bound_is_sent_unchanged():
    received, trained = [1.0, 1.0], [1.5, 1.0]
    reply = clip_update_when_asked(train_instruction(received, 2.0), context(), handler_sending(trained))
    np.testing.assert_allclose(reply.content["arrays"]["w"].numpy(), trained)


def test_without_a_clipping_norm_in_the_round_config_nothing_changes():
    received, trained = [0.0, 0.0], [30.0, 40.0]
    reply = clip_update_when_asked(train_instruction(received, None), context(), handler_sending(trained))
    np.testing.assert_allclose(reply.content["arrays"]["w"].numpy(), trained)


def test_a_site_error_passes_through_the_clipping():
    def failing(message: Message, context: Context) -> Message:
        return Message(Error(code=100, reason="site 0: bad file"), reply_to=message)

    reply = clip_update_when_asked(train_instruction([0.0], 1.0), context(), failing)
    assert reply.has_error() and reply.error.reason == "site 0: bad file"


def test_a_reply_leaving_arrays_out_is_refused_not_sent_unclipped():
    def partial(message: Message, context: Context) -> Message:
        content = RecordDict({"arrays": ArrayRecord({"v": Array(np.zeros(2, np.float32))}), "metrics": MetricRecord()})
        return Message(content=content, reply_to=message)

    reply = clip_update_when_asked(train_instruction([0.0], 1.0), context(), partial)
    assert reply.has_error() and "keys" in reply.error.reason


# -- the server: noise, reply checks, delegation ----------------------------------------------


def site_update(node_id: int, values, num_examples: int = 1) -> Message:
    content = RecordDict({"arrays": arrays(values), "metrics": MetricRecord({"num-examples": num_examples})})
    return site_reply(node_id, content)


def one_round(strategy, replies_for: dict, size: int):
    """``replies_for``: node id -> its reply, or a function of the instruction it got."""
    messages = list(strategy.configure_train(1, arrays(np.zeros(size)), ConfigRecord(), Grid(replies_for)))
    replies = [reply(m) if callable(reply := replies_for[m.metadata.dst_node_id]) else reply for m in messages]
    return messages, strategy.aggregate_train(1, replies)


def test_round_config_carries_the_clipping_norm_and_the_strategy_settings():
    strategy = dp_strategy("fedprox", strategy_config="proximal-mu=0.25")
    (message,) = strategy.configure_train(1, arrays([0.0]), ConfigRecord({"learning-rate": 0.1}), Grid([1]))
    sent = message.content["config"]
    assert sent[KEY_CLIPPING_NORM] == 2.0
    assert sent["proximal-mu"] == 0.25 and sent["client-hook"] == "fedprox" and sent["learning-rate"] == 0.1


def test_noise_std_is_noise_multiplier_times_clip_over_the_sites_averaged():
    np.random.seed(0)  # Flower draws the noise from numpy's global generator
    size = 200_000
    strategy = dp_strategy()
    replies = {n: site_update(n, np.full(size, 0.5), num_examples=n) for n in (1, 2, 3, 4)}
    _, (aggregated, _) = one_round(strategy, replies, size)
    noise = aggregated["w"].numpy() - 0.5  # identical updates: the mean is 0.5 exactly
    assert strategy.num_sampled_clients == 4
    np.testing.assert_allclose(noise.std(), 1.0 * 2.0 / 4, rtol=0.01)
    assert abs(noise.mean()) < 0.01


def test_a_failed_and_a_rejected_site_do_not_void_the_round_and_raise_the_noise():
    np.random.seed(1)
    size = 200_000
    ledger = SiteLedger()  # the run's, as the ServerApp holds it
    strategy = dp_strategy(ledger=ledger)
    replies = {n: site_update(n, np.full(size, 0.5)) for n in (1, 2, 3)}
    replies[4] = site_update(4, np.full(size, np.nan))  # rejected by the reply checks
    replies[5] = lambda instruction: Message(Error(code=100, reason="truncated file"), reply_to=instruction)
    _, (aggregated, _) = one_round(strategy, replies, size)
    assert aggregated is not None
    assert strategy.num_sampled_clients == 3  # the updates averaged, not the sites asked
    np.testing.assert_allclose((aggregated["w"].numpy() - 0.5).std(), 1.0 * 2.0 / 3, rtol=0.01)
    heard = ledger.replies_of(1, "train")
    errors = sorted(reply.error.split(":")[0] for reply in heard if reply.error)
    assert errors == ["rejected", "truncated file"]
    assert sorted(reply.node_id for reply in heard if reply.error is None) == [1, 2, 3]
    assert ledger.updates_averaged(1) == 3


def test_the_wrapper_forwards_the_resume_state_and_nothing_else(monkeypatch):
    strategy = dp_strategy("fedprox", strategy_config="proximal-mu=0.5")
    inner = strategy.strategy
    loaded = []
    monkeypatch.setattr(inner, "state_dict", lambda: {"learnt": 1})
    monkeypatch.setattr(inner, "load_state_dict", loaded.append)
    saved = strategy.state_dict()
    assert saved["strategy"] == {"learnt": 1}  # next to the accountant's state
    strategy.load_state_dict({**saved, "strategy": {"learnt": 2}})
    assert loaded == [{"learnt": 2}]
    assert inner.proximal_mu == 0.5 and inner.options.client_hook_name == "fedprox"
    assert (strategy.noise_multiplier, strategy.clipping_norm) == (1.0, 2.0)
    assert not hasattr(inner, "noise_multiplier")
    for name in ("options", "ledger", "proximal_mu", "no_such_attribute"):  # not looked up on the wrapped strategy
        assert not hasattr(strategy, name), name
    strategy.marker = True  # and an attribute set on the wrapper stays on it
    assert not hasattr(inner, "marker")


def test_dp_off_leaves_the_strategy_unwrapped():
    run_config = RunConfig(min_available_nodes=1)
    strategy = build_strategy(run_config)
    assert with_client_level_dp(strategy, run_config) is strategy


@pytest.mark.parametrize("name", sorted(set(load_registry().plugins) - AVERAGING))
def test_strategies_that_do_not_average_models_are_refused(name):
    run_config = config(strategy=name)
    with pytest.raises(ConfigError, match=rf"^run-config key 'dp-noise-multiplier': strategy '{name}' cannot run"):
        with_client_level_dp(build_strategy(run_config), run_config)


@pytest.mark.parametrize("name", sorted(AVERAGING))
def test_averaging_strategies_are_wrapped(name):
    assert isinstance(dp_strategy(name).strategy, type(build_strategy(config(strategy=name))))


# -- configuration and summary ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("dp-noise-multiplier", -0.5, "out of range"),
        ("dp-noise-multiplier", float("inf"), "out of range"),
        ("dp-clipping-norm", 0.0, "out of range"),
        ("dp-clipping-norm", "1.0", "expected float, got str"),
        ("dp-delta", 1.0, "out of range"),
    ],
)
def test_bad_dp_settings_are_named(key, value, message):
    with pytest.raises(ConfigError, match=f"^run-config key '{key}': .*{message}"):
        load_run_config({key: value})


def test_summary_reports_the_dp_settings():
    assert privacy_summary(RunConfig()) == {
        "enabled": False,
        "mechanism": None,
        "noise_multiplier": 0.0,
        "clipping_norm": None,
        "accounting": None,
        "delta": None,
        "epsilon_spent": None,
        "releases": 0,
        "rounds": [],
    }
    on = privacy_summary(RunConfig(dp_noise_multiplier=0.8, dp_clipping_norm=5.0, dp_delta=1e-6))
    assert on["enabled"] and on["noise_multiplier"] == 0.8 and on["clipping_norm"] == 5.0
    assert on["delta"] == 1e-6 and on["epsilon_spent"] == 0.0 and on["releases"] == 0  # no round run yet


def test_dp_keys_are_documented():
    text = (REPO / "docs" / "configuration.md").read_text()
    assert "`dp-noise-multiplier`" in text and "`dp-clipping-norm`" in text


def test_simulate_refuses_dp_with_a_strategy_that_cannot_carry_it():
    completed = subprocess.run(
        [sys.executable, "scripts/simulate.py", "--run-config", "strategy='krum' dp-noise-multiplier=1.0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: run-config key 'dp-noise-multiplier': strategy 'krum'")
