"""What the charm reads and writes of the registry's state on the unit's storage (any substrate).

``files`` is the workload container (Pebble's file API) or the machine's own files
(``host_files.HostFiles``, the same methods and errors); ``run`` runs a short command as the
registry's user (Pebble exec, or a process on the machine). Each call is a few file
operations (no process runs) unless it says otherwise, so a hook
that changes nothing stays cheap: the tags are read from the bare repository's refs, the users'
bcrypt file is rendered only when the users changed, and the bootstrap runs only until it has
succeeded for the current script.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import ops

from mlops_charms import pebble, registry, workload_exec
from mlops_charms.dataset import VERSION_PATTERN
from mlops_charms.host_files import HostFiles
from mlops_charms.registry import ExternalBucket, RegistrySettings

Files = ops.Container | HostFiles


class RunCommand(Protocol):
    """Runs a short command as the registry's user; its stdout, or ``WorkloadError``."""

    def __call__(
        self,
        command: Sequence[str],
        *,
        what: str,
        environment: Mapping[str, str],
        working_dir: str,
        timeout: float,
    ) -> str: ...


# Folders of the storage that are the registry's own: never a version's source.
INTERNAL_FOLDERS = frozenset({"conf", "git", "run", "s3", "workspace", "jobs", "home", "backups"})
BOOTSTRAP_TIMEOUT = 120.0


def tags(files: Files, settings: RegistrySettings) -> set[str]:
    """The version tags (``vN``) of the bare repository: loose refs and packed ones."""
    repository = settings.repository_path
    names: set[str] = set()
    try:
        names |= {entry.name for entry in files.list_files(f"{repository}/refs/tags")}
    except ops.pebble.APIError:
        pass  # no tag was ever pushed (or no repository yet)
    try:
        packed = files.pull(f"{repository}/packed-refs").read()
    except ops.pebble.PathError:
        packed = ""
    for line in packed.splitlines():
        _sha, _, ref = line.partition(" ")
        if ref.startswith("refs/tags/"):
            names.add(ref.removeprefix("refs/tags/"))
    return {name for name in names if VERSION_PATTERN.match(name)}


def _backend_path(settings: RegistrySettings) -> str:
    return f"{settings.conf_dir}/backend.json"


def read_backend(files: Files, settings: RegistrySettings) -> ExternalBucket | None:
    """The external bucket the services serve, as last switched to; None: the storage."""
    try:
        text = files.pull(_backend_path(settings)).read()
    except ops.pebble.PathError:
        return None
    return ExternalBucket.from_json(text) if text.strip() else None


def write_backend(files: Files, settings: RegistrySettings, bucket: ExternalBucket | None) -> None:
    """Switch the bucket the services serve (the next reconcile restarts them); keys: 0600."""
    content = bucket.to_json() if bucket else ""
    pebble.push_if_changed(
        files,
        _backend_path(settings),
        content,
        permissions=0o600,
        user=settings.service_user,
        group=settings.service_group,
    )


def write_htpasswd(files: Files, settings: RegistrySettings) -> set[str]:
    """Render the bcrypt file when the users changed; the paths written."""
    fingerprint_path = f"{settings.conf_dir}/htpasswd.users"
    fingerprint = registry.users_fingerprint(settings.users)
    htpasswd_path = f"{settings.conf_dir}/htpasswd"
    try:
        current = files.pull(fingerprint_path).read()
    except ops.pebble.PathError:
        current = None
    if current == fingerprint and files.exists(htpasswd_path):
        return set()
    owner = settings.service_user, settings.service_group
    for path, content, mode in (
        (htpasswd_path, registry.htpasswd(settings.users), 0o640),
        (fingerprint_path, fingerprint, 0o600),
    ):
        files.push(path, content, make_dirs=True, permissions=mode, user=owner[0], group=owner[1])
    return {htpasswd_path}


def bootstrap(
    files: Files,
    settings: RegistrySettings,
    run: RunCommand,
    report: Callable[[str | None], None],
) -> None:
    """Run the bootstrap script (a process: a second or two) until it succeeded once for it.

    Success is recorded only after the script exits 0, so a failure (a full disk, a broken
    hook) is retried by the next hook; ``report`` gets the one-line reason, or None once it
    succeeded.
    """
    done_path = f"{settings.conf_dir}/bootstrap.done"
    fingerprint = registry.bootstrap_fingerprint(settings)
    try:
        if files.pull(done_path).read() == fingerprint:
            return
    except ops.pebble.PathError:
        pass
    try:
        run(
            registry.bootstrap_command(settings),
            what="bootstrap",
            environment=registry.bootstrap_environment(settings),
            working_dir=settings.state_dir,
            timeout=BOOTSTRAP_TIMEOUT,
        )
    except workload_exec.WorkloadError as error:
        # The servers still run (git answers what it has); the status says what failed.
        report(str(error).removeprefix("bootstrap failed: "))
        return
    files.push(
        done_path,
        fingerprint,
        permissions=0o644,
        user=settings.service_user,
        group=settings.service_group,
    )
    report(None)
