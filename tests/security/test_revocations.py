"""The centre's register of revoked node keys and `fedtumor centre revoke` (the audit entry: test_round_close)."""

import pytest
from typer.testing import CliRunner

from fedtumor.cli import app
from fedtumor.security.revocations import read_revocations, record_revocation, revocation_register


def test_the_register_keeps_the_first_revocation_per_node_and_skips_a_torn_line(tmp_path):
    register = revocation_register(tmp_path)
    assert register == tmp_path / "centre" / "revocations.jsonl" and read_revocations(register) == {}
    record_revocation(register, 7, "key   leaked\non a USB stick")
    with register.open("a") as handle:
        handle.write('{"node_id": 9, "rea')  # a write torn by a crash
    record_revocation(register, 7, "again")
    revoked = read_revocations(register)
    assert list(revoked) == [7] and revoked[7]["reason"] == "key leaked on a USB stick"
    with pytest.raises(ValueError, match="node id"):
        record_revocation(register, 0, "no such node")


def test_revoke_names_a_bad_node_id_and_a_superlink_that_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDTUMOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))  # no such connection there
    bad = CliRunner().invoke(app, ["centre", "revoke", "0", "--reason", "x"])
    assert bad.exit_code == 2 and "positive integer" in bad.output
    refused = CliRunner().invoke(app, ["centre", "revoke", "12", "--reason", "x", "--connection", "nowhere"])
    assert refused.exit_code == 1 and "did not unregister node 12" in refused.output
    assert not revocation_register(tmp_path / "home").exists()  # nothing recorded that did not happen
