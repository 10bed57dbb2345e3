#!/usr/bin/env python
"""Time `aggregate_train` of every installed strategy against Flower's FedAvg, in one run.

Each strategy aggregates the same replies: CLIENTS sites, each sending a model the size of
the FeTS 2021 reference network (3D residual U-Net, 32 base filters: about 19 M parameters)
or of `--model/--base-filters`. Flower's own FedAvg is the baseline measured in the same
run; the table reports each strategy's median time, its ratio to that baseline and the peak
memory the aggregation allocated (tracemalloc, which sees numpy's buffers), next to the
size of one round of replies and the ratio of the two. Targets: FedAvg-class strategies at
most 1x Flower's FedAvg; robust strategies (median, trimmed mean, Krum; listed separately)
at most 3x, with extra memory at most one round of replies (peak / replies <= 1).
A strategy whose replies carry more than the model (SCAFFOLD's control-variate updates) is
also timed against Flower's FedAvg over those same, bigger replies (`x same replies`).

    python scripts/bench_aggregation.py --clients 71 --repeats 3 --json docs/bench_aggregation.json
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from flwr.supercore.task_identity import TaskIdentity
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from fedtumor.core.model import build_model
from fedtumor.federation.conformance import site_reply
from fedtumor.federation.options import StrategyOptions
from fedtumor.federation.registry import load_registry, parse_strategy_config
from fedtumor.federation.replies import array_record_bytes
from fedtumor.federation.wire import SITE_RECORD_KEY

ROBUST = {"fedmedian", "fedtrimmedavg", "krum"}
BASELINE = "flower-fedavg"
TIME_TARGET = {False: 1.0, True: 3.0}  # x Flower's FedAvg, for FedAvg-class and robust strategies


class FixedGrid:
    """The part of Flower's Grid a strategy's configure_train uses."""

    def __init__(self, node_ids: list[int]):
        self.node_ids = node_ids

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)


def site_replies(global_arrays: dict[str, np.ndarray], node_ids: list[int], extra_prefixes: tuple[str, ...]):
    """One reply per site: the global model plus a small site-specific update."""
    rng = np.random.default_rng(0)
    replies = []
    for index, node_id in enumerate(node_ids):
        arrays = {}
        for key, value in global_arrays.items():
            update = rng.standard_normal(value.shape, dtype=np.float32) * 1e-3
            arrays[key] = value + update
            for prefix in extra_prefixes:
                arrays[prefix + key] = update
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                "metrics": MetricRecord(
                    {"num-examples": 5 + index % 20, "loss": 0.5 + 0.01 * index, "loss-before": 0.6 + 0.01 * index}
                ),
                SITE_RECORD_KEY: ConfigRecord({"site-id": f"site-{index + 1}"}),
            }
        )
        replies.append(site_reply(node_id, content))
    return replies


def time_aggregation(make_strategy, global_record: ArrayRecord, make_replies, grid: FixedGrid, repeats: int):
    """(median wall seconds, median CPU seconds of this process, peak MiB allocated during aggregate_train).

    CPU seconds are steadier than wall seconds on a shared machine (BLAS threads add to them).

    Replies are made anew for every call: Flower's FedMedian and FedTrimmedAvg empty the
    replies' arrays in place while aggregating.
    """
    seconds, cpu_seconds, peaks = [], [], []
    for _ in range(repeats):
        replies = make_replies()
        strategy = make_strategy()
        list(strategy.configure_train(1, global_record, ConfigRecord(), grid))
        gc.collect()
        tracemalloc.start()
        start, cpu_start = time.perf_counter(), time.process_time()
        arrays, _ = strategy.aggregate_train(1, replies)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
        peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
        if arrays is None:
            raise RuntimeError("aggregation returned no model")
        del arrays, strategy, replies
    return statistics.median(seconds), statistics.median(cpu_seconds), max(peaks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=71, help="replies per round (FeTS: 71 sites)")
    parser.add_argument("--model", default="fets-resunet", help="network whose size the arrays take")
    parser.add_argument("--base-filters", type=int, default=32, help="base filters of that network")
    parser.add_argument("--repeats", type=int, default=3, help="timings per strategy (median reported)")
    parser.add_argument("--only", nargs="*", default=None, help="strategy names (default: all installed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    console = Console()
    # Outside a ServerApp process Flower's Message needs to be told whose messages these are.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0

    model = build_model(args.model, args.base_filters)
    global_arrays = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    num_params = sum(v.size for v in global_arrays.values())
    global_record = ArrayRecord({k: Array(v) for k, v in global_arrays.items()})
    node_ids = list(range(1, args.clients + 1))
    grid = FixedGrid(node_ids)
    registry = load_registry()
    names = args.only or sorted(registry.plugins)
    sampling = StrategyOptions(min_available_nodes=1)

    results = {}
    same_reply_baselines: dict[tuple[str, ...], tuple[float, float, float]] = {}
    reply_prefixes: dict[str, tuple[str, ...]] = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("aggregating", total=len(names) + 1)
        results[BASELINE] = time_aggregation(
            lambda: FlowerFedAvg(**sampling.flower_kwargs()),
            global_record,
            lambda: site_replies(global_arrays, node_ids, ()),
            grid,
            args.repeats,
        )
        progress.advance(task)
        for name in names:
            plugin = registry.plugins[name]
            params = parse_strategy_config(plugin, "")

            def make(plugin=plugin, params=params):
                return plugin().build(params, sampling)

            prefixes = make().extra_reply_prefixes
            results[name] = time_aggregation(
                make, global_record, lambda p=prefixes: site_replies(global_arrays, node_ids, p), grid, args.repeats
            )
            if prefixes and prefixes not in same_reply_baselines:  # Flower's FedAvg over these bigger replies too
                same_reply_baselines[prefixes] = time_aggregation(
                    lambda: FlowerFedAvg(**sampling.flower_kwargs()),
                    global_record,
                    lambda p=prefixes: site_replies(global_arrays, node_ids, p),
                    grid,
                    args.repeats,
                )
            reply_prefixes[name] = prefixes
            progress.advance(task)

    # One round of replies, the model arrays every site sends (as strategies without extra arrays get them).
    replies_mib = args.clients * array_record_bytes(global_record) / 2**20
    base_seconds, base_cpu_seconds = results[BASELINE][:2]
    rows = [
        {
            "strategy": n,
            "seconds": s,
            "ratio_to_fedavg": s / base_seconds,
            # Against Flower's FedAvg over the same replies: more than the model for strategies with extra arrays.
            "ratio_to_fedavg_same_replies": s / same_reply_baselines.get(reply_prefixes.get(n, ()), (base_seconds,))[0],
            "cpu_seconds": c,
            "cpu_ratio_to_fedavg": c / base_cpu_seconds,
            "peak_mib": m,
            "replies_mib": replies_mib,
            "peak_to_replies": m / replies_mib,
            "robust": n in ROBUST,
        }
        for n, (s, c, m) in results.items()
    ]
    for robust in (False, True):
        if not any(row["robust"] == robust for row in rows):
            continue
        table = Table(
            title=("robust strategies" if robust else "strategies")
            + f": {args.clients} clients x {num_params / 1e6:.1f} M parameters ({args.model}, {args.base_filters}),"
            + f" replies {replies_mib:,.0f} MiB a round"
        )
        for column in (
            "strategy", "median s", "x Flower FedAvg", "x same replies", "CPU x Flower", "peak MiB", "peak / replies"
        ):  # fmt: skip
            table.add_column(column, justify="left" if column == "strategy" else "right")
        for row in rows:
            if row["robust"] == robust:
                table.add_row(
                    row["strategy"],
                    f"{row['seconds']:.3f}",
                    f"{row['ratio_to_fedavg']:.2f}",
                    f"{row['ratio_to_fedavg_same_replies']:.2f}",
                    f"{row['cpu_ratio_to_fedavg']:.2f}",
                    f"{row['peak_mib']:,.0f}",
                    f"{row['peak_to_replies']:.2f}",
                )
        console.print(table)
    for robust in (False, True):
        slow = [r["strategy"] for r in rows if r["robust"] == robust and r["ratio_to_fedavg"] > TIME_TARGET[robust]]
        kind = "robust" if robust else "FedAvg-class"
        console.print(f"{kind} over {TIME_TARGET[robust]:g}x Flower's FedAvg: " + (", ".join(slow) or "none"))
    heavy = [r["strategy"] for r in rows if r["robust"] and r["peak_to_replies"] > 1.0]
    console.print("robust with extra memory over one round of replies: " + (", ".join(heavy) or "none"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "clients": args.clients,
            "parameters": num_params,
            "model": args.model,
            "replies_mib": replies_mib,
            "rows": rows,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
