"""A deployed site without segmentations (node-config ``labels=false``): images checked, train/evaluate refused."""

import pytest
from flwr.app import ConfigRecord, Context, MessageType, RecordDict

from client_app.app import app
from data_loaders.site import NO_LABELS_MESSAGE, check_site_folder, site_has_labels
from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError, DataError
from fedtumor.federation import conformance
from fedtumor.federation.replies import SITE_ERROR_CODE, describe_reply
from fedtumor.federation.wire import CONFIG_KEY, SERVER_ROUND_KEY
from tests.nifti_factory import truncate, write_subject


def reply_to(message_type: str, node_config: dict):
    content = RecordDict({CONFIG_KEY: ConfigRecord({SERVER_ROUND_KEY: 1})})
    message = conformance.site_instruction(1, content, message_type=message_type)
    context = Context(
        run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config=RunConfig().to_run_config()
    )
    return app(message, context)


@pytest.fixture
def unlabelled_site(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDTUMOR_HOME", str(tmp_path / "home"))
    site = tmp_path / "hospital-c"
    for subject_id in ("S1", "S2"):
        write_subject(site, subject_id, with_label=False)
    return site


@pytest.mark.parametrize("value", [False, "false", "False"])
def test_the_labels_flag_reads_as_toml_or_text(value):
    assert site_has_labels({"labels": value}) is False
    assert site_has_labels({}) is True and site_has_labels({"labels": "true"}) is True


def test_a_wrong_labels_value_names_the_key():
    with pytest.raises(ConfigError, match="'labels'"):
        site_has_labels({"labels": "no"})


def test_the_site_check_skips_labels_only_when_told(unlabelled_site):
    with pytest.raises(DataError, match="missing segmentation"):
        check_site_folder(unlabelled_site)
    check_site_folder(unlabelled_site, labels=False)  # images only: no error


@pytest.mark.parametrize("message_type", [MessageType.TRAIN, MessageType.EVALUATE])
def test_train_and_evaluate_are_answered_with_a_one_line_site_error(unlabelled_site, message_type):
    reply = reply_to(message_type, {"data-dir": str(unlabelled_site), "labels": False})
    assert reply.has_error() and reply.error.code == SITE_ERROR_CODE
    assert reply.error.reason == f"site hospital-c: {NO_LABELS_MESSAGE}"
    assert describe_reply(1, "train", reply).site_id == "hospital-c"


def test_an_unlabelled_site_still_reports_a_broken_image_first(unlabelled_site):
    truncate(unlabelled_site / "S2" / "S2_t1.nii.gz")
    reason = reply_to(MessageType.TRAIN, {"data-dir": str(unlabelled_site), "labels": False}).error.reason
    assert reason.startswith("site hospital-c: subject S2: S2/S2_t1.nii.gz: cannot read NIfTI"), reason


def test_a_bad_labels_value_is_a_site_error_naming_the_key(unlabelled_site):
    reason = reply_to(MessageType.TRAIN, {"data-dir": str(unlabelled_site), "labels": "maybe"}).error.reason
    assert reason.startswith("site hospital-c: ") and "'labels'" in reason
