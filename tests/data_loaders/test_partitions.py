"""FeTS partition CSVs: read by column name, natural order, one-line errors naming the CSV."""

from __future__ import annotations

import gzip

import pytest

from data_loaders.partitions import (
    partition_for_index,
    partition_ids,
    read_partitions,
    read_subject_list,
    subjects_of_partition,
)
from fedtumor.core.errors import DataError


def write_csv(tmp_path, text, name="partitioning.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


FETS2022 = "Partition_ID,Subject_ID\n1,FeTS2022_00000\n1,FeTS2022_00001\n2,FeTS2022_00002\n10,FeTS2022_00003\n"
FETS2021 = "Subject_ID,Partition_ID\nFeTS21_000,1\nFeTS21_001,1\nFeTS21_002,2\nFeTS21_003,10\n"


@pytest.mark.parametrize("text", [FETS2022, FETS2021], ids=["2022-order", "2021-order"])
def test_both_column_orders_read_the_same(tmp_path, text):
    df = read_partitions(write_csv(tmp_path, text))
    assert list(df.columns) == ["partition_id", "subject_id", "split"]
    assert partition_ids(df) == ["1", "2", "10"]  # numeric, not lexicographic
    assert len(subjects_of_partition(df, "1")) == 2
    assert subjects_of_partition(df, 10) == [df["subject_id"].iloc[3]]  # an int id works too
    assert df["split"].tolist() == [None] * 4
    assert all(isinstance(v, str) for v in df["partition_id"])


def test_train_or_val_column_is_normalised(tmp_path):
    text = "Subject_ID,TrainOrVal,Partition_ID\nA,Train,1\nB,VAL,1\nC,train,2\nD,,2\n"
    df = read_partitions(write_csv(tmp_path, text))
    assert df["split"].tolist() == ["train", "val", "train", None]
    assert subjects_of_partition(df, "1", split="train") == ["A"]
    assert subjects_of_partition(df, "1", split="val") == ["B"]
    assert subjects_of_partition(df, "1") == ["A", "B"]


def test_column_names_case_whitespace_and_bom_tolerated(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes("\ufeffpartition_id , subject_id\n 1 , A \n2,B\n".encode())
    df = read_partitions(path)
    assert df["subject_id"].tolist() == ["A", "B"]
    assert partition_ids(df) == ["1", "2"]


def test_non_numeric_ids_sort_naturally(tmp_path):
    df = read_partitions(write_csv(tmp_path, "Partition_ID,Subject_ID\nsite10,A\nsite2,B\nsite1,C\n"))
    assert partition_ids(df) == ["site1", "site2", "site10"]


def test_partition_for_index_maps_in_natural_order(tmp_path):
    df = read_partitions(write_csv(tmp_path, FETS2022))
    assert [partition_for_index(df, i, 3) for i in range(3)] == ["1", "2", "10"]


def test_partition_for_index_rejects_wrong_node_count(tmp_path):
    path = write_csv(tmp_path, FETS2022)
    df = read_partitions(path)
    with pytest.raises(DataError, match="simulation has 4 partitions but the CSV defines 3") as info:
        partition_for_index(df, 0, 4)
    assert "partitioning.csv" in str(info.value)


@pytest.mark.parametrize("index", [-1, 3])
def test_partition_for_index_rejects_out_of_range(tmp_path, index):
    df = read_partitions(write_csv(tmp_path, FETS2022))
    with pytest.raises(DataError, match="out of range"):
        partition_for_index(df, index, 3)


def test_unknown_partition_names_known_ones(tmp_path):
    df = read_partitions(write_csv(tmp_path, FETS2022))
    with pytest.raises(DataError, match=r"unknown partition '7' \(known: 1, 2, 10\)") as info:
        subjects_of_partition(df, 7)
    assert "partitioning.csv" in str(info.value)


def test_empty_partition_split_raises(tmp_path):
    df = read_partitions(write_csv(tmp_path, "Partition_ID,Subject_ID,TrainOrVal\n1,A,train\n2,B,val\n"))
    with pytest.raises(DataError, match="partition '1' has no val subjects"):
        subjects_of_partition(df, "1", split="val")


def assert_one_line_naming(info, path):
    message = str(info.value)
    assert "\n" not in message
    assert path.name in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(DataError, match="does not exist") as info:
        read_partitions(path)
    assert_one_line_naming(info, path)


def test_empty_file(tmp_path):
    path = write_csv(tmp_path, "")
    with pytest.raises(DataError, match="empty") as info:
        read_partitions(path)
    assert_one_line_naming(info, path)


def test_header_only_has_no_subjects(tmp_path):
    path = write_csv(tmp_path, "Partition_ID,Subject_ID\n")
    with pytest.raises(DataError, match="no subjects") as info:
        read_partitions(path)
    assert_one_line_naming(info, path)


def test_binary_garbage(tmp_path):
    path = tmp_path / "partitioning.csv"
    path.write_bytes(gzip.compress(b"\x00\x01binary" * 100))
    with pytest.raises(DataError) as info:
        read_partitions(path)
    assert_one_line_naming(info, path)


def test_missing_column_is_named(tmp_path):
    path = write_csv(tmp_path, "Partition_ID,Patient\n1,A\n")
    with pytest.raises(DataError, match="missing required column Subject_ID") as info:
        read_partitions(path)
    assert_one_line_naming(info, path)


def test_ragged_rows(tmp_path):
    path = write_csv(tmp_path, "Partition_ID,Subject_ID\n1,A\n2,B,extra,fields\n")
    with pytest.raises(DataError, match="cannot parse CSV") as info:
        read_partitions(path)
    assert_one_line_naming(info, path)


def test_duplicate_subjects(tmp_path):
    path = write_csv(tmp_path, "Partition_ID,Subject_ID\n1,A\n2,A\n2,B\n")
    with pytest.raises(DataError, match="duplicate subject ids: A") as info:
        read_partitions(path)
    assert_one_line_naming(info, path)


def test_blank_subject_id(tmp_path):
    path = write_csv(tmp_path, "Partition_ID,Subject_ID\n1,A\n2,\n")
    with pytest.raises(DataError, match="empty Subject_ID in data row 2"):
        read_partitions(path)


def test_unknown_split_value(tmp_path):
    path = write_csv(tmp_path, "Partition_ID,Subject_ID,TrainOrVal\n1,A,test\n")
    with pytest.raises(DataError, match="TrainOrVal in data row 1 is 'test'"):
        read_partitions(path)


def test_trailing_blank_rows_are_ignored(tmp_path):
    df = read_partitions(write_csv(tmp_path, "Partition_ID,Subject_ID\n1,A\n,\n\n"))
    assert df["subject_id"].tolist() == ["A"]


def test_read_subject_list(tmp_path):
    path = write_csv(tmp_path, "Subject_ID\nT_2\nT_1\n", name="heldout.csv")
    assert read_subject_list(path) == ["T_2", "T_1"]
    assert read_subject_list(write_csv(tmp_path, "Subject_ID\n", name="none.csv")) == []


def test_read_subject_list_errors(tmp_path):
    with pytest.raises(DataError, match="missing required column Subject_ID"):
        read_subject_list(write_csv(tmp_path, "Partition_ID\n1\n", name="heldout.csv"))
    with pytest.raises(DataError, match="duplicate subject ids: T_1"):
        read_subject_list(write_csv(tmp_path, "Subject_ID\nT_1\nT_1\n", name="heldout.csv"))
