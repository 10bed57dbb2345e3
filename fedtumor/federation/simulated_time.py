"""Simulated wall-clock time of a federation and the FeTS Task 1 convergence score (no Flower here).

FeTS Challenge Task 1 ranked methods by how fast they converge on *simulated* time, so a
method that trains fewer sites per round, or fewer epochs, gets credit for finishing rounds
sooner. fedtumor follows it:

**Profiles.** Every site has a :class:`SiteProfile`: seconds per training sample (compute)
and download/upload bandwidth in Mbit/s (network). They come either from a CSV file
(run-config key ``site-profiles``; columns ``site_id,seconds_per_sample,download_mbps,upload_mbps``)
or, when that key is empty, from :func:`seeded_profile`, a draw keyed by the site id alone, so
a site keeps its profile whatever Flower node id it gets and whatever the run's seed:

- ``seconds_per_sample`` log-uniform in [1.8, 7.5] s: the range of the mean per-patient training
  times measured at FeTS institutions (``TRAINING_TIMES`` in the FeTS Challenge's
  ``Task_1/fets_challenge/experiment.py``; one outlier at 20.7 s left out), applied here per patch;
- ``download_mbps`` log-uniform in [10, 200] Mbit/s, ``upload_mbps`` = download x uniform[0.25, 1]
  (hospital uplinks are rarely faster than their downlinks).

**A site's round.** ``download + compute + upload`` (:meth:`SiteProfile.round_seconds`):
``model_bytes * 8 / (download_mbps * 1e6)`` + ``num_samples * seconds_per_sample`` +
``reply_bytes * 8 / (upload_mbps * 1e6)``, where ``num_samples`` is the reply's ``num-patches``
(patches processed over all local epochs) and the byte counts are the sums of the array
sizes sent and returned. 1 Mbit = 10^6 bits. Server-side aggregation and evaluation take no
simulated time, and neither does federated validation (FeTS also counted validation compute;
fedtumor's sites validate in a separate phase that a strategy does not shape).

**A round.** As long as its slowest selected site (:func:`round_duration`), counting the sites
whose training reply reached aggregation; a site that failed adds nothing (its time is unknown).

This is fedtumor's own time model (run-config ``time-model = "fedtumor"``, the default). The
FeTS Challenge's own, with its measured profiles, validation time and per-round noise, is
``time-model = "fets"`` (``fedtumor/federation/fets_profiles.py``, docs/fets.md).

**Convergence score** (:func:`convergence_score`): the area under the curve of the best
held-out mean Dice reached so far versus cumulative simulated time, divided by the budget
(one simulated week, 604800 s, by default), so it lies in [0, 1] for Dice in [0, 1]. The curve
is a step function: the model evaluated at time ``t_i`` (round 0, the initial model, at 0 s;
round r at the end of round r) holds its value until the next *improvement*; after the last
round it is held flat to the end of the budget (a run that stops early is scored as if its
best model were kept for the rest of the week, like FeTS's "projected" score), and a run
that goes past the budget is cut there: evaluations after the budget count for nothing.
FeTS credits a model from the same moment (the end of the round that made it: the next round's
duration gets the best Dice including it), but only once its collaborators have validated it,
which they do in the next round: the model aggregated in the last round is never scored.
:func:`fets_convergence_score` (used under ``time-model = "fets"``) does the same; this score
also credits the final model, held flat to the budget.
"""

from __future__ import annotations

import csv
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedtumor.core.errors import DataError

ONE_WEEK_S = 7 * 24 * 3600.0  # 604800 s, the FeTS Task 1 budget
PROFILE_COLUMNS = ("site_id", "seconds_per_sample", "download_mbps", "upload_mbps")

# The seeded distribution (see the module docstring).
SECONDS_PER_SAMPLE_RANGE = (1.8, 7.5)
DOWNLOAD_MBPS_RANGE = (10.0, 200.0)
UPLOAD_SHARE_RANGE = (0.25, 1.0)
_PROFILE_SALT = "fedtumor-site-profile"


@dataclass(frozen=True)
class SiteProfile:
    """A site's simulated hardware: compute speed and network bandwidth."""

    seconds_per_sample: float
    download_mbps: float
    upload_mbps: float

    def __post_init__(self) -> None:
        for name in ("seconds_per_sample", "download_mbps", "upload_mbps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")

    def download_seconds(self, num_bytes: float) -> float:
        return num_bytes * 8 / (self.download_mbps * 1e6)

    def upload_seconds(self, num_bytes: float) -> float:
        return num_bytes * 8 / (self.upload_mbps * 1e6)

    def compute_seconds(self, num_samples: float) -> float:
        return num_samples * self.seconds_per_sample

    def round_seconds(self, download_bytes: float, num_samples: float, upload_bytes: float) -> float:
        """Download the model, train on ``num_samples`` samples, upload the reply."""
        return (
            self.download_seconds(download_bytes)
            + self.compute_seconds(num_samples)
            + self.upload_seconds(upload_bytes)
        )


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def seeded_profile(site_id: str) -> SiteProfile:
    """The profile of ``site_id`` drawn from the default distribution; the same for the same id."""
    rng = np.random.default_rng(zlib.crc32(f"{_PROFILE_SALT}/{site_id}".encode()))
    seconds_per_sample = _log_uniform(rng, *SECONDS_PER_SAMPLE_RANGE)
    download = _log_uniform(rng, *DOWNLOAD_MBPS_RANGE)
    upload = download * float(rng.uniform(*UPLOAD_SHARE_RANGE))
    return SiteProfile(seconds_per_sample, download, upload)


def load_profiles_csv(path: Path | str) -> dict[str, SiteProfile]:
    """Profiles from ``site_id,seconds_per_sample,download_mbps,upload_mbps``; DataError naming file and row."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise DataError("site-profiles file does not exist", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read site-profiles file ({type(exc).__name__})", path=path) from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"site-profiles file is empty; expected header {','.join(PROFILE_COLUMNS)}", path=path)
    header = [cell.strip() for cell in rows[0]]
    if header != list(PROFILE_COLUMNS):
        raise DataError(f"header is {','.join(header)}, expected {','.join(PROFILE_COLUMNS)}", path=path)
    profiles: dict[str, SiteProfile] = {}
    for number, row in enumerate(rows[1:], start=2):
        where = f"row {number}"
        if len(row) != len(PROFILE_COLUMNS):
            raise DataError(f"{where} has {len(row)} fields, expected {len(PROFILE_COLUMNS)}", path=path)
        site_id = row[0].strip()
        if not site_id:
            raise DataError(f"{where} has an empty site_id", path=path)
        if site_id in profiles:
            raise DataError(f"{where}: site {site_id} appears twice", path=path)
        values = []
        for column, cell in zip(PROFILE_COLUMNS[1:], row[1:]):
            try:
                value = float(cell)
            except ValueError:
                raise DataError(f"{where}: {column} {cell.strip()!r} is not a number", path=path) from None
            if not (math.isfinite(value) and value > 0):
                raise DataError(f"{where}: {column} must be a positive number, got {cell.strip()}", path=path)
            values.append(value)
        profiles[site_id] = SiteProfile(*values)
    if not profiles:
        raise DataError("site-profiles file has a header but no sites", path=path)
    return profiles


class SiteProfiles:
    """Profile lookup by site id: from a CSV table when given, else seeded per site id."""

    def __init__(self, table: Mapping[str, SiteProfile] | None = None, source: Path | str | None = None):
        self.table = dict(table) if table is not None else None
        self.source = Path(source) if source is not None else None

    @classmethod
    def from_setting(cls, site_profiles: str) -> SiteProfiles:
        """The run-config value of ``site-profiles``: a CSV path, or "" for seeded profiles."""
        if not site_profiles:
            return cls()
        path = Path(site_profiles).expanduser()
        return cls(load_profiles_csv(path), source=path)

    def __getitem__(self, site_id: str) -> SiteProfile:
        if self.table is None:
            return seeded_profile(site_id)
        if site_id not in self.table:
            raise DataError(f"site {site_id} has no row in the site-profiles file", path=self.source)
        return self.table[site_id]


def round_duration(site_seconds: Iterable[float]) -> float:
    """A round lasts as long as its slowest site; 0 when no site contributed."""
    return max(site_seconds, default=0.0)


def cumulative_times(round_seconds: Sequence[float]) -> list[float]:
    """Simulated time at the end of each round, starting with 0 for round 0."""
    times = [0.0]
    for seconds in round_seconds:
        times.append(times[-1] + float(seconds))
    return times


def best_so_far(values: Sequence[float]) -> list[float]:
    """Running maximum; a non-finite value is no improvement (the curve starts at 0)."""
    best, seen, out = 0.0, False, []
    for value in values:
        value = float(value)
        if math.isfinite(value) and (not seen or value > best):
            best, seen = value, True
        out.append(best)
    return out


def convergence_score(times_s: Sequence[float], best_dice: Sequence[float], budget_s: float = ONE_WEEK_S) -> float:
    """Area under best-Dice-so-far versus simulated time, cut or held flat at ``budget_s``, over ``budget_s``.

    ``times_s[i]`` is when the model scored ``best_dice[i]`` became available (non-decreasing;
    round 0 at 0). The running maximum is taken here, so raw per-round Dice and its running
    best give the same score.
    """
    if len(times_s) != len(best_dice):
        raise ValueError(f"times_s and best_dice differ in length ({len(times_s)} vs {len(best_dice)})")
    if not (math.isfinite(budget_s) and budget_s > 0):
        raise ValueError(f"budget_s must be positive, got {budget_s!r}")
    if not times_s:
        return 0.0
    times = [float(t) for t in times_s]
    if any(not math.isfinite(t) or t < 0 for t in times) or any(b < a for a, b in zip(times, times[1:])):
        raise ValueError("times_s must be finite, non-negative and non-decreasing")
    best = best_so_far(best_dice)
    area = 0.0
    ends = [*times[1:], budget_s]
    for start, end, value in zip(times, ends, best):
        area += value * (min(end, budget_s) - min(start, budget_s))
    return area / budget_s


def fets_convergence_score(times_s: Sequence[float], dice: Sequence[float], budget_s: float = ONE_WEEK_S) -> float:
    """The score as FeTS computed it: only validated models count, so the last (final) model does not.

    ``times_s`` and ``dice`` are those of :func:`convergence_score`, the last entry the final
    aggregated model; its round still took its time, the score holds the best earlier model flat.
    """
    if len(times_s) != len(dice):
        raise ValueError(f"times_s and dice differ in length ({len(times_s)} vs {len(dice)})")
    return convergence_score(list(times_s)[:-1], list(dice)[:-1], budget_s)
