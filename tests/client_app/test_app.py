"""The ClientApp's train path: the test-only fault switch as a gated mod, outside the handler, inside DP clipping;
bad site data as an error reply naming the site id and the file relative to data-dir."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

import fedtumor.federation.fault_mod as fault_mod
from client_app.app import app, inject_faults_when_set
from data_loaders.synthetic import generate_cohort
from fedtumor.core.config import RunConfig, read_run_config
from fedtumor.core.model import build_model
from fedtumor.federation import conformance
from fedtumor.federation.fault_mod import InjectedFault, fault_injection_mod
from fedtumor.federation.replies import SITE_ERROR_CODE, describe_reply
from fedtumor.federation.wire import (
    ARRAYS_KEY,
    CONFIG_KEY,
    LEARNING_RATE_KEY,
    LOCAL_EPOCHS_KEY,
    LOSS_AFTER_KEY,
    LOSS_BEFORE_KEY,
    LOSS_KEY,
    MANIFEST_KEY,
    METRICS_KEY,
    NUM_EXAMPLES_KEY,
    NUM_PATCHES_KEY,
    REPORT_LOSS_BEFORE_KEY,
    SERVER_ROUND_KEY,
    SITE_ID_KEY,
    SITE_RECORD_KEY,
    TRAIN_SECONDS_KEY,
)
from tests import REPO
from tests.nifti_factory import truncate, write_subject

RECEIVED = np.array([1.0, 2.0, 3.0], dtype=np.float32)
TRAINED = np.array([1.5, 2.0, 2.0], dtype=np.float32)
COUNTS = np.array([7, 8], dtype=np.int64)  # not a float array: no fault touches it


def instruction(content: RecordDict, node_id: int = 7) -> Message:
    """A train message as a ClientApp receives it from the server."""
    return conformance.site_instruction(node_id, content)


def train_instruction(server_round: int = 1) -> Message:
    arrays = ArrayRecord({"counts": Array(COUNTS), "w": Array(RECEIVED)})
    return instruction(RecordDict({ARRAYS_KEY: arrays, CONFIG_KEY: ConfigRecord({SERVER_ROUND_KEY: server_round})}))


def context(fault_injection: str = "", round_timeout_s: float = 60.0) -> Context:
    run_config = RunConfig(fault_injection=fault_injection, round_timeout_s=round_timeout_s).to_run_config()
    return Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config=run_config)


class Handler:
    """A train handler that replies as site-2 and counts its calls."""

    def __init__(self, error: bool = False):
        self.replies: list[Message] = []
        self.error = error

    def __call__(self, message: Message, context: Context) -> Message:
        self.replies.append(self.reply(message))
        return self.replies[-1]

    def reply(self, message: Message) -> Message:
        if self.error:
            return Message(Error(code=100, reason="site 1: bad file"), reply_to=message)
        content = RecordDict(
            {
                METRICS_KEY: MetricRecord({NUM_EXAMPLES_KEY: 3, LOSS_KEY: 0.5}),
                SITE_RECORD_KEY: ConfigRecord({SITE_ID_KEY: "site-2", MANIFEST_KEY: "abc"}),
                ARRAYS_KEY: ArrayRecord({"counts": Array(COUNTS), "w": Array(TRAINED)}),
            }
        )
        return Message(content=content, reply_to=message)


def sent(reply: Message, name: str = "w") -> np.ndarray:
    return reply.content[ARRAYS_KEY][name].numpy()


# -- the gate ------------------------------------------------------------------------------


def test_with_the_key_empty_the_gate_hands_the_reply_on_and_no_fault_code_runs(monkeypatch):
    def must_not_run(*_args):
        raise AssertionError("the fault mod ran with fault-injection empty")

    monkeypatch.setattr(fault_mod, "fault_injection_mod", must_not_run)
    handler = Handler()
    reply = inject_faults_when_set(train_instruction(), context(""), handler)
    assert handler.replies == [reply]
    assert np.array_equal(sent(reply), TRAINED)


def test_with_the_key_set_the_gate_runs_the_fault_mod(monkeypatch):
    seen = []

    def spy(message, context, call_next):
        seen.append(context.run_config["fault-injection"])
        return fault_injection_mod(message, context, call_next)

    monkeypatch.setattr(fault_mod, "fault_injection_mod", spy)
    reply = inject_faults_when_set(train_instruction(), context("site-2:nan@1"), Handler())
    assert seen == ["site-2:nan@1"] and np.isnan(sent(reply)).all()


def test_the_clientapp_does_not_import_the_fault_code():
    code = "import sys, client_app.app; assert 'fedtumor.federation.fault_mod' not in sys.modules"
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]


# -- the fault mod -------------------------------------------------------------------------


def test_nan_fills_the_first_float_array():
    reply = fault_injection_mod(train_instruction(), context("site-2:nan@1"), Handler())
    assert np.isnan(sent(reply)).all() and sent(reply).dtype == np.float32
    assert np.array_equal(sent(reply, "counts"), COUNTS) and reply.content[METRICS_KEY][NUM_EXAMPLES_KEY] == 3


def test_shape_lengthens_the_first_float_array_by_one():
    reply = fault_injection_mod(train_instruction(), context("site-2:shape@1"), Handler())
    assert sent(reply).shape == (RECEIVED.size + 1,) and np.array_equal(sent(reply, "counts"), COUNTS)


def test_scale_multiplies_the_update_by_1000():
    reply = fault_injection_mod(train_instruction(), context("site-2:scale@1"), Handler())
    assert np.allclose(sent(reply), RECEIVED + 1000.0 * (TRAINED - RECEIVED))
    assert np.array_equal(sent(reply, "counts"), COUNTS)


def test_zero_examples_changes_only_the_weight():
    reply = fault_injection_mod(train_instruction(), context("site-2:zero-examples@1"), Handler())
    assert dict(reply.content[METRICS_KEY]) == {NUM_EXAMPLES_KEY: 0, LOSS_KEY: 0.5}
    assert np.array_equal(sent(reply), TRAINED)


def test_raise_names_the_site_and_the_round_after_training():
    handler = Handler()
    with pytest.raises(InjectedFault, match="^injected fault: site-2 raises in round 2$"):
        fault_injection_mod(train_instruction(server_round=2), context("site-2:raise@2"), handler)
    assert len(handler.replies) == 1


def test_timeout_sleeps_past_the_round_timeout_then_replies(monkeypatch):
    sleeps = []
    monkeypatch.setattr(fault_mod.time, "sleep", sleeps.append)
    reply = fault_injection_mod(train_instruction(), context("site-2:timeout@1", round_timeout_s=30.0), Handler())
    assert sleeps == [35.0] and np.array_equal(sent(reply), TRAINED)


def test_crash_exits_the_process_half_way_through_the_round_timeout(monkeypatch):
    sleeps = []

    def exit_process(code):
        raise SystemExit(code)

    monkeypatch.setattr(fault_mod.time, "sleep", sleeps.append)
    monkeypatch.setattr(fault_mod.os, "_exit", exit_process)
    with pytest.raises(SystemExit) as exited:
        fault_injection_mod(train_instruction(), context("site-2:crash@1", round_timeout_s=30.0), Handler())
    assert exited.value.code == 3 and sleeps == [15.0]


@pytest.mark.parametrize("spec", ["site-1:nan@1", "site-2:nan@2", "site-1:raise@1 site-2:raise@3"])
def test_other_sites_and_rounds_reply_untouched(spec):
    reply = fault_injection_mod(train_instruction(), context(spec), Handler())
    assert np.array_equal(sent(reply), TRAINED) and reply.content[METRICS_KEY][NUM_EXAMPLES_KEY] == 3


def test_an_error_reply_goes_out_as_it_is():
    reply = fault_injection_mod(train_instruction(), context("site-2:raise@1"), Handler(error=True))
    assert reply.has_error() and reply.error.reason == "site 1: bad file"


# -- the real ClientApp on a one-site cohort -----------------------------------------------------

TINY = "patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4 queue-length=2 augment=false"


@pytest.fixture(scope="module")
def site_run_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("clientapp")
    generate_cohort(root / "cohort", n_sites=1, n_subjects=3, seed=3, shape=64, n_test=1, progress=False)
    return read_run_config(f"data-dir='{root / 'cohort'}' output-dir='{root / 'runs'}' {TINY}")


def site_instruction(config: RunConfig, **round_config) -> tuple[Message, np.ndarray]:
    torch.manual_seed(config.seed)
    initial = ArrayRecord(build_model(config.model, config.base_filters).state_dict())
    settings = {SERVER_ROUND_KEY: 1, LEARNING_RATE_KEY: config.learning_rate, LOCAL_EPOCHS_KEY: 1, **round_config}
    content = RecordDict({ARRAYS_KEY: initial, CONFIG_KEY: ConfigRecord(settings)})
    return instruction(content, node_id=1), flat(initial)


def flat(arrays: ArrayRecord) -> np.ndarray:
    return np.concatenate([a.numpy().ravel() for a in arrays.values() if np.issubdtype(a.numpy().dtype, np.floating)])


def site_context(config: RunConfig, fault_injection: str = "") -> Context:
    run_config = config.replace(fault_injection=fault_injection).to_run_config()
    node_config = {"partition-id": 0, "num-partitions": 1}
    return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config=run_config)


def test_a_site_reports_its_training_under_the_wire_names(site_run_config, monkeypatch, tmp_path):
    monkeypatch.setenv("FEDTUMOR_HOME", str(tmp_path))
    message, _ = site_instruction(site_run_config, **{REPORT_LOSS_BEFORE_KEY: True})
    reply = app(message, site_context(site_run_config))
    assert not reply.has_error(), reply.error
    metrics = reply.content[METRICS_KEY]
    assert list(metrics) == [
        NUM_EXAMPLES_KEY,
        LOSS_KEY,
        NUM_PATCHES_KEY,
        TRAIN_SECONDS_KEY,
        LOSS_BEFORE_KEY,
        LOSS_AFTER_KEY,
    ]
    assert metrics[NUM_PATCHES_KEY] == metrics[NUM_EXAMPLES_KEY]  # one patch per subject, one epoch
    assert reply.content[SITE_RECORD_KEY][SITE_ID_KEY] == "site-1"


def test_dp_clips_what_the_fault_mod_sends(site_run_config, monkeypatch, tmp_path):
    monkeypatch.setenv("FEDTUMOR_HOME", str(tmp_path))
    message, received = site_instruction(site_run_config, **{KEY_CLIPPING_NORM: 0.01})
    reply = app(message, site_context(site_run_config, fault_injection="site-1:scale@1"))
    assert not reply.has_error(), reply.error
    # The update x1000 is clipped to the norm: the fault is inside, the clipping outside.
    assert np.linalg.norm(flat(reply.content[ARRAYS_KEY]) - received) == pytest.approx(0.01, rel=1e-3)


# -- a site whose data is unusable ------------------------------------------------------------


def bad_data_reply(config: RunConfig, node_config: dict) -> Message:
    message, _ = site_instruction(config)
    context = Context(
        run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config=config.to_run_config()
    )
    reply = app(message, context)
    assert reply.has_error() and reply.error.code == SITE_ERROR_CODE, reply
    return reply


def test_a_deployed_site_names_itself_and_its_file_relative_to_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDTUMOR_HOME", str(tmp_path / "home"))
    site = tmp_path / "hospital" / "imaging"
    write_subject(site, "S1")
    write_subject(site, "S2")
    truncate(site / "S1" / "S1_flair.nii.gz")
    config = RunConfig()
    reply = bad_data_reply(config, {"data-dir": str(site), "site-id": "hospital-b"})
    reason = reply.error.reason
    assert reason.startswith("site hospital-b: subject S1: S1/S1_flair.nii.gz: ") and "\n" not in reason
    assert str(tmp_path) not in reason
    assert describe_reply(1, "train", reply).site_id == "hospital-b"  # what the server names it
    # Without site-id in its node config a site is its folder's name, as in its sound replies.
    reason = bad_data_reply(config, {"data-dir": str(site)}).error.reason
    assert reason.startswith("site imaging: ") and str(tmp_path) not in reason
    # A data-dir that is not there: no path of the hospital's either.
    reason = bad_data_reply(config, {"data-dir": str(tmp_path / "gone")}).error.reason
    assert reason == "site gone: data-dir: data folder does not exist"


def test_a_simulated_site_names_itself_by_its_partition(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDTUMOR_HOME", str(tmp_path / "home"))
    cohort = tmp_path / "cohort"
    for subject in ("A1", "B1"):
        write_subject(cohort, subject)
    (cohort / "partitioning.csv").write_text("Partition_ID,Subject_ID\n1,A1\n1,GHOST\n2,B1\n")
    config = RunConfig(data_dir=str(cohort))
    reason = bad_data_reply(config, {"partition-id": 0, "num-partitions": 2}).error.reason
    assert reason.startswith("site site-1: subject GHOST: ") and "partitioning.csv" in reason
    # When the partition CSV cannot tell which site a node is, the reason says no site id: the server names the node.
    reply = bad_data_reply(config, {"partition-id": 0, "num-partitions": 3})
    assert not reply.error.reason.startswith("site ") and "set num-supernodes to 2" in reply.error.reason
    assert describe_reply(1, "train", reply).site_id == "node-1"
