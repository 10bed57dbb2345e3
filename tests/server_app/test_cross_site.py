"""The server's cross-site queries against real ClientApps in this process: FedBN sites with their own norms.

A small Grid subclass delivers each message to the real ClientApp (records serialised and read
back, as between processes), so the server side, the client side and the files meet for real.
"""

import json
import math

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.serverapp import Grid

from client_app.app import app as client_app
from fedtumor.core.config import read_run_config
from fedtumor.core.model import build_model
from fedtumor.federation.conformance import as_serverapp, site_instruction, site_reply
from fedtumor.federation.cross_site import STAGE_PERSONAL, STAGE_SCORE
from fedtumor.federation.wire import ARRAYS_KEY, CONFIG_KEY, METRICS_KEY
from fedtumor.run.audit import AuditLog, verify_run
from fedtumor.run.cross_site import GLOBAL_MODEL, cross_site_metrics, personal_model, read_cross_site
from fedtumor.run.files import AUDIT_FILE
from server_app.cross_site import CrossSiteEvaluation, evaluate_cross_site
from strategies.fedbn import LOCAL_NORMS_KEY, FedBNPlugin, norm_state_keys

TINY = "patch-size=32 samples-per-volume=1 batch-size=1 base-filters=4 queue-length=4 augment=false"
SITES = ["site-1", "site-2"]
NODES = [11, 12]


def wire(content: RecordDict) -> RecordDict:
    return recorddict_from_proto(recorddict_to_proto(content))


class ClientAppGrid(Grid):
    """Every node a real ClientApp in this process, each with its own context (state persists)."""

    def __init__(self, contexts: dict[int, Context]):
        self.contexts = contexts
        self.sent: list[Message] = []

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for message in messages:
            self.sent.append(message)
            node = message.metadata.dst_node_id
            received = site_instruction(node, wire(message.content), message.metadata.message_type)
            reply = client_app(received, self.contexts[node])
            replies.append(reply if reply.has_error() else site_reply(node, wire(reply.content)))
        return replies

    def _unused(self, *args, **kwargs):
        raise NotImplementedError

    set_run = run = create_message = push_messages = pull_messages = _unused


@pytest.fixture
def config(two_site_cohort, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDTUMOR_HOME", str(tmp_path / "home"))
    return read_run_config(f"strategy='fedbn' data-dir='{two_site_cohort}' cross-site-eval=true {TINY}")


@pytest.fixture
def global_state(config):
    torch.manual_seed(config.seed)
    return build_model(config.model, config.base_filters).state_dict()


def fedbn_contexts(config, global_state) -> dict[int, Context]:
    """Each site as after FedBN training: its own norms in its state, different from the global model's."""
    norms = norm_state_keys(build_model(config.model, config.base_filters))
    contexts = {}
    for index, node in enumerate(NODES):
        own = {key: global_state[key] * (1.0 + 0.5 * (index + 1)) + 0.1 * (index + 1) for key in norms}
        state = RecordDict({LOCAL_NORMS_KEY: ArrayRecord(own)})
        node_config = {"partition-id": index, "num-partitions": len(NODES)}
        contexts[node] = Context(
            run_id=1, node_id=node, node_config=node_config, state=state, run_config=config.to_run_config()
        )
    return contexts


def site_validation(config, state_dict, partition: int) -> dict[str, float]:
    """The site's own evaluate reply (plain hooks: the model exactly as sent)."""
    message = site_instruction(
        1, RecordDict({ARRAYS_KEY: ArrayRecord(state_dict), CONFIG_KEY: ConfigRecord()}), "evaluate"
    )
    node_config = {"partition-id": partition, "num-partitions": 2}
    context = Context(
        run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config=config.to_run_config()
    )
    reply = client_app(message, context)
    assert not reply.has_error(), reply.error
    return cross_site_metrics({k: float(v) for k, v in reply.content[METRICS_KEY].items()})


def personal_state(global_state, context: Context) -> dict:
    return {**global_state, **context.state[LOCAL_NORMS_KEY].to_torch_state_dict()}


def test_sharing_on_every_site_scores_every_personal_model(config, global_state):
    contexts = fedbn_contexts(config, global_state)
    grid = ClientAppGrid(contexts)
    sharing = config.replace(cross_site_share_personal=True)
    for context in contexts.values():
        context.run_config = sharing.to_run_config()
    with as_serverapp():
        result = CrossSiteEvaluation(grid, share_personal=True, client_hook="fedbn", timeout_s=60).run(
            ArrayRecord(global_state)
        )
    scores = result.ordered_scores()
    assert list(scores) == [GLOBAL_MODEL, personal_model("site-1"), personal_model("site-2")]
    assert all(sorted(by_site) == SITES for by_site in scores.values())  # a full matrix
    # site-1 scored site-2's personal model (global arrays + site-2's norms) as site-1 would score it itself.
    site_2_personal = personal_state(global_state, contexts[NODES[1]])
    expected = site_validation(config, site_2_personal, partition=0)
    assert scores[personal_model("site-2")]["site-1"] == pytest.approx(expected)
    assert scores[personal_model("site-2")]["site-1"] != pytest.approx(scores[GLOBAL_MODEL]["site-1"])
    # The personal models travelled in the first query only; scores came back without arrays.
    assert {site: r["array_records"] for site, r in result.reply_records[STAGE_PERSONAL].items()} == {
        site: ["personal"] for site in SITES
    }
    assert all(r["array_records"] == [] for r in result.reply_records[STAGE_SCORE].values())
    # No site was sent its own personal model back.
    score_messages = [m for m in grid.sent if m.content[CONFIG_KEY]["cross-site-stage"] == STAGE_SCORE]
    assert [sorted(k for k in m.content.array_records if k != ARRAYS_KEY) for m in score_messages] == [
        ["personal:site-2"],
        ["personal:site-1"],
    ]


def test_sharing_off_writes_the_matrix_and_an_audit_entry_with_no_model_received(config, global_state, tmp_path):
    grid = ClientAppGrid(fedbn_contexts(config, global_state))
    audit = AuditLog(tmp_path)
    audit.append("run-start")
    with as_serverapp():
        block = evaluate_cross_site(grid, config, FedBNPlugin, global_state, tmp_path, audit)
    assert all(len(m.content.array_records) == 1 for m in grid.sent)  # the global model only
    matrix = read_cross_site(tmp_path)
    assert list(matrix.index) == [GLOBAL_MODEL, personal_model("site-1"), personal_model("site-2")]
    assert math.isnan(matrix.loc[personal_model("site-1"), "site-2"])
    assert block["cross_site"]["mean_dice"][GLOBAL_MODEL] == pytest.approx(dict(matrix.loc[GLOBAL_MODEL]))
    entry = json.loads((tmp_path / AUDIT_FILE).read_text().splitlines()[-1])
    assert entry["event"] == "cross-site" and list(entry["replies"]) == [STAGE_SCORE]
    assert verify_run(tmp_path).intact


def test_off_by_default_nothing_is_sent(config, global_state, tmp_path):
    grid = ClientAppGrid(fedbn_contexts(config, global_state))
    off = config.replace(cross_site_eval=False)
    assert evaluate_cross_site(grid, off, FedBNPlugin, global_state, tmp_path, AuditLog(tmp_path)) == {}
    assert grid.sent == [] and not any(tmp_path.iterdir())
