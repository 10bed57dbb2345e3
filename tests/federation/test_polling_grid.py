"""PollingGrid: replies pulled on a growing schedule, Flower's timeout kept (live: every federation test)."""

from types import SimpleNamespace

import pytest

from fedtumor.federation.polling_grid import PollingGrid


class ScriptedGrid:
    """Replies become available at given times on a fake clock; counts the pulls."""

    def __init__(self, arrivals: dict[str, float]):
        self.arrivals = arrivals
        self.now = 0.0
        self.pulls: list[float] = []

    def push_messages(self, messages):
        return [message for message in messages]  # the message ids

    def pull_messages(self, message_ids):
        self.pulls.append(self.now)
        ready = [i for i in message_ids if self.arrivals[i] <= self.now]
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ready]

    def get_node_ids(self):
        return [1, 2]


def polling(grid: ScriptedGrid, **kwargs) -> PollingGrid:
    def sleep(seconds: float) -> None:
        grid.now += seconds

    return PollingGrid(grid, clock=lambda: grid.now, sleep=sleep, **kwargs)


def test_the_round_ends_soon_after_the_last_reply_and_pulls_back_off_to_the_maximum():
    grid = ScriptedGrid({"a": 0.2, "b": 6.0})
    replies = polling(grid, first_interval_s=0.1, max_interval_s=1.0, backoff=2.0).send_and_receive(["a", "b"])
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["a", "b"]
    gaps = [later - earlier for earlier, later in zip(grid.pulls, grid.pulls[1:])]
    # a is pulled at 0.3; the interval starts again from 0.1 and grows to the maximum while b trains
    assert gaps[:6] == pytest.approx([0.1, 0.2, 0.1, 0.2, 0.4, 0.8]) and max(gaps) == pytest.approx(1.0)
    assert grid.pulls[-1] - 6.0 < 1.0  # Flower's grid would wait up to 3 s here
    assert polling(grid).get_node_ids() == [1, 2]  # the rest is the wrapped grid's


def test_each_reply_restarts_the_short_interval_so_the_next_site_is_seen_soon():
    grid = ScriptedGrid({"a": 3.0, "b": 3.3, "c": 3.62})  # a simulation: the sites finish one after another
    polling(grid, first_interval_s=0.05, max_interval_s=0.25, backoff=2.0).send_and_receive(["a", "b", "c"])
    for arrival in (3.0, 3.3, 3.62):
        seen = min(pull for pull in grid.pulls if pull >= arrival - 1e-9)
        assert seen - arrival <= 0.25 + 1e-9
    after_a = min(pull for pull in grid.pulls if pull >= 3.0)
    assert min(pull for pull in grid.pulls if pull > after_a) - after_a == pytest.approx(0.05)


def test_a_timeout_returns_what_arrived_and_never_sleeps_past_it():
    grid = ScriptedGrid({"a": 0.0, "b": 100.0})
    replies = polling(grid, first_interval_s=0.5, max_interval_s=4.0).send_and_receive(["a", "b"], timeout=3.0)
    assert [r.metadata.reply_to_message_id for r in replies] == ["a"]
    assert grid.pulls[-1] == pytest.approx(3.0)  # the last pull at the deadline, not after it


def test_bad_intervals_are_refused():
    with pytest.raises(ValueError, match="first_interval_s"):
        PollingGrid(ScriptedGrid({}), first_interval_s=2.0, max_interval_s=1.0)
    with pytest.raises(ValueError, match="backoff"):
        PollingGrid(ScriptedGrid({}), backoff=0.5)


def test_a_simulations_in_process_grid_is_pulled_more_often_than_a_superlinks():
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    from fedtumor.federation.polling_grid import polling_grid_for

    in_process = polling_grid_for(InMemoryGrid.__new__(InMemoryGrid))  # a simulation's grid, not started
    remote = polling_grid_for(ScriptedGrid({}))
    assert in_process.max_interval_s == 0.05 < remote.max_interval_s == 0.25
