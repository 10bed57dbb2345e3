"""Each reply as the server sees it: an error reply is named by the site id its reason gives."""

import pytest
from flwr.app import ConfigRecord, Error, Message, RecordDict

from fedtumor.federation.conformance import as_serverapp, site_instruction, site_reply
from fedtumor.federation.replies import SITE_ERROR_CODE, describe_reply, site_error_reason, site_of_error
from fedtumor.federation.wire import SITE_ID_KEY, SITE_RECORD_KEY


@pytest.fixture(autouse=True)
def server_identity():
    with as_serverapp():
        yield


def error_from(node_id: int, code: int, reason: str) -> Message:
    """An error reply of ``node_id`` to a train instruction, as the server receives it."""
    instruction = site_instruction(node_id, RecordDict())
    return Message(Error(code=code, reason=reason), reply_to=instruction)


def test_a_site_error_reply_is_named_by_its_site_id_and_keeps_its_whole_reason():
    reason = site_error_reason("hospital-b", "subject S1: S1/S1_flair.nii.gz: cannot read NIfTI (EOFError)")
    assert reason == "site hospital-b: subject S1: S1/S1_flair.nii.gz: cannot read NIfTI (EOFError)"
    reply = describe_reply(3, "train", error_from(1671, SITE_ERROR_CODE, reason))
    assert (reply.server_round, reply.phase, reply.node_id) == (3, "train", 1671)
    assert reply.site_id == "hospital-b"
    assert reply.error == reason


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (SITE_ERROR_CODE, "truncated file"),  # the site could not tell its id
        (SITE_ERROR_CODE, "site : no id"),
        (0, "site site-1: a reason of another code is not the site's own"),  # e.g. Flower's ClientAppException
    ],
)
def test_other_error_replies_are_named_by_node_id_with_the_whole_reason(code, reason):
    reply = describe_reply(1, "evaluate", error_from(12, code, reason))
    assert reply.site_id == "node-12" and reply.error == reason


def test_the_site_id_ends_at_the_first_separator():
    assert site_of_error(SITE_ERROR_CODE, "site St Anne: subject S1: file: bad") == "St Anne"
    assert site_error_reason(None, "no site id") == "no site id"


def test_a_sound_reply_is_still_named_by_its_site_record():
    content = RecordDict({SITE_RECORD_KEY: ConfigRecord({SITE_ID_KEY: "site-2"})})
    reply = describe_reply(1, "train", site_reply(5, content))
    assert reply.site_id == "site-2" and reply.error is None
