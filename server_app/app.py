"""The Flower ServerApp: warm the sites up, then run the federation (``server_app/federation.py``).

This module imports only Flower and the run config, so the ServerApp sends the sites their
warm-up within a second of starting; the federation's own imports (torch, MONAI, the
strategies) then load while the sites load theirs.
"""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import Context
from flwr.common.logger import FLOWER_LOGGER as log
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.object_ref import load_app

from fedtumor.core.config import load_run_config
from fedtumor.core.errors import ConfigError
from fedtumor.federation.polling_grid import polling_grid_for
from fedtumor.federation.warm_up import start_warm_up

app = ServerApp()
FEDERATION = "server_app.federation:run_federation"
APP_DIR = Path(__file__).resolve().parent.parent  # already on sys.path: Flower loaded this module from it


@app.main()
def main(grid: Grid, context: Context) -> None:
    started = time.perf_counter()
    grid = polling_grid_for(grid)  # pulls replies soon after they arrive; Flower's grids wait 0.1-3 s between pulls
    try:
        config = load_run_config(context.run_config)
    except ConfigError as exc:
        log.error("fedtumor: %s", exc)  # one line naming the key; the run's status is "failed"
        raise
    # The nodes connected now (a simulation's all); a node that joins later loads its site in round 1.
    warming = start_warm_up(grid, list(grid.get_node_ids())) if config.warm_up else None
    # Seconds of imports, while the sites load theirs. Through Flower's loader: in a simulation the
    # ServerApp shares its process with Flower's, which imports the ClientApp (MONAI too) at the same
    # time, and MONAI's package set-up fails when two threads import it at once; the loader's lock
    # takes them in turn.
    run_federation = load_app(FEDERATION, ImportError, APP_DIR)
    run_federation(grid, context, warming, started)
