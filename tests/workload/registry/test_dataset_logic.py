"""mlops_workload's pure parts, without servers: tag metadata and the source mirror."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlops_workload import dataset
from mlops_workload.workspace import RegistryError, read_dvc_config


def test_tag_metadata_round_trips():
    metadata = {"version": "v2", "parent": "v1", "files": 3, "bytes": 10, "source": "upload"}
    message = dataset.format_tag_message("v2: new photos", metadata)
    assert message.splitlines()[0] == "v2: new photos"
    assert dataset.parse_tag_message(message) == metadata


@pytest.mark.parametrize(
    "message", ["just a note", "mlops-dataset: {broken", "mlops-dataset: [1]"]
)
def test_tags_without_metadata_parse_to_none(message):
    assert dataset.parse_tag_message(message) is None


@pytest.mark.parametrize(("name", "number"), [("v1", 1), ("v12", 12), ("v0", None), ("1", None)])
def test_only_v_number_tags_are_versions(name, number):
    assert dataset.version_number(name) == number


def test_mirror_rewrites_only_changed_files_and_removes_stale_ones(tmp_path: Path):
    source, target = tmp_path / "src", tmp_path / "dst"
    (source / "a").mkdir(parents=True)
    (source / "a" / "same.bin").write_bytes(b"same")
    (source / "changed.bin").write_bytes(b"old")
    first = dataset.mirror(source, target)
    assert (first.files, first.bytes) == (2, 7)
    unchanged_inode = (target / "a" / "same.bin").stat().st_ino
    (source / "changed.bin").write_bytes(b"newer")
    os.utime(source / "changed.bin", ns=(1, 1))
    (source / "b.bin").write_bytes(b"b")
    second = dataset.mirror(source, target)
    assert (second.files, second.bytes) == (3, 10)
    assert (target / "changed.bin").read_bytes() == b"newer"
    # An unchanged file is not rewritten: DVC's hash cache still knows it.
    assert (target / "a" / "same.bin").stat().st_ino == unchanged_inode
    (source / "a" / "same.bin").unlink()
    (source / "a").rmdir()
    third = dataset.mirror(source, target)
    assert (third.files, third.bytes) == (2, 6)
    assert not (target / "a").exists()
    assert sorted(p.name for p in target.iterdir()) == ["b.bin", "changed.bin"]


def test_mirror_of_a_missing_source_is_a_one_line_error(tmp_path: Path):
    with pytest.raises(RegistryError, match="is not a directory"):
        dataset.mirror(tmp_path / "nope", tmp_path / "dst")


def test_dvc_config_sections_are_read():
    text = "[core]\n    remote = storage\n['remote \"storage\"']\n    url = s3://dvc\n"
    assert read_dvc_config(text) == {
        "core": {"remote": "storage"},
        'remote "storage"': {"url": "s3://dvc"},
    }
