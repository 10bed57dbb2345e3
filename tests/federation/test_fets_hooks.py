"""FeTS Task 1 hooks: collaborator selection and round hyperparameters through the strategy mixin."""

from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from flwr.supercore.task_identity import TaskIdentity

from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError
from fedtumor.federation.fets_hooks import (
    all_sites,
    constant,
    fastest_first,
    hyperparameters_from_spec,
    largest_first,
    random_fraction,
    selector_from_spec,
    step_decay,
)
from fedtumor.federation.ledger import SiteLedger
from fedtumor.federation.records import SiteInfo, TrainingHistory
from fedtumor.federation.registry import Registry, build_strategy
from fedtumor.federation.replies import array_record_bytes
from fedtumor.federation.settings import check_federation_keys
from fedtumor.federation.simulated_time import SiteProfile, SiteProfiles
from fedtumor.federation.strategy import FedTumorStrategy
from fedtumor.federation.wire import SITE_RECORD_KEY
from strategies.fedavg import FedAvgPlugin

NODES = [40, 10, 30, 20]
SITE_OF = {10: "site-1", 20: "site-2", 30: "site-10", 40: "site-3"}
SUBJECTS_OF = {10: 4, 20: 9, 30: 6, 40: 2}
GLOBAL = ArrayRecord({"w": Array(np.zeros((2, 3), np.float32)), "b": Array(np.zeros(5, np.float16))})
TRAIN_CONFIG = {"learning-rate": 0.01, "local-epochs": 2}


class FakeGrid(Grid):
    def __init__(self, node_ids: Iterable[int]):
        self.node_ids = list(node_ids)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)

    def _unused(self, *args, **kwargs):
        raise NotImplementedError

    set_run = run = create_message = push_messages = pull_messages = send_and_receive = _unused


@pytest.fixture(autouse=True)
def task_identity():
    """Flower stamps new messages with the process's task identity, which a ServerApp sets."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


class Seen:
    """A selector that records what it was given and picks by a rule."""

    def __init__(self, rule):
        self.rule = rule
        self.calls: list[tuple[int, list[SiteInfo]]] = []

    def __call__(self, server_round, sites, rng):
        self.calls.append((server_round, list(sites)))
        return self.rule(server_round, sites, rng)


def strategy_with(selector=None, schedule=None, config: RunConfig | None = None, ledger: SiteLedger | None = None):
    class Plugin(FedAvgPlugin):
        name = "picky"

    if selector is not None:
        Plugin.select_collaborators = staticmethod(selector)
    if schedule is not None:
        Plugin.round_hyperparameters = staticmethod(schedule)
    config = config or RunConfig(strategy="picky", seed=7)
    return build_strategy(config, Registry(plugins={"picky": Plugin}), ledger=ledger)


def configure(strategy, server_round: int) -> list[Message]:
    return list(strategy.configure_train(server_round, GLOBAL, ConfigRecord(TRAIN_CONFIG), FakeGrid(NODES)))


def train_reply(message: Message, loss: float = 0.5, patches: int = 8) -> Message:
    node = message.metadata.dst_node_id
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.ones((2, 3), np.float32)), "b": Array(np.ones(5, np.float16))}),
            "metrics": MetricRecord(
                {"num-examples": SUBJECTS_OF[node], "loss": loss, "num-patches": patches, "train-seconds": 1.5}
            ),
            SITE_RECORD_KEY: ConfigRecord({"site-id": SITE_OF[node]}),
        }
    )
    return Message(content, reply_to=message)


def run_round(strategy, server_round: int, losses: dict[int, float] | None = None) -> list[Message]:
    messages = configure(strategy, server_round)
    replies = [train_reply(m, loss=(losses or {}).get(m.metadata.dst_node_id, 0.5)) for m in messages]
    arrays, _ = strategy.aggregate_train(server_round, replies)
    assert arrays is not None
    return messages


def test_default_trains_every_sampled_site_with_the_run_config_values():
    messages = configure(strategy_with(), 1)
    assert sorted(m.metadata.dst_node_id for m in messages) == sorted(NODES)
    config = messages[0].content["config"]
    assert config["learning-rate"] == 0.01 and config["local-epochs"] == 2 and config["server-round"] == 1


def test_selector_restricts_the_messages_to_the_chosen_nodes():
    selector = Seen(lambda r, sites, rng: [sites[0].node_id, sites[-1].node_id])
    strategy = strategy_with(selector)
    messages = configure(strategy, 1)
    # Round 1: nothing heard yet, so the sites come ordered by node id: 10, 20, 30, 40.
    server_round, sites = selector.calls[0]
    assert server_round == 1
    assert [s.node_id for s in sites] == [10, 20, 30, 40]
    assert all(s.site_id is None and s.num_examples is None for s in sites)
    assert sorted(m.metadata.dst_node_id for m in messages) == [10, 40]


def test_site_info_is_learned_from_replies_and_orders_the_sites():
    selector = Seen(all_sites)
    strategy = strategy_with(selector)
    run_round(strategy, 1, losses={10: 0.9, 20: 0.7, 30: 0.4, 40: 0.2})
    configure(strategy, 2)
    _, sites = selector.calls[1]
    # Known sites by site id in natural order: site-1, site-2, site-3, site-10.
    assert [s.site_id for s in sites] == ["site-1", "site-2", "site-3", "site-10"]
    assert [s.node_id for s in sites] == [10, 20, 40, 30]
    assert [s.num_examples for s in sites] == [4, 9, 2, 6]
    assert [s.loss for s in sites] == [0.9, 0.7, 0.2, 0.4]
    assert all(s.num_patches == 8 and s.last_trained_round == 1 and s.rounds_trained == 1 for s in sites)
    assert all(s.rounds_selected == 1 and s.profile is None and s.simulated_s is None for s in sites)


def test_failures_are_counted_in_site_info():
    selector = Seen(all_sites)
    strategy = strategy_with(selector)
    messages = configure(strategy, 1)
    replies = [train_reply(m) for m in messages[1:]]
    replies.append(Message(Error(code=100, reason="bad file"), reply_to=messages[0]))  # no site id in it
    strategy.aggregate_train(1, replies)
    configure(strategy, 2)
    failed = [s for s in selector.calls[1][1] if s.failures]
    assert [(s.node_id, s.site_id, s.last_error) for s in failed] == [
        (messages[0].metadata.dst_node_id, None, "bad file")
    ]


def test_largest_first_from_the_run_config_uses_what_was_learned():
    config = RunConfig(strategy="picky", collaborator_selection="largest-first k=2")
    strategy = strategy_with(Seen(all_sites), config=config)  # the run config wins over the plugin
    # Round 1: no sizes known: ties broken by site order, node ids 10 and 20.
    first = run_round(strategy, 1)
    assert sorted(m.metadata.dst_node_id for m in first) == [10, 20]
    # Round 2: 30 and 40 were never heard from, so they come first (everyone is seen once).
    second = run_round(strategy, 2)
    assert sorted(m.metadata.dst_node_id for m in second) == [30, 40]
    # Round 3: the two largest sites, 9 subjects (node 20) and 6 (node 30).
    assert sorted(m.metadata.dst_node_id for m in configure(strategy, 3)) == [20, 30]


def test_random_fraction_is_seeded_by_seed_and_round():
    def chosen(seed: int, server_round: int) -> list[int]:
        config = RunConfig(strategy="picky", seed=seed, collaborator_selection="random-fraction fraction=0.5")
        messages = configure(strategy_with(config=config), server_round)
        return sorted(m.metadata.dst_node_id for m in messages)

    assert len(chosen(0, 1)) == 2
    assert chosen(0, 1) == chosen(0, 1)
    draws = {tuple(chosen(seed, r)) for seed in range(4) for r in range(1, 4)}
    assert len(draws) > 1  # not always the same two


def test_selector_must_choose_offered_nodes():
    with pytest.raises(ValueError, match=r"round 1: collaborator selector .* not offered: \[99\]"):
        configure(strategy_with(lambda r, sites, rng: [99]), 1)
    with pytest.raises(ValueError, match="chose no site"):
        configure(strategy_with(lambda r, sites, rng: []), 1)


def test_round_hyperparameters_go_into_the_round_config():
    config = RunConfig(strategy="picky", round_hyperparameters="step-decay factor=0.5 every=2")
    strategy = strategy_with(config=config)
    lrs = []
    for server_round in (1, 2, 3, 4, 5):
        messages = run_round(strategy, server_round)
        lrs.append(messages[0].content["config"]["learning-rate"])
        assert messages[0].content["config"]["local-epochs"] == 2
    assert lrs == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])


def test_a_schedule_sees_the_history_of_completed_rounds():
    seen: list[TrainingHistory] = []

    def schedule(server_round, history):
        seen.append(history)
        last = history.last
        if last is None:
            return {"local-epochs": 1}  # the learning rate stays the run config's
        return {"learning-rate": 0.1 * last.mean_train_loss(), "local-epochs": len(history.rounds) + 1}

    strategy = strategy_with(lambda r, sites, rng: [10, 20], schedule)
    first = run_round(strategy, 1, losses={10: 1.0, 20: 0.25})
    assert first[0].content["config"]["learning-rate"] == 0.01
    assert first[0].content["config"]["local-epochs"] == 1
    second = configure(strategy, 2)
    record = seen[1].rounds[0]
    assert seen[1].defaults == TRAIN_CONFIG
    assert record.selected == (10, 20) and set(record.offered) == set(NODES)
    assert record.hyperparameters == {"local-epochs": 1}
    # Loss weighted by subjects: (1.0*4 + 0.25*9) / 13.
    assert record.mean_train_loss() == pytest.approx(6.25 / 13)
    assert second[0].content["config"]["learning-rate"] == pytest.approx(0.1 * 6.25 / 13)
    assert second[0].content["config"]["local-epochs"] == 2


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"learning-rate": -1.0}, "learning-rate must be a positive number"),
        ({"local-epochs": 0}, "local-epochs must be an integer >= 1"),
        ({"local-epochs": 1.5}, "local-epochs must be an integer >= 1"),
        ({"momentum": 0.9}, "unknown keys \\['momentum'\\]"),
    ],
)
def test_bad_hyperparameters_are_named(values, message):
    with pytest.raises(ValueError, match=f"round 1: round hyperparameters .*{message}"):
        configure(strategy_with(schedule=lambda r, h: values), 1)


def test_profiles_give_site_info_simulated_time_and_fastest_first_uses_it():
    profiles = SiteProfiles(
        {
            "site-1": SiteProfile(1.0, 8, 8),
            "site-2": SiteProfile(0.5, 8, 8),
            "site-3": SiteProfile(4.0, 8, 8),
            "site-10": SiteProfile(2.0, 8, 8),
        }
    )
    config = RunConfig(strategy="picky", collaborator_selection="fastest-first k=2")
    strategy = strategy_with(config=config, ledger=SiteLedger(profiles))
    run_round(strategy, 1)  # unknown first: nodes 10, 20
    run_round(strategy, 2)  # then 30, 40
    sites = {s.site_id: s for s in strategy.ledger.sites.values()}
    # 24 + 10 bytes each way (w float32 2x3, b float16 x5) at 8 Mbit/s, plus 8 patches x seconds per sample.
    transfer = 2 * 34 * 8 / 8e6
    assert array_record_bytes(GLOBAL) == 34
    assert sites["site-2"].simulated_s == pytest.approx(4.0 + transfer)
    assert sites["site-3"].profile == SiteProfile(4.0, 8, 8)
    assert strategy.ledger.rounds[1].duration_s == pytest.approx(8.0 + transfer)  # site-1, the slower of two
    # Round 3: the two fastest, site-2 (node 20) and site-1 (node 10).
    assert sorted(m.metadata.dst_node_id for m in configure(strategy, 3)) == [10, 20]


def test_built_ins_by_hand():
    sites = [
        SiteInfo(1, "site-1", num_examples=5, simulated_s=30.0),
        SiteInfo(2, "site-2", num_examples=7, simulated_s=10.0),
        SiteInfo(3, "site-3", num_examples=5),
    ]
    rng = np.random.default_rng(0)
    assert all_sites(1, sites, rng) == [1, 2, 3]
    assert largest_first(2)(1, sites, rng) == [2, 1]  # 7 subjects, then the first of the two with 5
    assert fastest_first(2)(1, sites, rng) == [3, 2]  # never timed first, then 10 s
    assert len(random_fraction(0.34)(1, sites, rng)) == 1
    assert len(random_fraction(0.1, minimum=2)(1, sites, rng)) == 2
    history = TrainingHistory(defaults={"learning-rate": 0.02, "local-epochs": 3})
    assert constant(9, history) == {"learning-rate": 0.02, "local-epochs": 3}
    assert step_decay(0.1, 3)(7, history) == pytest.approx({"learning-rate": 0.02 * 0.01, "local-epochs": 3})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("collaborator-selection", "best-sites", "'best-sites' is not one of all-sites, random-fraction"),
        ("collaborator-selection", "random-fraction fraction=0", "random-fraction: fraction must be in \\(0, 1\\]"),
        ("collaborator-selection", "largest-first k=2.5", "'k' of largest-first expects int, got float 2.5"),
        ("collaborator-selection", "largest-first n=2", "'n' is not a parameter of largest-first \\(parameters: k\\)"),
        ("round-hyperparameters", "step-decay every=0", "step-decay: every must be an integer >= 1"),
        ("round-hyperparameters", "step-decay factor", "'factor' is not key=value \\(parameters of step-decay"),
        ("round-hyperparameters", "step-decay every=ten", "step-decay: cannot parse the value of 'every': 'ten'"),
    ],
)
def test_run_config_specs_are_validated_naming_the_key(key, value, message):
    config = RunConfig(strategy="picky", **{key.replace("-", "_"): value})
    with pytest.raises(ConfigError, match=f"^run-config key '{key}': {message}"):
        check_federation_keys(config)  # where a federation's config is validated
    with pytest.raises(ConfigError, match=f"^run-config key '{key}': {message}"):
        strategy_with(config=config)  # and where the strategy is built


def test_specs_parse_to_built_ins():
    assert selector_from_spec("") is None and hyperparameters_from_spec("  ") is None
    assert selector_from_spec("all-sites") is all_sites
    assert selector_from_spec("random-fraction fraction=1") == random_fraction(1.0, 1)
    assert hyperparameters_from_spec("step-decay every=4") == step_decay(0.5, 4)


def test_download_bytes_count_every_array_record_sent_and_upload_the_reply():
    class WithExtras(FlowerFedAvg):  # like SCAFFOLD: sends control variates next to the model
        def configure_train(self, server_round, arrays, config, grid):
            messages = list(super().configure_train(server_round, arrays, config, grid))
            for message in messages:
                message.content["control"] = ArrayRecord({"c": Array(np.zeros(4, np.float64))})
            return messages

    class Strategy(FedTumorStrategy, WithExtras):
        pass

    strategy = Strategy(min_available_nodes=1)
    messages = list(strategy.configure_train(1, GLOBAL, ConfigRecord(TRAIN_CONFIG), FakeGrid(NODES)))
    strategy.aggregate_train(1, [train_reply(m) for m in messages])
    seen = strategy.ledger.replies_of(1, "train")
    assert [r.download_bytes for r in seen] == [34 + 32] * 4  # model 24 + 10, control 4 x 8
    assert [r.upload_bytes for r in seen] == [34] * 4
