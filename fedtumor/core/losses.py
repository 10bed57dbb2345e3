"""Region-wise sigmoid losses from MONAI (the BraTS winners' convention, not softmax)."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss, DiceLoss


def build_loss(name: str = "dicece") -> torch.nn.Module:
    """``dice``: soft Dice per region; ``dicece``: Dice + binary cross-entropy per region."""
    if name == "dice":
        return DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)
    if name == "dicece":
        return DiceCELoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)
    raise ValueError(f"unknown loss {name!r}; choose dice or dicece")
