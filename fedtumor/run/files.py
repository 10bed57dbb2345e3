"""Every file a run folder holds, named once: import the constant, never spell the name.

``<output-dir>/<run-name>/`` is written by the ServerApp (a federation) or by the baselines
(``fedtumor centralized`` / ``fedtumor local``); readers (report, audit verify, plots,
benchmarks) find the same files through these names.
"""

from __future__ import annotations

CONFIG_FILE = "config.json"  # resolved run config, library versions, git revision
METRICS_FILE = "metrics.csv"  # long format: round, scope, split, metric, value
SUMMARY_FILE = "summary.json"  # final and best scores, sites, failures
AUDIT_FILE = "audit.jsonl"  # hash-chained log of every round
MANIFESTS_FILE = "data_manifests.json"  # each site's data-manifest hash
RESUME_FILE = "resume_state.pt"  # what a resumed run continues from
FINAL_MODEL_FILE = "final_model.pt"
BEST_MODEL_FILE = "best_model.pt"
OVERLAY_FILE = "overlay_case.npz"  # one held-out image, its reference and the prediction
TRACKING_DB_FILE = "mlflow.db"  # tracking="mlflow" without tracking-uri: the MLflow store
TRACKING_RUN_FILE = "mlflow_run.json"  # the MLflow run id, so a resumed run logs into the same run
CROSS_SITE_FILE = "cross_site.csv"  # mean Dice of each model (rows) on each site's validation subjects
CROSS_SITE_SCORES_FILE = "cross_site_scores.csv"  # long format: model, site, metric, value
HELDOUT_SUBJECTS_FILE = "heldout_subjects.json"  # the last scored round's held-out scores, subject by subject

DICE_PER_ROUND_PNG = "dice_per_round.png"
HD95_PER_ROUND_PNG = "hd95_per_round.png"
SITE_DICE_PNG = "site_dice.png"
OVERLAY_PNG = "prediction_overlay.png"
CROSS_SITE_PNG = "cross_site.png"  # heatmap of cross_site.csv

MODEL_FILES = (FINAL_MODEL_FILE, BEST_MODEL_FILE)
# Finding any of these means the folder already holds a run (its name is taken).
RUN_MARKER_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, AUDIT_FILE)
