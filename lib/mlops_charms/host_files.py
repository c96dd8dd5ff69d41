"""The host's own filesystem behind the part of ``ops.Container``'s file API jobs use.

A machine charm runs where its workload runs: its job folders (``jobs.JobRecords``) are
plain files on the host. ``HostFiles`` gives them the methods and the errors Pebble's file
API has (a missing file is ``PathError``, a missing folder to list is ``APIError`` 404), so
``JobRecords`` reads and writes them unchanged on either substrate.
"""

from __future__ import annotations

import io
import os
import pwd
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import BinaryIO, TextIO

from ops import pebble


@dataclass(frozen=True)
class HostFileInfo:
    """What ``list_files`` tells of an entry: its name and type, as Pebble's ``FileInfo``."""

    path: str
    name: str
    type: pebble.FileType


class HostFiles:
    """Files under ``/`` of this machine, through Pebble's file methods and errors."""

    def make_dir(
        self,
        path: str | PurePath,
        *,
        make_parents: bool = False,
        permissions: int | None = None,
        user: str | None = None,
        group: str | None = None,
    ) -> None:
        directory = Path(path)
        try:
            directory.mkdir(parents=make_parents, exist_ok=make_parents)
        except FileExistsError:
            raise pebble.PathError("generic-file-error", f"{path} exists") from None
        except FileNotFoundError:
            raise pebble.PathError("not-found", f"no parent folder of {path}") from None
        if permissions is not None:
            directory.chmod(permissions)
        _chown(directory, user, group)

    def push(
        self,
        path: str | PurePath,
        source: bytes | str | BinaryIO | TextIO,
        *,
        make_dirs: bool = False,
        permissions: int | None = None,
        user: str | None = None,
        group: str | None = None,
    ) -> None:
        """Write ``source`` atomically (a temporary file renamed): readers see all or nothing."""
        target = Path(path)
        if make_dirs:
            target.parent.mkdir(parents=True, exist_ok=True)
        content = source if isinstance(source, bytes | str) else source.read()
        data = content.encode() if isinstance(content, str) else content
        partial = target.with_name(f".{target.name}.partial")
        # Created with its final mode: a secret is never readable by others, not even briefly.
        mode = 0o644 if permissions is None else permissions
        try:
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        except FileNotFoundError:
            raise pebble.PathError("not-found", f"no folder for {path}") from None
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        partial.chmod(mode)
        _chown(partial, user, group)
        partial.replace(target)

    def pull(self, path: str | PurePath) -> TextIO:
        try:
            return io.StringIO(Path(path).read_text())
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise pebble.PathError("not-found", f"no file {path}") from None

    def list_files(self, path: str | PurePath) -> list[HostFileInfo]:
        folder = Path(path)
        try:
            entries = sorted(folder.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            raise pebble.APIError({}, 404, "Not Found", f"no folder {path}") from None
        return [HostFileInfo(str(entry), entry.name, _file_type(entry)) for entry in entries]

    def exists(self, path: str | PurePath) -> bool:
        return os.path.lexists(path)

    def remove_path(self, path: str | PurePath, *, recursive: bool = False) -> None:
        target = Path(path)
        if target.is_dir() and not target.is_symlink():
            if recursive:
                shutil.rmtree(target)
            else:
                target.rmdir()
        elif target.exists() or target.is_symlink():
            target.unlink()
        elif not recursive:
            raise pebble.PathError("not-found", f"no file {path}")


def _file_type(path: Path) -> pebble.FileType:
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        return pebble.FileType.SYMLINK
    if stat.S_ISDIR(mode):
        return pebble.FileType.DIRECTORY
    if stat.S_ISREG(mode):
        return pebble.FileType.FILE
    return pebble.FileType.UNKNOWN


def _chown(path: Path, user: str | None, group: str | None) -> None:
    if user is not None:
        # As Pebble: a user without a group gives the file that user's primary group.
        shutil.chown(path, user, group if group is not None else pwd.getpwnam(user).pw_gid)
    elif group is not None:
        shutil.chown(path, group=group)
