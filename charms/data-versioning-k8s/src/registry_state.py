"""What the charm reads and writes of the registry's state on the unit's storage, through Pebble.

Each call is a few Pebble file operations (no process runs) unless it says otherwise, so a hook
that changes nothing stays cheap: the tags are read from the bare repository's refs, the users'
bcrypt file is rendered only when the users changed, and the bootstrap runs only until it has
succeeded for the current script.
"""

from __future__ import annotations

from collections.abc import Callable

import ops

import registry
from mlops_charms import pebble, workload_exec
from mlops_charms.dataset import VERSION_PATTERN
from registry import ExternalBucket, RegistrySettings

# Folders of the storage that are the registry's own: never a version's source.
INTERNAL_FOLDERS = frozenset({"conf", "git", "run", "s3", "workspace", "jobs", "home"})
BOOTSTRAP_TIMEOUT = 120.0


def tags(container: ops.Container, settings: RegistrySettings) -> set[str]:
    """The version tags (``vN``) of the bare repository: loose refs and packed ones."""
    repository = settings.repository_path
    names: set[str] = set()
    try:
        names |= {entry.name for entry in container.list_files(f"{repository}/refs/tags")}
    except ops.pebble.APIError:
        pass  # no tag was ever pushed (or no repository yet)
    try:
        packed = container.pull(f"{repository}/packed-refs").read()
    except ops.pebble.PathError:
        packed = ""
    for line in packed.splitlines():
        _sha, _, ref = line.partition(" ")
        if ref.startswith("refs/tags/"):
            names.add(ref.removeprefix("refs/tags/"))
    return {name for name in names if VERSION_PATTERN.match(name)}


def _backend_path(settings: RegistrySettings) -> str:
    return f"{settings.conf_dir}/backend.json"


def read_backend(container: ops.Container, settings: RegistrySettings) -> ExternalBucket | None:
    """The external bucket the services serve, as last switched to; None: the storage."""
    try:
        text = container.pull(_backend_path(settings)).read()
    except ops.pebble.PathError:
        return None
    return ExternalBucket.from_json(text) if text.strip() else None


def write_backend(
    container: ops.Container, settings: RegistrySettings, bucket: ExternalBucket | None
) -> None:
    """Switch the bucket the services serve (the next reconcile restarts them); keys: 0600."""
    content = bucket.to_json() if bucket else ""
    pebble.push_if_changed(
        container,
        _backend_path(settings),
        content,
        permissions=0o600,
        user=settings.service_user,
        group=settings.service_group,
    )


def write_htpasswd(container: ops.Container, settings: RegistrySettings) -> set[str]:
    """Render the bcrypt file when the users changed; the paths written."""
    fingerprint_path = f"{settings.conf_dir}/htpasswd.users"
    fingerprint = registry.users_fingerprint(settings.users)
    htpasswd_path = f"{settings.conf_dir}/htpasswd"
    try:
        current = container.pull(fingerprint_path).read()
    except ops.pebble.PathError:
        current = None
    if current == fingerprint and container.exists(htpasswd_path):
        return set()
    owner = settings.service_user, settings.service_group
    for path, content, mode in (
        (htpasswd_path, registry.htpasswd(settings.users), 0o640),
        (fingerprint_path, fingerprint, 0o600),
    ):
        container.push(
            path, content, make_dirs=True, permissions=mode, user=owner[0], group=owner[1]
        )
    return {htpasswd_path}


def bootstrap(
    container: ops.Container,
    settings: RegistrySettings,
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
        if container.pull(done_path).read() == fingerprint:
            return
    except ops.pebble.PathError:
        pass
    try:
        workload_exec.run(
            container,
            registry.bootstrap_command(settings),
            what="bootstrap",
            environment=registry.bootstrap_environment(settings),
            user=settings.service_user,
            group=settings.service_group,
            working_dir=settings.state_dir,
            timeout=BOOTSTRAP_TIMEOUT,
        )
    except workload_exec.WorkloadError as error:
        # The servers still run (git answers what it has); the status says what failed.
        report(str(error).removeprefix("bootstrap failed: "))
        return
    container.push(
        done_path,
        fingerprint,
        permissions=0o644,
        user=settings.service_user,
        group=settings.service_group,
    )
    report(None)
