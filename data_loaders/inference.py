"""Segment a new subject with a trained global model and write it in the subject's own space."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torchio as tio

from data_loaders.layouts import MODALITIES, find_subject
from data_loaders.pipelines import PreprocessingSettings, model_input, preprocessing_transform, raw_subject
from fedtumor.core.errors import DataError
from fedtumor.core.training import predict_labels, resolve_device
from fedtumor.run.checkpoint import load_checkpoint

PREDICTION_KEY = "prediction"


def predict_subject_file(model_path: Path, subject_dir: Path, out_path: Path, device: str = "auto") -> Path:
    """Write BraTS 2021 labels (0, 1, 2, 4) on the grid and affine of the subject's T1 image.

    The network sees the preprocessed volume (canonical, resampled, brain-cropped); the
    prediction is resampled back to the original T1 grid by nearest neighbour.
    """
    if not out_path.name.endswith((".nii.gz", ".nii")):
        raise DataError("output must end in .nii.gz or .nii", path=out_path)
    model, meta = load_checkpoint(model_path)
    files = find_subject(subject_dir)
    settings = PreprocessingSettings(spacing_mm=meta["spacing_mm"], min_shape=meta["patch_size"])
    subject = raw_subject(files, require_label=False)
    processed = preprocessing_transform(settings, files.layout)(subject)
    labels = predict_labels(model, model_input(processed), meta["patch_size"], resolve_device(device))

    reference = files.images[MODALITIES[0]]
    prediction = tio.LabelMap(
        tensor=torch.from_numpy(labels[None].astype(np.int16)), affine=processed[MODALITIES[0]].affine
    )
    in_subject_space = tio.Resample(str(reference))(tio.Subject({PREDICTION_KEY: prediction}))[PREDICTION_KEY]
    target = nib.load(str(reference))
    data = in_subject_space.data[0].numpy().astype(np.uint8)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, target.affine), str(out_path))
    return out_path
