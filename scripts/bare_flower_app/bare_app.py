"""A minimal Flower app: Flower's FedAvg over MONAI's 3D U-Net, random patches, nothing else.

The baseline of ``scripts/bench_vs_flower.py``: what Flower itself costs around the same
training fedtumor does (the demo's U-Net, ``steps`` Adam steps of ``batch-size`` patches per
site per round, no evaluation). The ServerApp times its rounds as fedtumor's does (from one
round's ``evaluate_fn`` to the next) and writes them to ``rounds-file``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
from monai.networks.nets import UNet

client = ClientApp()
server = ServerApp()


def build_unet(base_filters: int) -> torch.nn.Module:
    """The demo's network: 4 input modalities, 3 BraTS regions, 4 levels, one residual unit each."""
    return UNet(
        spatial_dims=3,
        in_channels=4,
        out_channels=3,
        channels=tuple(base_filters * 2**level for level in range(4)),
        strides=(2, 2, 2),
        num_res_units=1,
        norm=("instance", {"affine": True}),
    )


@client.train()
def train(msg: Message, context: Context) -> Message:
    config = context.run_config
    torch.set_num_threads(int(config["torch-threads"]))
    started = time.perf_counter()
    model = build_unet(int(config["base-filters"]))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=float(config["learning-rate"]))
    size, batch = int(config["patch-size"]), int(config["batch-size"])
    generator = torch.Generator().manual_seed(int(context.node_config.get("partition-id", 0)))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(int(config["steps"])):
        images = torch.randn(batch, 4, size, size, size, generator=generator)
        targets = (torch.rand(batch, 3, size, size, size, generator=generator) > 0.9).float()
        optimizer.zero_grad()
        loss_fn(model(images), targets).backward()
        optimizer.step()
    metrics = {"num-examples": int(config["steps"]) * batch, "train_seconds": time.perf_counter() - started}
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    torch.manual_seed(0)
    model = build_unet(int(config["base-filters"]))
    rounds: dict[int, float] = {}
    last_close = [None]

    def round_clock(server_round: int, _arrays: ArrayRecord) -> None:
        now = time.perf_counter()
        if last_close[0] is not None:
            rounds[server_round] = now - last_close[0]
        last_close[0] = now

    training: dict[int, float] = {}  # per round, the sites' own train-seconds, summed

    def sum_training(records: list[RecordDict], weighting_key: str) -> MetricRecord:
        training[len(training) + 1] = sum(float(r["metrics"]["train_seconds"]) for r in records)
        return aggregate_metricrecords(records, weighting_key)

    strategy = FedAvg(
        fraction_evaluate=0.0, min_available_nodes=int(config["min-nodes"]), train_metrics_aggr_fn=sum_training
    )
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=int(config["num-server-rounds"]),
        evaluate_fn=round_clock,
    )
    if config["rounds-file"]:
        record = {"round_wall_s": rounds, "sites_train_s": training}
        Path(str(config["rounds-file"])).write_text(json.dumps(record) + "\n")
