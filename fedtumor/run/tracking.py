"""Experiment tracking: every metric a run writes to metrics.csv, mirrored into MLflow.

Off by default (run-config ``tracking = ""``): :class:`NoTracker` does nothing and MLflow is
never imported, so the seeded demo neither needs nor touches it. With ``tracking = "mlflow"``
:class:`MlflowTracker` logs into

- a SQLite store inside the run folder (``<run_dir>/mlflow.db``) when ``tracking-uri`` is
  empty (MLflow 3 refuses its old ``./mlruns`` file store unless told otherwise), or
- the store or tracking server ``tracking-uri`` names (``http://host:5000``, ``sqlite:///...``).

One MLflow run per fedtumor run, named after the run folder, in the experiment ``fedtumor``.
Params are the run config (logged once, with config.json); each metrics.csv row becomes one
MLflow metric point with ``step = round`` and a key that encodes where it comes from:
``<split>/<metric>`` for the global scope (``test/dice_wt``: the held-out score) and
``<split>/<site>/<metric>`` for a site (``val/site-1/dice_wt``). Writing summary.json ends the
MLflow run, ``FAILED`` when the summary says the run failed, else ``FINISHED``.

Resume continues the same MLflow run: its id is kept in ``<run_dir>/mlflow_run.json``. When
that file is missing or names another store, the resumed rounds go into a new MLflow run
(its params read from config.json) and a warning says so. The rounds run again after a
resume log again at the same steps, so MLflow's history then holds both points; metrics.csv
holds the later one.

A store that cannot be opened is a one-line ConfigError before the run starts; a store that
fails later only warns (once) and stops tracking: metrics.csv stays the record of the run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError
from fedtumor.run.files import CONFIG_FILE, TRACKING_DB_FILE, TRACKING_RUN_FILE

log = logging.getLogger("flwr")  # Flower's logger: the ServerApp's messages and these end up in one log

EXPERIMENT_NAME = "fedtumor"
GLOBAL_SCOPE = "global"  # the writer's; not imported from it (the writer imports this module)
# MLflow's own limits (mlflow.utils.validation): a batch's metrics, a batch's params, a param value.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE_CHARS = 6000
_NOT_IN_A_NAME = re.compile(r"[^A-Za-z0-9_\-. ]")


class Tracker(Protocol):
    """What RunWriter calls: start once, then params, metric rows, and finish with the summary."""

    def start(self) -> None: ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, round: int, scope: str, split: str, metrics: Mapping[str, float]) -> None: ...  # noqa: A002

    def finish(self, failed: bool) -> None: ...


class NoTracker:
    """Tracking off: every call does nothing."""

    def start(self) -> None:
        pass

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, round: int, scope: str, split: str, metrics: Mapping[str, float]) -> None:  # noqa: A002
        pass

    def finish(self, failed: bool) -> None:
        pass


def metric_key(scope: str, split: str, name: str) -> str:
    """MLflow metric name of one metrics.csv row: ``test/dice_wt`` or ``val/site-1/dice_wt``."""
    parts = [split, name] if scope == GLOBAL_SCOPE else [split, scope, name]
    return "/".join(_name_part(part) for part in parts)


def _name_part(text: str) -> str:
    """MLflow names allow letters, digits, ``_ - .``, spaces and ``/`` (kept as our separator only)."""
    part = _NOT_IN_A_NAME.sub("_", str(text))
    return "_" if part in ("", ".", "..") else part


def default_tracking_uri(run_dir: Path | str) -> str:
    """The SQLite store inside the run folder, as an absolute ``sqlite:`` URI."""
    return "sqlite:///" + (Path(run_dir).resolve() / TRACKING_DB_FILE).as_posix()


def _import_mlflow():
    """MLflow, imported only when tracking is on; a ConfigError naming ``tracking`` if it is absent."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # a federation server does not phone home
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError("run-config key 'tracking': 'mlflow' needs MLflow: install fedtumor[tracking]") from None
    return MlflowClient


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


class MlflowTracker:
    """Logs one fedtumor run into one MLflow run; see the module docstring for names and resume.

    Construction only checks that MLflow is importable; :meth:`start` (called by RunWriter once
    the run folder is known to be free) opens the store and creates or reopens the MLflow run.
    """

    def __init__(
        self,
        run_dir: Path | str,
        tracking_uri: str = "",
        run_name: str | None = None,
        resume: bool = False,
        experiment: str = EXPERIMENT_NAME,
        tags: Mapping[str, str] | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.configured_uri = tracking_uri  # "" = the run folder's own store
        self.tracking_uri = tracking_uri or default_tracking_uri(self.run_dir)
        self.run_name = run_name or self.run_dir.name
        self.resume = resume
        self.experiment = experiment
        self.tags = dict(tags or {})
        self.run_id: str | None = None
        self.continued = False  # True when a resume logs into the MLflow run it had before
        self._client_class = _import_mlflow()
        self._client = None
        self._broken = False
        self._finished = False
        self._params_logged: dict[str, str] = {}

    @property
    def _key(self) -> str:
        return "tracking-uri" if self.configured_uri else "tracking"

    # ------------------------------------------------------------------------- start

    def start(self) -> None:
        """Open the store and the MLflow run; a one-line ConfigError if the store cannot be used."""
        if self._client is not None:
            return
        try:
            self._client = self._client_class(tracking_uri=self.tracking_uri)
            if self.resume and self._reopen_recorded_run():
                return
            self._create_run()
        except ConfigError:
            raise
        except Exception as exc:  # MLflow, SQLAlchemy, requests and OS errors: the store is unusable
            self._client = None
            raise ConfigError(
                f"run-config key '{self._key}': cannot log to MLflow at {self.tracking_uri} ({_one_line(exc)})"
            ) from None

    def _reopen_recorded_run(self) -> bool:
        """Continue the MLflow run recorded in the run folder; False (and a warning) when there is none."""
        record = read_tracking_record(self.run_dir)
        if record is None or record.get("tracking_uri") != self.configured_uri:
            where = "none recorded" if record is None else f"it was in {record.get('tracking_uri') or 'the run folder'}"
            log.warning("fedtumor: resumed run: no earlier MLflow run in this store (%s); starting a new one", where)
            return False
        run = self._client.get_run(record["run_id"])
        self.run_id = run.info.run_id
        self._params_logged = dict(run.data.params)
        self._client.update_run(self.run_id, status="RUNNING")
        self._client.set_tag(self.run_id, "fedtumor.resumed", "true")
        self.continued = True
        log.info("fedtumor: resumed run continues MLflow run %s at %s", self.run_id, self.tracking_uri)
        return True

    def _create_run(self) -> None:
        experiment = self._client.get_experiment_by_name(self.experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            # The run folder's own store keeps any artifacts in the folder too, not in the working directory.
            artifacts = None if self.configured_uri else (self.run_dir.resolve() / "mlartifacts").as_uri()
            experiment_id = self._client.create_experiment(self.experiment, artifact_location=artifacts)
        tags = {**self.tags, "fedtumor.run_dir": str(self.run_dir.resolve())}
        if self.resume:
            tags["fedtumor.resumed"] = "true (new MLflow run: the earlier one is not known here)"
        run = self._client.create_run(experiment_id, run_name=self.run_name, tags=tags)
        self.run_id = run.info.run_id
        self.run_dir.mkdir(parents=True, exist_ok=True)  # started before RunWriter creates it
        record = {"tracking_uri": self.configured_uri, "experiment_id": experiment_id, "run_id": self.run_id}
        (self.run_dir / TRACKING_RUN_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if self.resume:
            self.log_params(_config_of_the_run(self.run_dir))
        log.info("fedtumor: tracking in MLflow run %s at %s", self.run_id, self.tracking_uri)

    # ------------------------------------------------------------------------- logging

    def log_params(self, params: Mapping[str, Any]) -> None:
        """The run config as MLflow params; a key already logged keeps its first value (MLflow's rule)."""
        new = {}
        for key, value in params.items():
            name, text = _name_part(key), _param_text(value)
            if name not in self._params_logged:
                new[name] = text
            elif self._params_logged[name] != text:
                self._call("set_tag", self.run_id, f"resumed.{name}", text)
        if not new:
            return
        from mlflow.entities import Param

        items = [Param(key, text) for key, text in new.items()]
        for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
            self._call("log_batch", self.run_id, params=chunk)
        self._params_logged.update(new)

    def log_metrics(self, round: int, scope: str, split: str, metrics: Mapping[str, float]) -> None:  # noqa: A002
        """One metric point per value, at ``step = round``."""
        if not metrics:
            return
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        points = [
            Metric(metric_key(scope, split, name), float(value), now_ms, int(round)) for name, value in metrics.items()
        ]
        for chunk in _chunks(points, MAX_METRICS_PER_BATCH):
            self._call("log_batch", self.run_id, metrics=chunk)

    def finish(self, failed: bool) -> None:
        """End the MLflow run: ``FAILED`` or ``FINISHED``."""
        if self._finished:
            return
        self._call("set_terminated", self.run_id, "FAILED" if failed else "FINISHED")
        self._finished = True

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        """One client call; after the first failure, warn once and track no more (metrics.csv goes on)."""
        if self._broken:
            return
        if self._client is None or self.run_id is None:
            raise RuntimeError("MlflowTracker.start() must be called before logging")
        try:
            getattr(self._client, method)(*args, **kwargs)
        except Exception as exc:  # a tracking server going away must not stop a federation
            self._broken = True
            log.warning("fedtumor: MLflow tracking at %s stopped: %s", self.tracking_uri, _one_line(exc))


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_PARAM_VALUE_CHARS else text[: MAX_PARAM_VALUE_CHARS - 3] + "..."


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _config_of_the_run(run_dir: Path) -> dict[str, Any]:
    """config.json's run config, or nothing when it cannot be read (params are then missing, not wrong)."""
    try:
        return dict(json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def read_tracking_record(run_dir: Path | str) -> dict[str, Any] | None:
    """mlflow_run.json (store, experiment and MLflow run id), or None if the run has none."""
    path = Path(run_dir) / TRACKING_RUN_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("run_id"), str) else None


def open_tracker(config: RunConfig, run_dir: Path | str, resume: bool = False) -> Tracker:
    """The tracker ``tracking`` asks for (not yet started: RunWriter starts it)."""
    if not config.tracking:
        return NoTracker()
    return MlflowTracker(
        run_dir,
        tracking_uri=config.tracking_uri,
        run_name=Path(run_dir).name,
        resume=resume,
        tags={"fedtumor.strategy": config.strategy},
    )
