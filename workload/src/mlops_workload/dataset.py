"""Dataset versions: immutable annotated git tags ``v1``, ``v2``… in the data registry.

A version exists only once its data is in the DVC remote *and* its tag is pushed:
``create_version`` uploads first and pushes the commit and the tag in one atomic
git push, so a failure at any step leaves no tag. The tag message carries the
version's metadata as one ``mlops-dataset: {json}`` line.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_workload import storage
from mlops_workload.workspace import BRANCH, DATA_PATH, RegistryError, Workspace

TAG_PATTERN = re.compile(r"^v([1-9][0-9]*)$")
METADATA_PREFIX = "mlops-dataset: "
SOURCE_KINDS = ("upload", "labelling-export", "augmentation", "rollback")
_HASH_PATTERN = re.compile(r"^\s*-?\s*md5:\s*([0-9a-f]{32}(?:\.dir)?)\s*$", re.MULTILINE)
_MISSING_SHOWN = 20


@dataclass(frozen=True)
class SourceStats:
    """What a source held: file count and total bytes."""

    files: int
    bytes: int


def version_number(name: str) -> int | None:
    """Return N for a version tag ``vN``, None for any other tag."""
    match = TAG_PATTERN.match(name)
    return int(match.group(1)) if match else None


def format_tag_message(subject: str, metadata: dict[str, Any]) -> str:
    """Render an annotated tag's message: a human subject, then the metadata line."""
    return f"{subject}\n\n{METADATA_PREFIX}{json.dumps(metadata, sort_keys=True)}\n"


def parse_tag_message(message: str) -> dict[str, Any] | None:
    """Return the metadata recorded in a tag message, or None if it has none."""
    for line in message.splitlines():
        if line.startswith(METADATA_PREFIX):
            try:
                metadata = json.loads(line[len(METADATA_PREFIX) :])
            except json.JSONDecodeError:
                return None
            return metadata if isinstance(metadata, dict) else None
    return None


def list_versions(ws: Workspace) -> list[dict[str, Any]]:
    """Return every version tag in the registry, oldest first, with its metadata."""
    fields = [
        "%(refname:short)",
        "%(objecttype)",
        "%(objectname)",
        "%(*objectname)",
        "%(creatordate:iso-strict)",
        "%(contents)",
    ]
    out = ws.git("for-each-ref", "--format=" + "%00".join(fields) + "%00", "refs/tags")
    versions = []
    for record in out.split("\0\n"):
        parts = record.split("\0")
        if len(parts) < len(fields):
            continue
        name, objecttype, objectname, peeled, created, contents = parts[: len(fields)]
        number = version_number(name)
        if number is None:
            continue
        annotated = objecttype == "tag"
        metadata = parse_tag_message(contents) if annotated else None
        versions.append(
            {
                "version": name,
                "number": number,
                "commit": peeled if annotated else objectname,
                "created": created,
                "annotated": annotated,
                "managed": metadata is not None,
                "parent": (metadata or {}).get("parent"),
                "source": (metadata or {}).get("source", "user-push"),
                "files": (metadata or {}).get("files"),
                "bytes": (metadata or {}).get("bytes"),
                "approach": (metadata or {}).get("approach"),
                "message": (metadata or {}).get("message", contents.strip()),
                "details": (metadata or {}).get("details"),
            }
        )
    return sorted(versions, key=lambda version: version["number"])


def _find_version(versions: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for version in versions:
        if version["version"] == name:
            return version
    raise RegistryError(f"no version {name} in the registry")


def mirror(source: Path, target: Path) -> SourceStats:
    """Make ``target`` hold exactly ``source``'s files, rewriting only what differs.

    Unchanged files keep their inode and mtime, so DVC does not hash them again.
    """
    if not source.is_dir():
        raise RegistryError(f"the source {source} is not a directory")
    target.mkdir(parents=True, exist_ok=True)
    wanted: set[Path] = set()
    files = total = 0
    try:
        for root, _dirs, names in os.walk(source):
            for name in names:
                src = Path(root) / name
                relative = src.relative_to(source)
                wanted.add(relative)
                dst = target / relative
                stat = src.stat()
                files += 1
                total += stat.st_size
                with contextlib.suppress(FileNotFoundError):
                    existing = dst.stat()
                    if (existing.st_size, existing.st_mtime_ns) == (
                        stat.st_size,
                        stat.st_mtime_ns,
                    ):
                        continue
                dst.parent.mkdir(parents=True, exist_ok=True)
                partial = dst.with_name(f".{dst.name}.partial")
                shutil.copy2(src, partial)
                os.replace(partial, dst)
        for root, _dirs, names in os.walk(target, topdown=False):
            for name in names:
                path = Path(root) / name
                if path.relative_to(target) not in wanted:
                    path.unlink()
            if Path(root) != target and not any(Path(root).iterdir()):
                Path(root).rmdir()
    except OSError as exc:
        raise RegistryError(f"cannot copy the source: {exc}") from exc
    return SourceStats(files=files, bytes=total)


@contextlib.contextmanager
def materialized(source: str, endpoint_url: str | None) -> Iterator[Path]:
    """Yield a local directory holding the source (a directory or an S3 prefix)."""
    if source.startswith("s3://"):
        with tempfile.TemporaryDirectory(prefix="mlops-source-") as staging:
            storage.download_prefix(source, endpoint_url, Path(staging))
            yield Path(staging)
    else:
        yield Path(source)


def _publish(ws: Workspace, name: str, subject: str, metadata: dict[str, Any]) -> str:
    """Commit, tag and push atomically; on failure the workspace forgets both."""
    try:
        ws.git("commit", "--quiet", "-m", subject, what="cannot commit the version")
        ws.git("tag", "-a", name, "-m", format_tag_message(subject, metadata))
        ws.git(
            "push",
            "--quiet",
            "--atomic",
            "origin",
            f"HEAD:refs/heads/{BRANCH}",
            f"refs/tags/{name}",
            what=f"cannot push {name} to the registry",
        )
    except RegistryError:
        ws.discard_local_changes()
        raise
    return ws.git("rev-parse", "HEAD").strip()


def _next_version(versions: list[dict[str, Any]]) -> tuple[str, str | None]:
    latest = versions[-1]["version"] if versions else None
    return f"v{(versions[-1]['number'] if versions else 0) + 1}", latest


def create_version(
    ws: Workspace,
    source: str,
    *,
    source_kind: str = "upload",
    message: str = "",
    approach: str | None = None,
    source_endpoint_url: str | None = None,
    parent: str | None = None,
    source_uri: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Snapshot ``source`` as the next version; the tag appears only after the upload.

    ``parent`` is the version the data derives from (default: the newest one), ``source_uri``
    what the metadata says it came from (default: ``source``), ``details`` more metadata of
    its kind (an augmentation's transforms and seed).
    """
    if source_kind not in SOURCE_KINDS or source_kind == "rollback":
        raise RegistryError(f"unknown source kind {source_kind!r}")
    with ws.locked():
        ws.sync()
        versions = list_versions(ws)
        name, latest = _next_version(versions)
        if parent is None:
            parent = latest
        else:
            _find_version(versions, parent)
        with materialized(source, source_endpoint_url) as directory:
            stats = mirror(directory, ws.path / DATA_PATH)
        if stats.files == 0:
            raise RegistryError(f"the source {source} holds no files")
        ws.dvc("add", "--quiet", DATA_PATH, what="cannot hash the data")
        ws.git("add", f"{DATA_PATH}.dvc", ".gitignore")
        if not ws.git("status", "--porcelain", "--untracked-files=no").strip():
            raise RegistryError(f"no change: the source is identical to {latest}")
        try:
            upload(ws)
        except RegistryError:
            ws.discard_local_changes()
            raise
        metadata = {
            "version": name,
            "parent": parent,
            "source": source_kind,
            "source_uri": source if source_uri is None else source_uri,
            "files": stats.files,
            "bytes": stats.bytes,
            "approach": approach,
            "message": message,
        }
        if details:
            metadata["details"] = details
        subject = f"{name}: {message}" if message else f"{name}: {source_kind} of {source}"
        commit = _publish(ws, name, subject, metadata)
    return {**metadata, "commit": commit}


def dir_hash(dvc_file_text: str | None) -> str | None:
    """The ``.dir`` hash of a .dvc file with exactly one directory output, else None.

    For ``data.dvc`` it is the version's content hash: equal hashes, byte-identical data.
    """
    hashes = _HASH_PATTERN.findall(dvc_file_text or "")
    return hashes[0] if len(hashes) == 1 and hashes[0].endswith(".dir") else None


def _cache_path(ws: Workspace, digest: str) -> Path:
    return ws.path / ".dvc" / "cache" / "files" / "md5" / digest[:2] / digest[2:]


def _manifest(ws: Workspace, digest: str) -> set[str] | None:
    """The object hashes a cached ``.dir`` manifest lists, or None if it is not cached."""
    try:
        entries = json.loads(_cache_path(ws, digest).read_text())
    except (OSError, ValueError):
        return None
    return {entry["md5"] for entry in entries if isinstance(entry, dict) and "md5" in entry}


def upload(ws: Workspace) -> None:
    """Put the staged version's data in the DVC remote, the manifest last.

    When the parent version (the registry's ``main``) is a directory whose manifest is in
    the workspace cache and in the remote, only the objects the parent does not have are
    uploaded, straight into DVC's remote layout (``files/md5/ab/cdef…``), then the new
    manifest: DVC treats a present manifest as a complete directory, so a failure half-way
    leaves nothing that looks complete. Otherwise ``dvc push`` does the upload (it asks the
    remote which of all the objects it lacks, which costs seconds on large datasets).
    """
    what = "cannot upload the data to the DVC remote"
    new_dir = dir_hash((ws.path / f"{DATA_PATH}.dvc").read_text())
    old_dir = dir_hash(ws.show("HEAD", f"{DATA_PATH}.dvc"))
    new_objects = _manifest(ws, new_dir) if new_dir else None
    old_objects = _manifest(ws, old_dir) if old_dir else None
    if new_dir is None or old_dir is None or new_objects is None or old_objects is None:
        ws.dvc("push", "--quiet", what=what)
        return
    url, endpoint = ws.remote()
    missing = sorted(new_objects - old_objects)
    files = [(_cache_path(ws, digest), digest) for digest in missing]
    if not storage.upload_objects(
        url, endpoint, files, [(_cache_path(ws, new_dir), new_dir)], require=old_dir
    ):
        ws.dvc("push", "--quiet", what=what)


def _tracked_files(ws: Workspace, rev: str) -> dict[str, str]:
    """Return {path: DVC hash} of every DVC-tracked file at a revision."""
    out = ws.dvc(
        "ls",
        "--recursive",
        "--dvc-only",
        "--json",
        "--show-hash",
        "--rev",
        rev,
        str(ws.path),
        what=f"cannot read the DVC metadata of {rev}",
    )
    return {
        entry["path"]: entry["md5"]
        for entry in json.loads(out or "[]")
        if not entry.get("isdir") and entry.get("md5")
    }


def _dvc_file_hashes(ws: Workspace, rev: str) -> set[str]:
    """Return the hashes named in the .dvc files at a revision (.dir manifests too)."""
    hashes: set[str] = set()
    for path in ws.dvc_files(rev):
        hashes.update(_HASH_PATTERN.findall(ws.show(rev, path) or ""))
    return hashes


def _cached_size(ws: Workspace, digest: str) -> int | None:
    try:
        return _cache_path(ws, digest).stat().st_size
    except FileNotFoundError:
        return None


def validate_version(ws: Workspace, name: str, *, synced: bool = False) -> dict[str, Any]:
    """Check that a version's tag points at a commit whose data is all in the remote."""
    if not synced:
        with ws.locked():
            ws.sync()
            return validate_version(ws, name, synced=True)
    version = _find_version(list_versions(ws), name)
    metadata_hashes = _dvc_file_hashes(ws, name)
    if not metadata_hashes:
        return {
            "version": name,
            "valid": False,
            "reason": "the version tracks no DVC data",
            "files": 0,
            "missing_count": 0,
            "missing": [],
        }
    url, endpoint = ws.remote()
    present = storage.remote_objects(url, endpoint)
    missing_manifests = sorted(h for h in metadata_hashes if h not in present)
    if missing_manifests:
        return {
            "version": name,
            "valid": False,
            "files": None,
            "reason": f"{len(missing_manifests)} DVC objects named in its .dvc files "
            "are not in the remote",
            "missing_count": len(missing_manifests),
            "missing": missing_manifests[:20],
        }
    files = _tracked_files(ws, name)
    missing = sorted(path for path, digest in files.items() if digest not in present)
    return {
        "version": name,
        "commit": version["commit"],
        "valid": not missing,
        "reason": f"{len(missing)} files are not in the DVC remote" if missing else "",
        "files": len(files),
        "missing_count": len(missing),
        "missing": missing[:_MISSING_SHOWN],
    }


def diff_versions(ws: Workspace, old: str, new: str) -> dict[str, Any]:
    """Return the paths added, removed and modified from ``old`` to ``new``, with bytes."""
    with ws.locked():
        ws.sync()
        versions = list_versions(ws)
        _find_version(versions, old)
        _find_version(versions, new)
        before, after = _tracked_files(ws, old), _tracked_files(ws, new)
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        modified = sorted(p for p in set(after) & set(before) if after[p] != before[p])
        needed = {after[p] for p in added + modified} | {before[p] for p in removed}
        sizes = {digest: _cached_size(ws, digest) for digest in needed}
        if any(size is None for size in sizes.values()):
            url, endpoint = ws.remote()
            remote = storage.remote_objects(url, endpoint)
            sizes = {digest: sizes[digest] or remote.get(digest) for digest in needed}
        unknown = sorted(d for d, size in sizes.items() if size is None)
        if unknown:
            raise RegistryError(
                f"{len(unknown)} objects of {old}..{new} are in no cache or remote"
            )

        def total(paths: list[str], side: dict[str, str]) -> int:
            return sum(sizes[side[p]] or 0 for p in paths)

        return {
            "from": old,
            "to": new,
            "added": added,
            "removed": removed,
            "modified": modified,
            "added_bytes": total(added, after),
            "removed_bytes": total(removed, before),
            "modified_bytes": total(modified, after),
        }


def rollback(
    ws: Workspace, target: str, *, message: str = "", approach: str | None = None
) -> dict[str, Any]:
    """Create the next version with exactly ``target``'s data; history is not rewritten."""
    with ws.locked():
        ws.sync()
        versions = list_versions(ws)
        _find_version(versions, target)
        name, parent = _next_version(versions)
        check = validate_version(ws, target, synced=True)
        if not check["valid"]:
            raise RegistryError(f"cannot roll back to {target}: {check['reason']}")
        current = set(ws.dvc_files("HEAD"))
        wanted = set(ws.dvc_files(target))
        if current - wanted:
            ws.git("rm", "--quiet", "--", *sorted(current - wanted))
        ws.git("checkout", target, "--", *sorted(wanted), what=f"cannot read {target}")
        if not ws.git("status", "--porcelain", "--untracked-files=no").strip():
            raise RegistryError(f"no change: {parent} already holds the data of {target}")
        target_metadata = _find_version(versions, target)
        metadata = {
            "version": name,
            "parent": parent,
            "source": "rollback",
            "source_uri": target,
            "files": check["files"],
            "bytes": target_metadata["bytes"],
            "approach": approach,
            "message": message,
        }
        subject = f"{name}: {message}" if message else f"{name}: rollback to {target}"
        commit = _publish(ws, name, subject, metadata)
    return {**metadata, "commit": commit}
