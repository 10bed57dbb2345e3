"""A Grid that pulls a round's replies soon after they arrive, where Flower's waits between pulls.

Flower 1.41's grids push a round's messages, pull the replies, and sleep between pulls: 3 s
for the deployed ServerApp's ``HttpGrid``, 0.1 s for a simulation's ``InMemoryGrid``. A phase
so ends up to that long (half of it on average) after its last reply arrived: twice a round,
train and evaluate. :class:`PollingGrid` pulls again after ``first_interval_s``, then backs off
by ``backoff`` up to ``max_interval_s`` between pulls, and starts again from
``first_interval_s`` after every pull that brought a reply (the other sites' replies tend to
follow: in a simulation the sites finish one after another). :func:`polling_grid_for` picks
``max_interval_s`` for the grid it wraps: 0.25 s where a pull is a request to the SuperLink
(four a second in a long phase), 0.05 s where it reads the simulation's own in-process state
(a fraction of a millisecond). The replies, and so the results, are the same.

Example::

    grid = polling_grid_for(grid)  # in the ServerApp, before strategy.start(grid=grid, ...)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable

from flwr.app import Message

REMOTE_MAX_INTERVAL_S = 0.25  # a pull is a request to the SuperLink
IN_PROCESS_MAX_INTERVAL_S = 0.05  # a pull reads the simulation's in-process state


def polling_grid_for(grid) -> PollingGrid:
    """``grid`` wrapped in a :class:`PollingGrid` whose longest wait suits what one pull costs."""
    # Not imported here: Flower's simulation has loaded it whenever its grid is one (a second of imports otherwise).
    module = sys.modules.get("flwr.superlink.grid.inmemory_grid")
    in_process = module is not None and isinstance(grid, module.InMemoryGrid)
    return PollingGrid(grid, max_interval_s=IN_PROCESS_MAX_INTERVAL_S if in_process else REMOTE_MAX_INTERVAL_S)


class PollingGrid:
    """``send_and_receive`` with short, growing pull intervals; everything else goes to the wrapped grid."""

    def __init__(
        self,
        grid,
        first_interval_s: float = 0.05,
        max_interval_s: float = REMOTE_MAX_INTERVAL_S,
        backoff: float = 1.5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not 0 < first_interval_s <= max_interval_s:
            raise ValueError(f"need 0 < first_interval_s <= max_interval_s, got {first_interval_s}, {max_interval_s}")
        if backoff < 1:
            raise ValueError(f"backoff must be at least 1, got {backoff}")
        self._grid = grid
        self.first_interval_s = first_interval_s
        self.max_interval_s = max_interval_s
        self.backoff = backoff
        self._clock = clock
        self._sleep = sleep

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """Push ``messages``, then pull until every one has a reply or ``timeout`` s have passed (as Flower's)."""
        return self.receive(self._grid.push_messages(messages), timeout=timeout)

    def receive(self, message_ids: Iterable[str], *, timeout: float | None = None) -> list[Message]:
        """Pull the replies to messages pushed earlier until all are in or ``timeout`` s have passed."""
        waiting = set(message_ids)
        deadline = None if timeout is None else self._clock() + timeout
        replies: list[Message] = []
        interval = self.first_interval_s
        while waiting:
            received = list(self._grid.pull_messages(waiting))
            replies.extend(received)
            waiting.difference_update(message.metadata.reply_to_message_id for message in received)
            if not waiting:
                break
            if received:
                interval = self.first_interval_s
            if deadline is not None:
                left = deadline - self._clock()
                if left <= 0:
                    break
                interval = min(interval, left)
            self._sleep(interval)
            interval = min(interval * self.backoff, self.max_interval_s)
        return replies

    def __getattr__(self, name: str):
        return getattr(self._grid, name)
