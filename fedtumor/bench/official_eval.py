"""Run the official BraTS evaluation (``brats-evaluation`` + ``panoptica``) and compare it with fedtumor.

panoptica 2.1.7 pins rich<14, numpy<2.3 and pandas<3 while Flower 1.41 needs rich>=14, so
the official package cannot live in the project's environment. :func:`reference_python`
builds it a virtual environment of its own from the exact pins in
``constraints-brats-eval.txt`` (repository root), under
``~/.cache/fedtumor/brats-eval-<hash of that file>``, and reuses it while the file is
unchanged. :func:`run_official` runs the package's own code path in a subprocess there:
``brats_evaluation.evaluation.evaluate_single_exam`` with the bundled ``config_gli.yaml``,
then ``brats_evaluation.metrics_parser.parse_seg_results`` for the challenge columns
(``global_dsc_et``, ``lesionwise_dsc_mean_et``, ``all_instance_tp_et``, ...).

:func:`compare_case` lines up fedtumor's scores with the official ones. panoptica reports
lesion-wise means over matched lesions only (``lesionwise_*_mean`` = mean over true
positives); the BraTS 2023 lesion-wise score is rebuilt from them with the 2023 formula,
``(tp x mean + penalty x (fn + fp)) / (tp + fn + fp)``, so the two can be compared.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fedtumor.core.errors import DataError

CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints-brats-eval.txt"
CACHE_ROOT = Path(os.environ.get("FEDTUMOR_CACHE", Path.home() / ".cache" / "fedtumor"))
_COMPLETE_MARKER = ".fedtumor-complete"
OFFICIAL_REGIONS = {"ET": "et", "TC": "tc", "WT": "wt"}
LESION_HD95_PENALTY = 374.0

# Runs inside the reference venv; argv: pairs.json, out.json, out.csv.
_DRIVER = """
import json, sys, warnings
from importlib.resources import files
warnings.filterwarnings("ignore")
from panoptica import Panoptica_Evaluator
from brats_evaluation.evaluation import evaluate_single_exam
from brats_evaluation.metrics_parser import parse_seg_results
config = str(files("brats_evaluation").joinpath("configs", "config_gli.yaml"))
evaluator = Panoptica_Evaluator.load_from_config(config)
pairs = json.load(open(sys.argv[1]))
results = {"metrics": [], "missings": []}
for pair in pairs:
    results["metrics"].append(
        evaluate_single_exam(pair["prediction"], pair["reference"], pair["subject"], evaluator)
    )
json.dump(results, open(sys.argv[2], "w"), default=float)
parse_seg_results(sys.argv[2], sys.argv[3])
"""


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def reference_python(constraints: Path = CONSTRAINTS, cache_root: Path = CACHE_ROOT) -> Path:
    """The Python of the reference venv, created from ``constraints`` on first use (pip, ~40 s).

    Example:
        >>> python = reference_python()  # doctest: +SKIP
        >>> python.name  # doctest: +SKIP
        'python'
    """
    constraints = Path(constraints)
    if not constraints.is_file():
        raise DataError("constraints file for the official evaluation not found", path=constraints)
    digest = hashlib.sha256(constraints.read_bytes()).hexdigest()[:12]
    venv = Path(cache_root) / f"brats-eval-{digest}"
    python = venv / "bin" / "python"
    if (venv / _COMPLETE_MARKER).is_file() and python.exists():
        return python
    shutil.rmtree(venv, ignore_errors=True)  # a half-built venv from an interrupted run
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(constraints)],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise DataError(
                f"building the official-evaluation venv failed: {_one_line(done.stderr or done.stdout)}",
                path=venv,
            )
    (venv / _COMPLETE_MARKER).write_text(constraints.read_text())
    return python


@dataclass(frozen=True)
class CasePair:
    """One prediction/reference pair; ``subject`` must hold a BraTS id such as ``00001-000``."""

    subject: str
    prediction: Path
    reference: Path


def run_official(pairs: list[CasePair], python: Path | None = None) -> dict[str, dict[str, float]]:
    """Official challenge columns per subject, e.g. ``{"case": {"global_dsc_et": 0.94, ...}}``.

    A subject the package could not evaluate maps to ``{"error": <its message>}``.

    Example:
        >>> pair = CasePair("BraTS-GLI-00001-000", Path("pred.nii.gz"), Path("seg.nii.gz"))
        >>> run_official([pair])["BraTS-GLI-00001-000"]["global_dsc_wt"]  # doctest: +SKIP
    """
    if not pairs:
        raise ValueError("no case pairs to evaluate")
    python = python or reference_python()
    with tempfile.TemporaryDirectory(prefix="brats-eval-") as tmp:
        folder = Path(tmp)
        (folder / "pairs.json").write_text(
            json.dumps(
                [{"subject": p.subject, "prediction": str(p.prediction), "reference": str(p.reference)} for p in pairs]
            )
        )
        done = subprocess.run(
            [str(python), "-c", _DRIVER, str(folder / "pairs.json"), str(folder / "out.json"), str(folder / "out.csv")],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not (folder / "out.csv").is_file():
            raise DataError(f"the official evaluation failed: {_one_line(done.stderr or done.stdout)}")
        raw = json.loads((folder / "out.json").read_text())
        with (folder / "out.csv").open(newline="") as handle:
            rows = {row["subject_id"]: row for row in csv.DictReader(handle)}
    results: dict[str, dict[str, float]] = {}
    for entry in raw["metrics"]:
        subject = entry["subject_name"]
        if "error" in entry:
            results[subject] = {"error": entry["error"]}
            continue
        results[subject] = {key: _to_float(value) for key, value in rows[subject].items() if key != "subject_id"}
    return results


def _to_float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.nan


def official_lesion_scores(official: dict[str, float], region: str) -> dict[str, float]:
    """BraTS 2023 lesion-wise Dice/HD95 rebuilt from panoptica's true-positive means and counts."""
    key = OFFICIAL_REGIONS[region]
    tp, fn, fp = (official[f"all_instance_{c}_{key}"] for c in ("tp", "fn", "fp"))
    count = tp + fn + fp
    if count == 0:
        return {"lesion_dice": 1.0, "lesion_hd95": 0.0}
    dice_sum = tp * official[f"lesionwise_dsc_mean_{key}"] if tp else 0.0
    hd95_sum = tp * official[f"lesionwise_hd95_mean_{key}"] if tp else 0.0
    return {
        "lesion_dice": dice_sum / count,
        "lesion_hd95": (hd95_sum + LESION_HD95_PENALTY * (fn + fp)) / count,
    }


# fedtumor name -> (official column stem, how to read it); nsd_0.5mm: see compare_case.
COMPARED = (
    ("dice", "global_dsc"),
    ("hd95", "global_hd95"),
    ("nsd_0.5mm", "global_nsd"),
    ("lesion_tp", "all_instance_tp"),
    ("lesion_fn", "all_instance_fn"),
    ("lesion_fp", "all_instance_fp"),
    ("lesion_dice", None),
    ("lesion_hd95", None),
)


def compare_case(pair: CasePair, official: dict[str, float]) -> list[dict]:
    """Rows ``{"case", "region", "metric", "fedtumor", "official"}`` for one evaluated pair.

    ``nsd_0.5mm`` is fedtumor's NSD at a 0.5 mm tolerance: the official ``global_nsd`` is
    computed without the voxel spacing, so panoptica falls back to its 0.5 tolerance there
    (docs/metrics.md). Legacy HD95 is the official 373 when exactly one mask is empty.
    """
    from fedtumor.core.brats_scores import all_region_scores
    from fedtumor.core.metrics import load_region_pair
    from fedtumor.core.regions import REGIONS
    from fedtumor.core.surface_dice import normalized_surface_dice

    pred_regions, ref_regions, spacing = load_region_pair(pair.prediction, pair.reference)
    ours = all_region_scores(pred_regions, ref_regions, spacing)
    rows = []
    for index, region in enumerate(REGIONS):
        ours[region]["nsd_0.5mm"] = normalized_surface_dice(pred_regions[index], ref_regions[index], spacing, 0.5)
        rebuilt = official_lesion_scores(official, region)
        for name, stem in COMPARED:
            value = rebuilt[name] if stem is None else official.get(f"{stem}_{OFFICIAL_REGIONS[region]}", math.nan)
            rows.append(
                {
                    "case": pair.subject,
                    "region": region,
                    "metric": name,
                    "fedtumor": ours[region][name],
                    "official": value,
                }
            )
    return rows


def agrees(row: dict, atol: float = 1e-6) -> bool:
    """Whether a comparison row agrees (NaN never agrees; 373 and 373.1287 count as one penalty)."""
    ours, theirs = row["fedtumor"], row["official"]
    if row["metric"] == "hd95" and theirs == 373 and abs(ours - 373.1287) < 1e-6:
        return True
    return math.isclose(ours, theirs, rel_tol=0, abs_tol=atol)
