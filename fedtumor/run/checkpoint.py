"""Model checkpoints that carry what is needed to rebuild and apply the network."""

from __future__ import annotations

from pathlib import Path

import torch

from fedtumor.core.config import RunConfig
from fedtumor.core.errors import DataError
from fedtumor.core.model import build_model
from fedtumor.run.files import FINAL_MODEL_FILE


def save_checkpoint(
    path: Path, state_dict: dict[str, torch.Tensor], config: RunConfig, server_round: int | None = None
) -> Path:
    """Written under a temporary name, then renamed; ``round`` lets the audit log check the file."""
    payload = {
        "round": server_round,
        "model": config.model,
        "base_filters": config.base_filters,
        "patch_size": config.patch_size,
        "spacing_mm": config.spacing_mm,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: Path) -> tuple[torch.nn.Module, dict]:
    """(model with weights, metadata); ``path`` may be a run folder (its final model)."""
    if path.is_dir():
        path = path / FINAL_MODEL_FILE
    if not path.is_file():
        raise DataError("model checkpoint not found", path=path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(payload["model"], payload["base_filters"])
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:
        raise DataError(f"not a fedtumor checkpoint ({type(exc).__name__}: {exc})", path=path) from exc
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta
