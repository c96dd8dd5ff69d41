"""HostFiles does what ops.Container's file methods do, for what the job records use.

Every test runs twice on the real filesystem: once through a real Pebble's file API
(``ops.Container``, the reference) and once through ``HostFiles``; both must give the same
files, modes, owners and errors.
"""

from __future__ import annotations

import grp
import pwd
import stat
from pathlib import Path

import ops
import pytest
from ops import pebble

from mlops_charms.host_files import HostFiles
from tests.lib.real_pebble import container_on
from tests.workload.processes import PebbleDaemon

Files = ops.Container | HostFiles
OTHER_USER = "nobody"
OTHER_GROUP = grp.getgrgid(pwd.getpwnam(OTHER_USER).pw_gid).gr_name


@pytest.fixture(params=["pebble", "host"])
def files(request: pytest.FixtureRequest) -> Files:
    if request.param == "host":
        return HostFiles()
    shared_pebble: PebbleDaemon = request.getfixturevalue("shared_pebble")
    return container_on(shared_pebble.client)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def owner(path: Path) -> tuple[str, str]:
    status = path.stat()
    return pwd.getpwuid(status.st_uid).pw_name, grp.getgrgid(status.st_gid).gr_name


def test_push_then_pull_gives_the_text_back_with_mode_0644(files: Files, tmp_path: Path):
    files.push(tmp_path / "job.json", '{"id": "1"}')
    assert files.pull(tmp_path / "job.json").read() == '{"id": "1"}'
    assert mode(tmp_path / "job.json") == 0o644


def test_push_sets_the_mode_and_owner_it_is_given(files: Files, tmp_path: Path):
    files.push(tmp_path / "env", "TOKEN='x'\n", permissions=0o600, user=OTHER_USER)
    assert mode(tmp_path / "env") == 0o600
    assert owner(tmp_path / "env") == (OTHER_USER, OTHER_GROUP)


def test_push_replaces_a_file_and_leaves_nothing_else(files: Files, tmp_path: Path):
    files.push(tmp_path / "exit", "1 then\n", permissions=0o600)
    files.push(tmp_path / "exit", b"0 now\n")
    assert (tmp_path / "exit").read_text() == "0 now\n"
    assert mode(tmp_path / "exit") == 0o644
    assert [path.name for path in tmp_path.iterdir()] == ["exit"]


def test_push_makes_the_folders_only_when_asked(files: Files, tmp_path: Path):
    with pytest.raises(pebble.PathError) as raised:
        files.push(tmp_path / "a" / "b" / "stdout", "")
    assert raised.value.kind == "not-found"
    files.push(tmp_path / "a" / "b" / "stdout", "{}", make_dirs=True)
    assert (tmp_path / "a" / "b" / "stdout").read_text() == "{}"


def test_pull_of_a_missing_file_is_a_not_found_path_error(files: Files, tmp_path: Path):
    with pytest.raises(pebble.PathError) as raised:
        files.pull(tmp_path / "missing")
    assert raised.value.kind == "not-found"


def test_make_dir_with_parents_makes_them_and_may_exist_already(files: Files, tmp_path: Path):
    folder = tmp_path / "jobs" / "unreported"
    files.make_dir(folder, make_parents=True, permissions=0o750, user=OTHER_USER)
    files.make_dir(folder, make_parents=True)
    assert folder.is_dir() and mode(folder) == 0o750
    assert owner(folder) == (OTHER_USER, OTHER_GROUP)


def test_make_dir_without_parents_fails_on_an_existing_folder(files: Files, tmp_path: Path):
    files.make_dir(tmp_path / "jobs")
    with pytest.raises(pebble.PathError):
        files.make_dir(tmp_path / "jobs")


def test_make_dir_without_parents_fails_on_a_missing_parent(files: Files, tmp_path: Path):
    with pytest.raises(pebble.PathError):
        files.make_dir(tmp_path / "no" / "jobs")
    assert not (tmp_path / "no").exists()


def test_list_files_names_the_entries_and_their_types(files: Files, tmp_path: Path):
    (tmp_path / "20261130-0001").mkdir()
    (tmp_path / "notes").write_text("")
    listed = {entry.name: entry.type for entry in files.list_files(tmp_path)}
    assert listed == {
        "20261130-0001": pebble.FileType.DIRECTORY,
        "notes": pebble.FileType.FILE,
    }


def test_list_files_of_a_missing_folder_is_an_api_error_404(files: Files, tmp_path: Path):
    with pytest.raises(pebble.APIError) as raised:
        files.list_files(tmp_path / "missing")
    assert raised.value.code == 404


def test_exists_sees_files_and_folders(files: Files, tmp_path: Path):
    (tmp_path / "exit").write_text("0\n")
    assert files.exists(tmp_path / "exit") and files.exists(tmp_path)
    assert not files.exists(tmp_path / "missing")


def test_remove_path_removes_a_file_and_fails_on_a_missing_one(files: Files, tmp_path: Path):
    (tmp_path / "mark").write_text("")
    files.remove_path(tmp_path / "mark")
    assert not (tmp_path / "mark").exists()
    with pytest.raises(pebble.PathError) as raised:
        files.remove_path(tmp_path / "mark")
    assert raised.value.kind == "not-found"


def test_remove_path_recursive_removes_a_folder_tree(files: Files, tmp_path: Path):
    (tmp_path / "job" / "work").mkdir(parents=True)
    (tmp_path / "job" / "work" / "data.csv").write_text("x\n")
    files.remove_path(tmp_path / "job", recursive=True)
    assert not (tmp_path / "job").exists()
    files.remove_path(tmp_path / "job", recursive=True)  # gone already: nothing to do
