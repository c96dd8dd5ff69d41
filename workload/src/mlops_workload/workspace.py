"""A working clone of the data registry, and the git/dvc commands run in it.

The registry itself is a bare git repository; every dataset operation runs in a
persistent clone (the *workspace*) whose DVC cache survives between versions, so a
new version hashes and uploads only what changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BRANCH = "main"
REMOTE_NAME = "storage"
DATA_PATH = "data"
GIT_AUTHOR = ("mlops-registry", "registry@mlops.invalid")


def _dvc_binary() -> str:
    # The dvc installed beside this package, whatever PATH the caller has.
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.exists() else "dvc"


class RegistryError(Exception):
    """A dataset operation failed; the message is one line saying why."""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def read_dvc_config(text: str) -> dict[str, dict[str, str]]:
    """Parse DVC's INI-like config (``['remote "storage"']`` sections) into a dict."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1].strip().strip("'").strip()
            current = sections.setdefault(name, {})
        elif "=" in line and current is not None:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return sections


@dataclass(frozen=True)
class Workspace:
    """A clone of the registry at ``path``; ``registry`` is its git URL or path."""

    path: Path
    registry: str
    endpoint_url: str | None = None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("DVC_NO_ANALYTICS", "1")
        env["GIT_TERMINAL_PROMPT"] = "0"
        env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = GIT_AUTHOR[0]
        env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = GIT_AUTHOR[1]
        return env

    def run(self, args: list[str], *, what: str, cwd: Path | None = None) -> str:
        """Run a command in the workspace; a failure becomes a one-line RegistryError."""
        try:
            proc = subprocess.run(
                args,
                cwd=cwd or self.path,
                env=self._env(),
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError as exc:
            raise RegistryError(f"{what}: cannot run {args[0]}: {exc.strerror}") from exc
        if proc.returncode != 0:
            raise RegistryError(f"{what}: {_last_line(proc.stderr or proc.stdout)}")
        return proc.stdout

    def git(self, *args: str, what: str = "git") -> str:
        """Run git in the workspace."""
        return self.run(["git", *args], what=what)

    def dvc(self, *args: str, what: str = "dvc") -> str:
        """Run dvc in the workspace."""
        return self.run([_dvc_binary(), *args], what=what)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the workspace's lock: one dataset operation at a time."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.parent / f".{self.path.name}.lock"
        with open(lock_path, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise RegistryError("another dataset operation is running") from exc
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def sync(self) -> None:
        """Clone the registry, or bring the clone exactly to the registry's state."""
        if not (self.path / ".git").is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.run(
                ["git", "clone", "--quiet", "--branch", BRANCH, self.registry, str(self.path)],
                what="cannot clone the registry",
                cwd=self.path.parent,
            )
        else:
            self.git(
                "fetch",
                "--quiet",
                "--force",
                "--prune",
                "--prune-tags",
                "origin",
                f"+refs/heads/{BRANCH}:refs/remotes/origin/{BRANCH}",
                "+refs/tags/*:refs/tags/*",
                what="cannot fetch the registry",
            )
            self.discard_local_changes()
        if not (self.path / ".dvc" / "config").is_file():
            raise RegistryError("the registry is not bootstrapped: .dvc/config is missing")
        self._write_local_config()

    def discard_local_changes(self) -> None:
        """Drop commits and tags that were never pushed (a failed version)."""
        self.git("reset", "--quiet", "--hard", f"origin/{BRANCH}", what="cannot reset")
        local_tags = set(self.git("tag", "--list").split())
        remote_tags = {
            line.split("refs/tags/", 1)[1].removesuffix("^{}")
            for line in self.git("ls-remote", "--tags", "origin").splitlines()
            if "refs/tags/" in line
        }
        for tag in sorted(local_tags - remote_tags):
            self.git("tag", "--delete", tag, what="cannot delete an unpushed tag")

    def _write_local_config(self) -> None:
        """Pin the remote to the registry's current one for every revision.

        A version's commit carries the remote config of its time; after the remote moved,
        old versions must still be read from (and checked against) the current remote.
        """
        local = self.path / ".dvc" / "config.local"
        committed = read_dvc_config((self.path / ".dvc" / "config").read_text())
        url = committed.get(f'remote "{REMOTE_NAME}"', {}).get("url")
        lines = [f"    url = {url}"] if url else []
        if self.endpoint_url:
            lines.append(f"    endpointurl = {self.endpoint_url}")
        text = f"['remote \"{REMOTE_NAME}\"']\n" + "\n".join(lines) + "\n" if lines else ""
        if not local.exists() or local.read_text() != text:
            local.write_text(text)

    def remote(self) -> tuple[str, str | None]:
        """Return the DVC remote's URL and S3 endpoint (the local override wins)."""
        committed = read_dvc_config((self.path / ".dvc" / "config").read_text())
        local_path = self.path / ".dvc" / "config.local"
        local = read_dvc_config(local_path.read_text()) if local_path.exists() else {}
        name = committed.get("core", {}).get("remote", REMOTE_NAME)
        section = f'remote "{name}"'
        merged = {**committed.get(section, {}), **local.get(section, {})}
        if "url" not in merged:
            raise RegistryError(f"the registry has no URL for DVC remote {name!r}")
        return merged["url"], merged.get("endpointurl")

    def show(self, rev: str, path: str) -> str | None:
        """Return a file's text at a revision, or None if it is not there."""
        try:
            return self.git("show", f"{rev}:{path}")
        except RegistryError:
            return None

    def dvc_files(self, rev: str) -> list[str]:
        """Return the paths of the .dvc files at a revision."""
        names = self.git("ls-tree", "-r", "--name-only", rev, what=f"cannot read {rev}")
        return [name for name in names.splitlines() if name.endswith(".dvc")]
