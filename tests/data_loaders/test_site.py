"""Which subjects a simulated or deployed site trains and validates on."""

from pathlib import Path

import pytest

from data_loaders.site import (
    check_site_folder,
    heldout_files,
    node_site_id,
    resolve_site,
    split_train_val,
    synthetic_cohort_dir,
)
from fedtumor.core.config import RunConfig
from fedtumor.core.errors import DataError
from tests.nifti_factory import truncate, write_subject


def write_cohort(root: Path, partitions: dict[str, list[str]], csv_text: str | None = None) -> Path:
    for subjects in partitions.values():
        for subject in subjects:
            write_subject(root, subject)
    rows = [f"{site},{subject}" for site, subjects in partitions.items() for subject in subjects]
    (root / "partitioning.csv").write_text(csv_text or "Partition_ID,Subject_ID\n" + "\n".join(rows) + "\n")
    return root


PARTITIONS = {"1": ["A1", "A2", "A3", "A4"], "2": ["B1", "B2"], "10": ["C1"]}


def test_partition_id_maps_to_csv_partitions_in_natural_order(tmp_path):
    config = RunConfig(data_dir=str(write_cohort(tmp_path, PARTITIONS)))
    sites = [resolve_site(config, {"partition-id": i, "num-partitions": 3}) for i in range(3)]
    assert [site_id for site_id, _, _ in sites] == ["site-1", "site-2", "site-10"]
    site_id, train, val = sites[0]
    assert sorted(f.subject_id for f in train + val) == PARTITIONS["1"]
    assert len(val) == 1 and not {f.subject_id for f in train} & {f.subject_id for f in val}


def test_one_subject_site_validates_on_its_training_subject(tmp_path):
    config = RunConfig(data_dir=str(write_cohort(tmp_path, PARTITIONS)))
    _, train, val = resolve_site(config, {"partition-id": 2, "num-partitions": 3})
    assert [f.subject_id for f in train] == [f.subject_id for f in val] == ["C1"]


def test_train_or_val_column_fixes_the_split(tmp_path):
    csv = "Subject_ID,Partition_ID,TrainOrVal\nA1,1,train\nA2,1,val\nA3,1,train\nB1,2,train\nB2,2,val\n"
    root = write_cohort(tmp_path, {"1": ["A1", "A2", "A3"], "2": ["B1", "B2"]}, csv_text=csv)
    _, train, val = resolve_site(RunConfig(data_dir=str(root)), {"partition-id": 0, "num-partitions": 2})
    assert [f.subject_id for f in train] == ["A1", "A3"] and [f.subject_id for f in val] == ["A2"]


def test_split_is_deterministic_and_seeded():
    ids = [f"S{i}" for i in range(12)]
    first = split_train_val(ids, 0.25, seed=0, site_id="site-1")
    assert first == split_train_val(list(reversed(ids)), 0.25, seed=0, site_id="site-1")
    assert len(first[1]) == 3
    assert any(split_train_val(ids, 0.25, seed=s, site_id="site-1") != first for s in range(1, 5))


def test_deployed_node_reads_its_data_dir(tmp_path):
    for subject in ("H1", "H2", "H3"):
        write_subject(tmp_path / "hospital-a", subject)
    site_id, train, val = resolve_site(RunConfig(), {"data-dir": str(tmp_path / "hospital-a")})
    assert site_id == "hospital-a" and len(train) == 2 and len(val) == 1
    named, _, _ = resolve_site(RunConfig(), {"data-dir": str(tmp_path / "hospital-a"), "site-id": "Penn"})
    assert named == "Penn"


def test_wrong_number_of_partitions_is_named(tmp_path):
    config = RunConfig(data_dir=str(write_cohort(tmp_path, PARTITIONS)))
    with pytest.raises(DataError, match="partitioning.csv"):
        resolve_site(config, {"partition-id": 0, "num-partitions": 4})


def test_subject_in_csv_but_not_on_disk_is_named(tmp_path):
    root = write_cohort(tmp_path, {"1": ["A1", "A2"], "2": ["B1", "B2"]})
    with open(root / "partitioning.csv", "a") as handle:
        handle.write("1,GHOST\n")
    with pytest.raises(DataError, match="GHOST.*partitioning.csv"):
        resolve_site(RunConfig(data_dir=str(root)), {"partition-id": 0, "num-partitions": 2})


def test_missing_data_dir_and_empty_node_config_are_errors(tmp_path):
    with pytest.raises(DataError, match="^data-dir: data folder does not exist$"):  # the site's own path stays home
        resolve_site(RunConfig(), {"data-dir": str(tmp_path / "nowhere")})
    with pytest.raises(DataError, match="data-dir"):
        resolve_site(RunConfig(), {})


def test_heldout_list_is_optional_unless_configured(tmp_path):
    root = write_cohort(tmp_path, PARTITIONS)
    assert heldout_files(RunConfig(data_dir=str(root)), 3) == []
    write_subject(root, "T1")
    (root / "heldout.csv").write_text("Subject_ID\nT1\n")
    assert [f.subject_id for f in heldout_files(RunConfig(data_dir=str(root)), 3)] == ["T1"]
    with pytest.raises(DataError, match="missing.csv"):
        heldout_files(RunConfig(data_dir=str(root), heldout=str(root / "missing.csv")), 3)


def test_synthetic_cohort_folder_depends_on_parameters(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDTUMOR_HOME", str(tmp_path))
    base = synthetic_cohort_dir(RunConfig(), 4)
    assert base.parent == tmp_path / "cohorts"
    assert synthetic_cohort_dir(RunConfig(synth_seed=1), 4) != base
    assert synthetic_cohort_dir(RunConfig(), 8) != base


def test_a_deployed_sites_check_names_files_relative_to_its_data_dir(tmp_path):
    site = tmp_path / "hospital" / "site-a"
    for subject in ("S1", "S2"):
        write_subject(site, subject)
    truncate(site / "S1" / "S1_flair.nii.gz")
    (site / "S2" / "S2_t2.nii.gz").unlink()
    with pytest.raises(DataError) as raised:
        check_site_folder(site)
    message = str(raised.value)
    assert message.startswith("subject S1: S1/S1_flair.nii.gz: cannot read NIfTI (")
    assert message.endswith(" (1 of 2 problems; run `fedtumor check-data <data-dir>` for all)")
    assert str(tmp_path) not in message and "\n" not in message
    # A link to the folder: the files are still named inside it, whatever path a reader reports.
    link = tmp_path / "link"
    link.symlink_to(site)
    with pytest.raises(DataError) as raised:
        check_site_folder(link)
    assert str(raised.value) == message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="^data-dir: no subjects found: "):
        check_site_folder(empty)


def test_a_node_knows_its_site_id_without_reading_its_data(tmp_path):
    config = RunConfig(data_dir=str(write_cohort(tmp_path / "cohort", PARTITIONS)))
    ids = [node_site_id(config, {"partition-id": i, "num-partitions": 3}) for i in range(3)]
    assert ids == [
        site_id for site_id, _, _ in (resolve_site(config, {"partition-id": i, "num-partitions": 3}) for i in range(3))
    ]
    assert node_site_id(None, {"data-dir": str(tmp_path / "hospital-a")}) == "hospital-a"  # no data needed
    assert node_site_id(None, {"data-dir": str(tmp_path / "x"), "site-id": "Penn"}) == "Penn"
    # When the config cannot tell: no site id rather than a wrong one.
    assert node_site_id(config, {"partition-id": 0, "num-partitions": 4}) is None
    assert node_site_id(None, {"partition-id": 0, "num-partitions": 3}) is None
    assert node_site_id(RunConfig(data_dir=str(tmp_path / "none")), {"partition-id": 0, "num-partitions": 3}) is None
