"""MONAI network factory: one sigmoid output channel per BraTS region (ET, TC, WT)."""

from __future__ import annotations

import torch
from monai.networks.nets import DynUNet, SegResNet, UNet

IN_CHANNELS = 4  # t1, t1ce, t2, flair
OUT_CHANNELS = 3  # ET, TC, WT
# Learnable scale and shift: what FedBN keeps local (MONAI's plain "instance" has none).
INSTANCE_NORM = ("instance", {"affine": True})


def build_model(name: str = "unet", base_filters: int = 8) -> torch.nn.Module:
    """Build a 3D segmentation network by name.

    - ``unet``: small residual 3D U-Net with instance norm, the CPU demo default;
    - ``fets-resunet``: the FeTS 2021 reference size (3D residual U-Net, 32 base filters,
      instance norm; call with ``base_filters=32``);
    - ``segresnet``: MONAI's SegResNet (Myronenko 2018), instance norm;
    - ``dynunet``: MONAI's nnU-Net-style DynUNet, instance norm.

    Instance norm with affine parameters everywhere: batch norm with batch 1 is unstable, and
    norm layers are what FedBN keeps local.
    """
    if base_filters < 1:
        raise ValueError(f"base_filters must be >= 1, got {base_filters}")
    filters = [base_filters * 2**level for level in range(5)]
    if name == "unet":
        return UNet(
            spatial_dims=3,
            in_channels=IN_CHANNELS,
            out_channels=OUT_CHANNELS,
            channels=tuple(filters[:4]),
            strides=(2, 2, 2),
            num_res_units=1,
            norm=INSTANCE_NORM,
        )
    if name == "fets-resunet":
        return UNet(
            spatial_dims=3,
            in_channels=IN_CHANNELS,
            out_channels=OUT_CHANNELS,
            channels=tuple(filters),
            strides=(2, 2, 2, 2),
            num_res_units=2,
            norm=INSTANCE_NORM,
        )
    if name == "segresnet":
        return SegResNet(
            spatial_dims=3,
            init_filters=base_filters,
            in_channels=IN_CHANNELS,
            out_channels=OUT_CHANNELS,
            norm=INSTANCE_NORM,
        )
    if name == "dynunet":
        return DynUNet(
            spatial_dims=3,
            in_channels=IN_CHANNELS,
            out_channels=OUT_CHANNELS,
            kernel_size=[3, 3, 3, 3],
            strides=[1, 2, 2, 2],
            upsample_kernel_size=[2, 2, 2],
            filters=filters[:4],
            norm_name=INSTANCE_NORM,
        )
    raise ValueError(f"unknown model {name!r}; choose unet, fets-resunet, segresnet or dynunet")


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
