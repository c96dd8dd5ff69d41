"""The backup archive itself (mlops_workload.backup): what it holds, and what a restore refuses.

A state folder with a folder member, a live SQLite database and an optional member that is
absent. A restore gives back exactly what was backed up; an archive whose content no longer
matches its manifest, or that holds a path outside its members, is refused before anything of
the state changes. The S3 destination (what the charms use with ``s3-credentials``) runs the
real CLI against a real S3 server (rclone's) behind a private CA.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from mlops_charms import backup as charm_backup
from mlops_workload import backup
from tests.workload.s3_server import run_s3_server
from tests.workload.tls import server_certificate

MLOPS_WORKLOAD = Path(sys.executable).with_name("mlops-workload")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    root = tmp_path / "state"
    (root / "git" / "repo.git" / "refs").mkdir(parents=True)
    (root / "git" / "repo.git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "git" / "repo.git" / "refs" / "v1").write_text("0" * 40 + "\n")
    with sqlite3.connect(root / "db.sqlite3") as db:
        db.execute("create table notes (text)")
        db.execute("insert into notes values ('kept')")
    return root


def _create(root: Path) -> tuple[backup.FolderDestination, dict]:
    dest = backup.FolderDestination(str(root / "backups"))
    members = [
        backup.Member.parse(m) for m in ("git/repo.git", "db.sqlite3:sqlite", "media:optional")
    ]
    made = backup.create(
        str(root), members, dest, service="test", staging=str(root / "backups" / ".staging")
    )
    return dest, made


def _restore(root: Path, dest: backup.Destination, backup_id: str) -> dict:
    return backup.restore(str(root), dest, backup_id, staging=str(root / "backups" / ".staging"))


def _notes(root: Path) -> list[str]:
    with sqlite3.connect(root / "db.sqlite3") as db:
        return [row[0] for row in db.execute("select text from notes")]


def test_a_restore_gives_back_the_backed_up_state_and_removes_an_absent_member(state: Path):
    dest, made = _create(state)
    assert made["members"] == ["git/repo.git", "db.sqlite3", "media"]
    (state / "git" / "repo.git" / "refs" / "v2").write_text("1" * 40 + "\n")
    with sqlite3.connect(state / "db.sqlite3") as db:
        db.execute("insert into notes values ('after the backup')")
    (state / "media").mkdir()
    restored = _restore(state, dest, made["id"])
    assert restored["restored"] == made["members"]
    assert sorted(p.name for p in (state / "git" / "repo.git" / "refs").iterdir()) == ["v1"]
    assert _notes(state) == ["kept"]
    assert not (state / "media").exists()
    assert list((state / "backups" / ".staging").iterdir()) == []


def test_the_manifest_lists_the_backup_and_holds_no_path_outside_the_state(state: Path):
    dest, made = _create(state)
    (listed,) = backup.list_backups(dest)["backups"]
    assert listed["id"] == made["id"]
    assert listed["contents"] == "git/repo.git (2 files), db.sqlite3 (1 files), media (0 files)"
    manifest = json.loads((state / "backups" / f"{made['id']}.json").read_text())
    assert [m.get("absent", False) for m in manifest["members"]] == [False, False, True]


def _rewrite(state: Path, made: dict, extra: tuple[str, bytes] | None, change: bool) -> None:
    """Rewrite the archive (a member changed, or a path added) with a matching archive sha."""
    archive = state / "backups" / f"{made['id']}.tar.gz"
    out = io.BytesIO()
    with tarfile.open(archive) as old, tarfile.open(fileobj=out, mode="w:gz") as new:
        for entry in old:
            stream = old.extractfile(entry) if entry.isfile() else None
            data = stream.read() if stream is not None else None
            if change and entry.name.endswith("refs/v1"):
                data = b"f" * 40 + b"\n"
                entry.size = len(data)
            new.addfile(entry, io.BytesIO(data) if data is not None else None)
        if extra:
            info = tarfile.TarInfo(extra[0])
            info.size = len(extra[1])
            new.addfile(info, io.BytesIO(extra[1]))
    archive.write_bytes(out.getvalue())
    manifest_path = state / "backups" / f"{made['id']}.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["archive"]["size"] = len(out.getvalue())
    manifest["archive"]["sha256"] = hashlib.sha256(out.getvalue()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("extra", "change", "reason"),
    [
        (None, True, "git/repo.git differs"),
        (("data/../../escaped", b"x"), False, "holds an unexpected 'data/../../escaped'"),
        (("data/conf/keys", b"x"), False, "holds an unexpected 'data/conf/keys'"),
    ],
    ids=["a member changed", "a path climbing out", "a path outside the members"],
)
def test_a_tampered_archive_is_refused_and_the_state_is_untouched(
    state: Path, extra, change, reason
):
    dest, made = _create(state)
    with sqlite3.connect(state / "db.sqlite3") as db:
        db.execute("insert into notes values ('current')")
    _rewrite(state, made, extra, change)
    with pytest.raises(backup.BackupError, match=r"corrupt|unexpected") as refused:
        _restore(state, dest, made["id"])
    assert reason in str(refused.value)
    assert _notes(state) == ["kept", "current"]
    assert not (state / "escaped").exists() and not (state.parent / "escaped").exists()


def test_a_backup_to_an_s3_bucket_behind_a_private_ca_is_listed_and_restored(
    state: Path, tmp_path: Path
):
    # The charms' S3 destination (s3-credentials: its bucket, endpoint, keys and CA), through
    # the real CLI and a real S3 server over HTTPS.
    tls = server_certificate(tmp_path / "tls")
    with run_s3_server(tmp_path / "s3", buckets=("team-bucket",), tls=tls) as s3:
        ca_file = tmp_path / "s3-ca.pem"
        ca_file.write_text(tls.ca_pem)
        destination, environment = charm_backup.s3_destination(
            "data-versioning",
            bucket="team-bucket",
            endpoint=s3.endpoint,
            region=None,
            access_key=s3.access_key,
            secret_key=s3.secret_key,
            path_style=True,
            ca_file=str(ca_file),
        )
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **environment}
        staging = str(state / "backups" / ".staging")

        def cli(*args: str, env: dict[str, str] = env) -> dict:
            command = [str(MLOPS_WORKLOAD), "backup", *args, "--destination", destination]
            ran = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            assert ran.returncode == 0, ran.stderr
            return json.loads(ran.stdout)

        root = ["--root", str(state), "--staging", staging]
        made = cli(
            "create",
            *root,
            "--service",
            "test",
            "--app",
            "a",
            "--unit",
            "a/0",
            "--member",
            "git/repo.git",
            "--member",
            "db.sqlite3:sqlite",
        )
        stored = s3.root / "team-bucket" / "backups" / "data-versioning"
        assert {p.name for p in stored.iterdir()} == {f"{made['id']}.tar.gz", f"{made['id']}.json"}
        with sqlite3.connect(state / "db.sqlite3") as db:
            db.execute("insert into notes values ('after the backup')")
        assert [b["id"] for b in cli("list")["backups"]] == [made["id"]]
        restored = cli("restore", *root, "--id", made["id"])
        assert restored["restored"] == ["git/repo.git", "db.sqlite3"]
        assert _notes(state) == ["kept"]
        # Without the CA the bucket is not trusted: the listing fails, saying so.
        untrusted = {k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"} | {
            "AWS_MAX_ATTEMPTS": "1"
        }
        command = [str(MLOPS_WORKLOAD), "backup", "list", "--destination", destination]
        refused = subprocess.run(
            command, env=untrusted, capture_output=True, text=True, check=False
        )
        assert refused.returncode == 1 and "certificate" in refused.stderr.lower(), refused.stderr
