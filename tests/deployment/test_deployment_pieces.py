"""The pieces of a live federation that need no Flower process: site folders, data checks, process trees."""

import subprocess
import sys
import time

import pytest

from data_loaders.site import check_site_folder, resolve_site
from data_loaders.site_folders import export_heldout_folder, export_site_folders
from fedtumor.core.config import RunConfig
from fedtumor.core.errors import ConfigError, DataError
from fedtumor.deployment.loopback import LoopbackFederation, write_connection
from fedtumor.deployment.processes import ManagedProcess, descendants
from tests.nifti_factory import truncate, write_subject


def test_each_site_folder_holds_only_its_subjects(tmp_path):
    cohort = tmp_path / "cohort"
    for subject_id in ("S1", "S2", "S3", "T1"):
        write_subject(cohort, subject_id)
    (cohort / "partitioning.csv").write_text("Partition_ID,Subject_ID\n1,S1\n1,S3\n2,S2\n")
    (cohort / "heldout.csv").write_text("Subject_ID\nT1\n")
    folders = export_site_folders(cohort, tmp_path / "sites")
    assert {site: sorted(p.name for p in folder.iterdir()) for site, folder in folders.items()} == {
        "site-1": ["S1", "S3"],
        "site-2": ["S2"],
    }
    server = export_heldout_folder(cohort, tmp_path / "server")
    assert sorted(p.name for p in server.iterdir()) == ["T1", "heldout.csv"]
    # A deployed node finds its site through data-dir alone.
    site_id, train, val = resolve_site(RunConfig(), {"data-dir": str(folders["site-1"])})
    assert site_id == "site-1" and sorted(f.subject_id for f in [*train, *val]) == ["S1", "S3"]


def test_deployed_site_runs_the_check_data_checks_first(tmp_path):
    site = tmp_path / "site-a"
    write_subject(site, "S1")
    write_subject(site, "S2")
    check_site_folder(site)  # clean: no error
    (site / "S2" / "S2_t2.nii.gz").unlink()
    truncate(site / "S1" / "S1_flair.nii.gz")
    with pytest.raises(DataError) as raised:
        resolve_site(RunConfig(), {"data-dir": str(site)})
    message = str(raised.value)
    assert "\n" not in message
    assert "S1_flair.nii.gz" in message and "1 of 2 problems" in message and "fedtumor check-data" in message
    with pytest.raises(DataError, match="does not exist|not found|no subject"):
        check_site_folder(tmp_path / "missing")


def test_stop_ends_the_whole_process_tree(tmp_path):
    # A parent in its own session with a child and a grandchild, like a SuperNode and its apps.
    script = (
        "import subprocess, time; subprocess.Popen(['sleep', '300']); "
        "subprocess.Popen(['bash', '-c', 'sleep 301 & wait']); time.sleep(300)"
    )
    process = ManagedProcess("tree", [sys.executable, "-c", script], tmp_path / "tree.log", env={})
    deadline = time.monotonic() + 20
    while len(descendants(process.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    tree = descendants(process.pid)
    assert len(tree) >= 3
    process.stop(grace_s=5)
    assert not process.running()
    alive = subprocess.run(["ps", "-o", "pid=,stat=", "-p", ",".join(map(str, tree))], capture_output=True, text=True)
    assert [line for line in alive.stdout.splitlines() if "Z" not in line.split()[-1]] == []


def test_connection_config_is_tls_unless_insecure(tmp_path):
    secure = write_connection(tmp_path / "a", "127.0.0.1:9093", tmp_path / "ca.crt").read_text()
    assert f"root-certificates = '{tmp_path / 'ca.crt'}'" in secure and "insecure" not in secure
    assert "insecure = true" in write_connection(tmp_path / "b", "127.0.0.1:9093", None).read_text()
    with pytest.raises(ConfigError, match="node authentication needs TLS"):
        LoopbackFederation(tmp_path, certs=None, node_auth=True)
