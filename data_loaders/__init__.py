"""Data: BraTS/FeTS layouts, partition CSVs, validation, TorchIO pipelines, synthetic cohort."""
