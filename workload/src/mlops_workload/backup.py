"""Backups of a service's state on the unit's storage: one compressed archive plus a manifest.

Every service charm backs up the same way (``mlops-workload backup create|list|restore``); the
charm says which paths of its storage are the state (``--member``), which of them are SQLite
databases (copied with sqlite3's online backup API, consistent while the service runs), and
what the backup leaves out and why (``--excluded``: a PostgreSQL database or an S3 bucket the
service only points at is backed up by its own charm).

A backup ``<id>`` at its destination is two objects: ``<id>.tar.gz`` (the members under
``data/``) and ``<id>.json``, the manifest, written last: a backup without a manifest is
incomplete and never listed. The manifest holds no secret: service, app, unit, creation time,
format, the workload's versions, each member's files, bytes and a digest of its content, the
archive's size and sha256, and what is not included.

The destination is a folder (the unit's storage) or ``s3://bucket/prefix`` with the keys in
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` and the endpoint, region, addressing style and
CA bundle in ``MLOPS_BACKUP_S3_ENDPOINT``, ``MLOPS_BACKUP_S3_REGION``,
``MLOPS_BACKUP_S3_PATH_STYLE`` and ``AWS_CA_BUNDLE``.

A restore checks the archive's checksum, unpacks it into a staging folder next to the state,
checks every member's digest, and only then swaps each member in (the old one moves aside and
is deleted at the end; a failed swap puts back what it moved). Anything wrong before the swap
leaves the current state untouched; the error says why in one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import IO, Any

from mlops_workload.workspace import RegistryError

FORMAT = 1
ID_PATTERN = re.compile(r"^[0-9]{8}T[0-9]{6}Z(-[0-9]{1,3})?$")
ARCHIVE_SUFFIX = ".tar.gz"
MANIFEST_SUFFIX = ".json"
DATA = "data"
_CHUNK = 1 << 20
_COMPRESS_LEVEL = 3  # a DVC object or a media file is mostly compressed already


class BackupError(RegistryError):
    """A backup or restore that cannot go on; the message is one line."""


@dataclass(frozen=True)
class Member:
    """A path of the state, relative to the root: a folder or file, or a SQLite database.

    An optional member may be absent: the backup records that, and its restore removes it.
    """

    path: str
    sqlite: bool = False
    optional: bool = False

    @classmethod
    def parse(cls, text: str) -> Member:
        """``PATH``, ``PATH:sqlite``, ``PATH:optional`` or ``PATH:sqlite,optional``."""
        path, _, kinds = text.partition(":")
        flags = set(kinds.split(",")) - {""}
        if flags - {"sqlite", "optional"}:
            raise BackupError(f"unknown member kind {kinds!r} (sqlite, optional)")
        return cls(_relative(path), sqlite="sqlite" in flags, optional="optional" in flags)


def _relative(path: str) -> str:
    pure = PurePosixPath(path)
    if pure.is_absolute() or not pure.parts or ".." in pure.parts or str(pure) == ".":
        raise BackupError(f"a member must be a relative path inside the state: {path!r}")
    return str(pure)


# --- destinations ----------------------------------------------------------------------------


class Destination:
    """Where backups are kept: ``get``/``put`` whole objects by name, ``names`` lists them."""

    url: str

    def names(self) -> list[str]:
        raise NotImplementedError

    def read_text(self, name: str) -> str | None:
        raise NotImplementedError

    def put_file(self, name: str, source: Path) -> None:
        raise NotImplementedError

    def put_text(self, name: str, text: str) -> None:
        raise NotImplementedError

    def fetch(self, name: str, target: Path) -> Path:
        """A local path of the object ``name`` (downloaded to ``target`` when remote)."""
        raise NotImplementedError


class FolderDestination(Destination):
    """A folder on the unit's storage."""

    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.url = str(self.folder)

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.name for p in self.folder.iterdir() if p.is_file())

    def read_text(self, name: str) -> str | None:
        try:
            return (self.folder / name).read_text()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def put_file(self, name: str, source: Path) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{name}.partial"
        try:
            os.replace(source, partial)  # the staging folder is on the same disk: no copy
        except OSError:
            shutil.copyfile(source, partial)
        os.replace(partial, self.folder / name)

    def put_text(self, name: str, text: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{name}.partial"
        partial.write_text(text)
        os.replace(partial, self.folder / name)

    def fetch(self, name: str, target: Path) -> Path:
        del target  # read where it is
        path = self.folder / name
        if not path.is_file():
            raise BackupError(f"{name} is missing at {self.url}")
        return path


class S3Destination(Destination):
    """``s3://bucket/prefix`` through boto3 (installed with dvc-s3 wherever this package is)."""

    def __init__(self, url: str):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise BackupError(f"no bucket in {url!r}")
        self.url = url
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # only S3 destinations pay for it
            from botocore.config import Config

            path_style = os.environ.get("MLOPS_BACKUP_S3_PATH_STYLE", "")
            style = {"true": "path", "false": "virtual"}.get(path_style, "auto")
            self._client = boto3.client(
                "s3",
                endpoint_url=os.environ.get("MLOPS_BACKUP_S3_ENDPOINT") or None,
                region_name=os.environ.get("MLOPS_BACKUP_S3_REGION") or None,
                config=Config(
                    s3={"addressing_style": style},
                    retries={"max_attempts": 3},
                    connect_timeout=15,
                ),
            )
        return self._client

    def _call(self, what: str, function, *args, **kwargs) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return function(*args, **kwargs)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "error")
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError(what) from None
            raise BackupError(f"{what} at {self.url}: {code}") from None
        except BotoCoreError as error:
            raise BackupError(f"{what} at {self.url}: {error}") from None

    def names(self) -> list[str]:
        names: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call(
            "cannot list the backups",
            lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=self.prefix)),
        )
        for page in pages:
            for entry in page.get("Contents", []):
                name = entry["Key"][len(self.prefix) :]
                if "/" not in name:
                    names.append(name)
        return sorted(names)

    def read_text(self, name: str) -> str | None:
        try:
            answer = self._call(
                f"cannot read {name}",
                self.client.get_object,
                Bucket=self.bucket,
                Key=self.prefix + name,
            )
        except FileNotFoundError:
            return None
        return answer["Body"].read().decode()

    def put_file(self, name: str, source: Path) -> None:
        self._call(
            f"cannot upload {name}",
            self.client.upload_file,
            str(source),
            self.bucket,
            self.prefix + name,
        )

    def put_text(self, name: str, text: str) -> None:
        self._call(
            f"cannot upload {name}",
            self.client.put_object,
            Bucket=self.bucket,
            Key=self.prefix + name,
            Body=text.encode(),
        )

    def fetch(self, name: str, target: Path) -> Path:
        try:
            self._call(
                f"cannot download {name}",
                self.client.download_file,
                self.bucket,
                self.prefix + name,
                str(target),
            )
        except FileNotFoundError:
            raise BackupError(f"{name} is missing at {self.url}") from None
        return target


def destination(url: str) -> Destination:
    """The destination ``url`` names: ``s3://bucket/prefix`` or an absolute folder."""
    if url.startswith("s3://"):
        return S3Destination(url)
    if not url.startswith("/"):
        raise BackupError(f"a destination is s3://bucket/prefix or an absolute folder: {url!r}")
    return FolderDestination(url)


# --- digests ---------------------------------------------------------------------------------


class _HashingReader:
    """A file read through, its sha256 taken on the way (tarfile reads it once)."""

    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        return data


class _HashingWriter:
    """The archive written through, its size and sha256 taken on the way."""

    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.stream.write(data)

    def flush(self) -> None:
        self.stream.flush()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Tally:
    """A member's files, bytes and digest: sha256 over its sorted (path, sha256) pairs."""

    def __init__(self) -> None:
        self.entries: dict[str, str] = {}
        self.bytes = 0

    def add(self, relative: str, sha256: str, size: int) -> None:
        self.entries[relative] = sha256
        self.bytes += size

    def summary(self, member: Member) -> dict[str, Any]:
        digest = hashlib.sha256()
        for relative in sorted(self.entries):
            digest.update(f"{relative}\0{self.entries[relative]}\n".encode())
        return {
            "path": member.path,
            "kind": "sqlite" if member.sqlite else "files",
            "files": len(self.entries),
            "bytes": self.bytes,
            "sha256": digest.hexdigest(),
        }


def _walk(top: Path) -> Iterator[tuple[Path, str]]:
    """Every folder and file under ``top`` (``top`` itself first), sorted, with its path."""
    yield top, ""
    for root, dirs, names in os.walk(top):
        dirs.sort()
        base = Path(root)
        for name in [*sorted(dirs), *sorted(names)]:
            path = base / name
            yield path, str(path.relative_to(top))


def _tally_tree(top: Path, member: Member) -> dict[str, Any]:
    tally = _Tally()
    if top.is_file():
        tally.add("", _file_sha256(top), top.stat().st_size)
    else:
        for path, relative in _walk(top):
            if path.is_file() and not path.is_symlink():
                tally.add(relative, _file_sha256(path), path.stat().st_size)
    return tally.summary(member)


# --- create ----------------------------------------------------------------------------------


def _new_id(dest: Destination) -> str:
    base = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    taken = set(dest.names())
    for suffix in ["", *(f"-{n}" for n in range(2, 1000))]:
        if f"{base}{suffix}{MANIFEST_SUFFIX}" not in taken:
            return base + suffix
    raise BackupError("too many backups in one second")


def _sqlite_copy(source: Path, target: Path) -> int | None:
    """A consistent copy of a live SQLite database (online backup API); its user_version."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src:
            with contextlib.closing(sqlite3.connect(target)) as dst:
                src.backup(dst)
            return int(src.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as error:
        raise BackupError(f"cannot copy the database {source.name}: {error}") from None


def _add_member(
    archive: tarfile.TarFile, root: Path, member: Member, staging: Path
) -> dict[str, Any]:
    """Add ``member`` under ``data/``; its summary (files, bytes, digest)."""
    source = root / member.path
    if not source.exists():
        if member.optional:
            return {**_Tally().summary(member), "absent": True}
        raise BackupError(f"{member.path} does not exist in {root}")
    schema = None
    if member.sqlite:
        copy = staging / "sqlite" / member.path
        schema = _sqlite_copy(source, copy)
        source = copy
    tally = _Tally()
    arc_root = f"{DATA}/{member.path}"
    for path, relative in _walk(source):
        name = f"{arc_root}/{relative}" if relative else arc_root
        if path.is_symlink():
            continue  # a state folder holds no links of value; never follow one out
        info = archive.gettarinfo(str(path), arcname=name)
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if path.is_file():
            with path.open("rb") as stream:
                reader = _HashingReader(stream)
                archive.addfile(info, reader)  # type: ignore[arg-type]
            tally.add(relative, reader.digest.hexdigest(), info.size)
        elif path.is_dir():
            archive.addfile(info)
    summary = tally.summary(member)
    if schema is not None:
        summary["user_version"] = schema
    return summary


def _versions(packages: Sequence[str]) -> dict[str, str]:
    versions = {}
    for package in ("mlops-workload", *packages):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def create(
    root: str,
    members: Sequence[Member],
    dest: Destination,
    *,
    service: str,
    app: str = "",
    unit: str = "",
    staging: str,
    excluded: Sequence[str] = (),
    packages: Sequence[str] = (),
    workload: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Back up ``members`` of ``root`` to ``dest``; the manifest's summary."""
    if not members:
        raise BackupError("nothing to back up")
    root_path = Path(root)
    backup_id = _new_id(dest)
    work = Path(staging)
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"backup-{backup_id}-", dir=work) as scratch_dir:
        scratch = Path(scratch_dir)
        archive_path = scratch / f"{backup_id}{ARCHIVE_SUFFIX}"
        with archive_path.open("wb") as raw:
            writer = _HashingWriter(raw)
            with tarfile.open(
                fileobj=writer,  # type: ignore[arg-type]
                mode="w:gz",
                compresslevel=_COMPRESS_LEVEL,
                format=tarfile.PAX_FORMAT,
            ) as archive:
                summaries = [_add_member(archive, root_path, m, scratch) for m in members]
        manifest = {
            "format": FORMAT,
            "id": backup_id,
            "service": service,
            "app": app,
            "unit": unit,
            "created": f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}",
            "workload": {**_versions(packages), **(workload or {})},
            "archive": {
                "name": archive_path.name,
                "size": writer.size,
                "sha256": writer.digest.hexdigest(),
            },
            "members": summaries,
            "files": sum(s["files"] for s in summaries),
            "bytes": sum(s["bytes"] for s in summaries),
            "excluded": [_excluded(text) for text in excluded],
        }
        dest.put_file(archive_path.name, archive_path)
        # The manifest last: its presence says the backup is complete.
        dest.put_text(f"{backup_id}{MANIFEST_SUFFIX}", json.dumps(manifest, indent=1) + "\n")
    return {
        "id": backup_id,
        "destination": dest.url,
        "size": manifest["archive"]["size"],
        "files": manifest["files"],
        "bytes": manifest["bytes"],
        "members": [s["path"] for s in summaries],
        "excluded": manifest["excluded"],
    }


def _excluded(text: str) -> dict[str, str]:
    what, _, why = text.partition(":")
    return {"what": what.strip(), "why": why.strip()}


# --- list ------------------------------------------------------------------------------------


def read_manifest(dest: Destination, backup_id: str) -> dict[str, Any]:
    """The manifest of ``backup_id``; ``BackupError`` when there is none or it is unreadable."""
    if not ID_PATTERN.match(backup_id):
        raise BackupError(f"not a backup id: {backup_id!r} (list-backups shows them)")
    text = dest.read_text(f"{backup_id}{MANIFEST_SUFFIX}")
    if text is None:
        raise BackupError(f"no backup {backup_id} at {dest.url}")
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError:
        raise BackupError(f"the manifest of {backup_id} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("id") != backup_id:
        raise BackupError(f"the manifest of {backup_id} is not a backup manifest")
    if manifest.get("format") != FORMAT:
        raise BackupError(f"backup {backup_id} has format {manifest.get('format')}, not {FORMAT}")
    return manifest


def list_backups(dest: Destination) -> dict[str, Any]:
    """Every complete backup at ``dest``, newest first, as list-backups shows them."""
    listed = []
    for name in reversed(dest.names()):
        backup_id = name.removesuffix(MANIFEST_SUFFIX)
        if name == backup_id or not ID_PATTERN.match(backup_id):
            continue
        try:
            manifest = read_manifest(dest, backup_id)
        except BackupError as error:
            listed.append({"id": backup_id, "error": str(error)})
            continue
        listed.append(
            {
                "id": backup_id,
                "created": manifest.get("created", ""),
                "service": manifest.get("service", ""),
                "unit": manifest.get("unit", ""),
                "size": manifest.get("archive", {}).get("size", 0),
                "files": manifest.get("files", 0),
                "bytes": manifest.get("bytes", 0),
                "contents": ", ".join(
                    f"{m.get('path')} ({m.get('files')} files)" for m in manifest["members"]
                ),
                "excluded": ", ".join(e.get("what", "") for e in manifest.get("excluded", [])),
            }
        )
    return {"destination": dest.url, "backups": listed}


# --- restore ---------------------------------------------------------------------------------


def _check_archive(path: Path, manifest: dict[str, Any]) -> None:
    expected = manifest.get("archive", {})
    if path.stat().st_size != expected.get("size"):
        raise BackupError(
            f"backup {manifest['id']} is corrupt: the archive has {path.stat().st_size} bytes, "
            f"the manifest says {expected.get('size')}"
        )
    if _file_sha256(path) != expected.get("sha256"):
        raise BackupError(f"backup {manifest['id']} is corrupt: the archive's sha256 differs")


def _unpack(path: Path, target: Path, members: list[Member], backup_id: str) -> None:
    allowed = [f"{DATA}/{m.path}" for m in members]
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            for entry in archive:
                name = PurePosixPath(entry.name)
                inside = any(entry.name == a or entry.name.startswith(a + "/") for a in allowed)
                if not inside or ".." in name.parts or not (entry.isfile() or entry.isdir()):
                    raise BackupError(f"backup {backup_id} holds an unexpected {entry.name!r}")
                entry.mode &= 0o755  # no set-id bits, no group or other write
                entry.uid, entry.gid = os.getuid(), os.getgid()  # whoever restores owns it
                if hasattr(tarfile, "data_filter"):
                    archive.extract(entry, target, filter="data")
                else:  # Python < 3.11.4: the checks above are the data filter's that matter
                    archive.extract(entry, target)
    except (tarfile.TarError, EOFError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BackupError(f"backup {backup_id} is corrupt: {reason}") from None


def restore(
    root: str,
    dest: Destination,
    backup_id: str,
    *,
    staging: str,
    reset: Sequence[str] = (),
) -> dict[str, Any]:
    """Restore ``backup_id`` from ``dest`` into ``root``; what was restored."""
    manifest = read_manifest(dest, backup_id)
    members = [
        Member(
            _relative(str(m.get("path", ""))),
            sqlite=m.get("kind") == "sqlite",
            optional=bool(m.get("absent")),
        )
        for m in manifest.get("members", [])
    ]
    if not members:
        raise BackupError(f"backup {backup_id} has no members")
    root_path = Path(root)
    work = Path(staging)
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"restore-{backup_id}-", dir=work) as scratch_dir:
        scratch = Path(scratch_dir)
        archive = dest.fetch(f"{backup_id}{ARCHIVE_SUFFIX}", scratch / "archive.tar.gz")
        _check_archive(archive, manifest)
        unpacked = scratch / "new"
        _unpack(archive, unpacked, members, backup_id)
        if archive.parent == scratch:
            archive.unlink()  # a downloaded copy: its space is needed
        for member, recorded in zip(members, manifest["members"], strict=True):
            path = unpacked / DATA / member.path
            if recorded.get("absent"):
                continue  # absent when backed up: the restore removes it
            if not path.exists():
                raise BackupError(f"backup {backup_id} is corrupt: {member.path} is missing")
            if _tally_tree(path, member)["sha256"] != recorded.get("sha256"):
                raise BackupError(f"backup {backup_id} is corrupt: {member.path} differs")
        _swap(root_path, unpacked / DATA, scratch / "old", members)
        for path in reset:
            _remove(root_path / _relative(path))
    return {
        "id": backup_id,
        "restored": [m.path for m in members],
        "files": manifest.get("files", 0),
        "bytes": manifest.get("bytes", 0),
        "created": manifest.get("created", ""),
    }


def _sidecars(path: Path) -> list[Path]:
    """A SQLite database's journal files, stale once the database is replaced."""
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def _swap(root: Path, new: Path, old: Path, members: list[Member]) -> None:
    """Move each member's current state aside and the new one in; undo all on a failure."""
    moved: list[tuple[Path, Path | None]] = []  # (live path, where its old state went)
    try:
        for member in members:
            live = root / member.path
            live.parent.mkdir(parents=True, exist_ok=True)
            aside = old / member.path
            aside.parent.mkdir(parents=True, exist_ok=True)
            extra = _sidecars(live) if member.sqlite else []
            for stale in extra:
                if stale.exists():
                    os.replace(stale, aside.with_name(stale.name))
            owner = _owner(live)
            if live.exists() or live.is_symlink():
                os.replace(live, aside)
                moved.append((live, aside))
            else:
                moved.append((live, None))
            if member.optional and not (new / member.path).exists():
                continue  # absent in the backup
            _chown_tree(new / member.path, owner)
            os.replace(new / member.path, live)
    except OSError as error:
        for live, aside in reversed(moved):
            with contextlib.suppress(OSError):
                if live.exists():
                    _remove(live)
                if aside is not None:
                    os.replace(aside, live)
        raise BackupError(f"cannot swap the restored state in: {error}") from None


def _owner(live: Path) -> tuple[int, int]:
    """Who owns ``live`` (or the folder it goes in): the restored files get the same owner."""
    probe = live if live.exists() else live.parent
    info = probe.stat()
    return info.st_uid, info.st_gid


def _chown_tree(top: Path, owner: tuple[int, int]) -> None:
    """Give a restored tree to the state's owner (when restoring as root, for its service)."""
    if os.geteuid() != 0 or owner == (os.geteuid(), os.getegid()):
        return
    for path, _relative_path in _walk(top):
        os.chown(path, *owner, follow_symlinks=False)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# --- the command line ------------------------------------------------------------------------


def register(groups: Any) -> None:
    """``mlops-workload backup create|list|restore``."""
    group = groups.add_parser("backup", help="back up and restore a service's state")
    commands = group.add_subparsers(dest="command", required=True)
    create_cmd = commands.add_parser("create", help="back up the state")
    create_cmd.add_argument("--root", required=True, help="the state's folder")
    create_cmd.add_argument(
        "--member", action="append", required=True, help="PATH or PATH:sqlite, relative"
    )
    create_cmd.add_argument("--destination", required=True)
    create_cmd.add_argument("--staging", required=True, help="a folder on the state's disk")
    create_cmd.add_argument("--service", required=True)
    create_cmd.add_argument("--app", default="")
    create_cmd.add_argument("--unit", default="")
    create_cmd.add_argument("--excluded", action="append", default=[], help="WHAT: WHY")
    create_cmd.add_argument(
        "--package", action="append", default=[], help="record this package's version"
    )
    create_cmd.add_argument(
        "--workload", action="append", default=[], help="KEY=VALUE: a version to record"
    )
    list_cmd = commands.add_parser("list", help="the backups at a destination")
    list_cmd.add_argument("--destination", required=True)
    restore_cmd = commands.add_parser("restore", help="restore a backup into the state")
    restore_cmd.add_argument("--root", required=True)
    restore_cmd.add_argument("--destination", required=True)
    restore_cmd.add_argument("--staging", required=True)
    restore_cmd.add_argument("--id", required=True, dest="backup_id")
    restore_cmd.add_argument(
        "--reset", action="append", default=[], help="a path removed after the restore"
    )


def run(args: Any) -> dict[str, Any]:
    """Run a parsed ``backup`` command."""
    dest = destination(args.destination)
    if args.command == "list":
        return list_backups(dest)
    if args.command == "restore":
        return restore(args.root, dest, args.backup_id, staging=args.staging, reset=args.reset)
    workload = dict(item.partition("=")[::2] for item in args.workload)
    return create(
        args.root,
        [Member.parse(text) for text in args.member],
        dest,
        service=args.service,
        app=args.app,
        unit=args.unit,
        staging=args.staging,
        excluded=args.excluded,
        packages=args.package,
        workload=workload,
    )
