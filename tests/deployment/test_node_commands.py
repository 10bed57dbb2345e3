"""`fedtumor node init` and `fedtumor node start`: a hospital joins with two commands.

`init` runs the data checks, makes the key pair and writes the node's settings; `start` runs a
real `flower-supernode` against a real SuperLink on 127.0.0.1 with TLS and node authentication,
and Ctrl-C stops it with everything it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from fedtumor.cli import app
from fedtumor.deployment.loopback import LoopbackFederation, flower_env
from fedtumor.deployment.node import read_node, supernode_command
from fedtumor.deployment.processes import descendants, free_port, is_alive, signal_all
from fedtumor.security.certs import fingerprint_sha256, make_superlink_certificates, read_certificate
from tests import REPO
from tests.nifti_factory import scan_path, truncate, write_subject

runner = CliRunner()


def init(tmp_path, data_dir, *extra):
    return runner.invoke(
        app, ["node", "init", "--data-dir", str(data_dir), "--name", "site-a", "--home", str(tmp_path / "home"), *extra]
    )


def test_init_checks_the_data_makes_the_key_pair_and_prints_what_to_send(tmp_path):
    data = tmp_path / "data"
    write_subject(data, "S1")
    certs = make_superlink_certificates(tmp_path / "certs", ["localhost"], ["127.0.0.1"])
    result = init(tmp_path, data, "--ca", str(certs.ca_cert))
    assert result.exit_code == 0, result.output
    settings = read_node(tmp_path / "home", "site-a")
    assert settings.data_dir == data.resolve() and settings.labels
    assert settings.private_key.stat().st_mode & 0o777 == 0o600
    assert settings.public_key.read_text().strip() in result.output  # the key to send, printed whole
    assert fingerprint_sha256(read_certificate(certs.ca_cert)) in result.output
    assert "1 subject, 0 problems" in result.output  # the data checks ran
    assert init(tmp_path, data).exit_code == 2  # an existing key pair is never replaced silently
    assert init(tmp_path, data, "--force").exit_code == 0


def test_init_refuses_a_site_with_data_problems_and_makes_no_key(tmp_path):
    data = tmp_path / "data"
    truncate(scan_path(write_subject(data, "S1"), "S1", "t2"))
    result = init(tmp_path, data)
    assert result.exit_code == 1 and "S1_t2.nii.gz" in result.output and "no key was made" in result.output
    assert not (tmp_path / "home" / "site-a").exists()


def test_init_without_labels_checks_images_only_and_start_passes_the_flag(tmp_path):
    data = tmp_path / "data"
    write_subject(data, "S1", with_label=False)
    assert init(tmp_path, data).exit_code == 1  # a missing segmentation is a problem by default
    assert init(tmp_path, data, "--no-labels").exit_code == 0
    settings = read_node(tmp_path / "home")
    ca = tmp_path / "ca.crt"
    ca.write_text("not checked here")
    command = supernode_command(settings, "127.0.0.1:9092", ca)
    node_config = command[command.index("--node-config") + 1]
    assert "labels=false" in node_config and 'site-id="site-a"' in node_config


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--superlink", "no-port", "--ca", "{ca}"], "--superlink"),
        (["--superlink", "127.0.0.1:9092", "--ca", "{missing}"], "--ca"),
        (["--superlink", "127.0.0.1:9092", "--ca", "{ca}", "--name", "site-b"], "node init --name site-b"),
    ],
)
def test_start_refuses_bad_input_in_one_line(tmp_path, args, needle):
    data = tmp_path / "data"
    write_subject(data, "S1")
    assert init(tmp_path, data).exit_code == 0
    (tmp_path / "ca.crt").write_text("x")
    filled = [a.format(ca=tmp_path / "ca.crt", missing=tmp_path / "nope.crt") for a in args]
    result = runner.invoke(app, ["node", "start", "--home", str(tmp_path / "home"), *filled])
    assert result.exit_code == 2 and needle in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.e2e
def test_start_joins_a_real_superlink_with_tls_and_its_key_and_ctrl_c_stops_it_and_its_worker(tmp_path):
    data = tmp_path / "data"
    write_subject(data, "S1")
    certs = make_superlink_certificates(tmp_path / "certs", ["localhost"], ["127.0.0.1"])
    assert init(tmp_path, data).exit_code == 0
    settings = read_node(tmp_path / "home")
    with LoopbackFederation(tmp_path / "work", certs, node_auth=True, proxy=False) as federation:
        federation.start_superlink()
        node_id = federation.register_node(settings.public_key)
        command = [sys.executable, "-c", "from fedtumor.cli import app; app()", "node", "start"]
        command += ["--home", str(tmp_path / "home"), "--superlink", federation.fleet_address]
        command += ["--ca", str(certs.ca_cert), "--runtime-port", str(free_port()), "--worker"]
        start = subprocess.Popen(
            command, cwd=REPO, env=flower_env(tmp_path / "flwr-home"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and federation.node_statuses().get(node_id) != "online":
                time.sleep(1)
            assert federation.node_statuses().get(node_id) == "online", federation.node_statuses()
            tree = descendants(start.pid)
            commands = [open(f"/proc/{pid}/cmdline").read() for pid in tree if is_alive(pid)]
            assert any("flower-supernode" in c and "--isolation\0process" in c for c in commands), commands
            assert any("fedtumor.deployment.node_worker" in c for c in commands), commands
            start.send_signal(signal.SIGINT)
            output, _ = start.communicate(timeout=60)
        finally:
            if start.poll() is None:  # a failed test still stops the SuperNode, which runs in its own session
                survivors = [start.pid, *descendants(start.pid)]
                signal_all(survivors, signal.SIGKILL)
                start.wait(timeout=10)
        assert start.returncode == 0 and "stopped" in output, output
        assert [pid for pid in tree if is_alive(pid)] == []
    assert os.path.exists(settings.private_key)
