"""The cluster's DNS for a model run here: its Services' names answer with this machine.

In a Kubernetes model, each application is reached at ``<app>.<model>.svc.cluster.local``
(``mlops_charms.sidecar.service_host``): the charms publish those names on their relations, and
the consumers' workloads (a training Job, Label Studio exporting to the registry) connect to
them. ``reexec_with_cluster_dns`` re-runs the current process in a private mount namespace
where ``/etc/hosts`` also maps those names to 127.0.0.1 (every workload runs here, on its own
port); the machine's own ``/etc/hosts``, outside it, is unchanged. Root only; elsewhere the
caller skips.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tests.ubuntu_namespace import restore_captured_fds

MARK = "MLOPS_CLUSTER_DNS"


def inside() -> bool:
    return os.environ.get(MARK) == "1"


def service_names(model: str, apps: Sequence[str]) -> list[str]:
    return [f"{app}.{model}.svc.cluster.local" for app in apps]


def reexec_with_cluster_dns(names: Sequence[str], command: Sequence[str]) -> None:
    """Replace this process by ``command`` in the namespace (returns if inside, or not root)."""
    if inside() or os.geteuid() != 0:
        return
    hosts = Path(tempfile.mkdtemp(prefix="cluster-dns-")) / "hosts"
    hosts.write_text(Path("/etc/hosts").read_text() + f"127.0.0.1\t{' '.join(names)}\n")
    hosts.chmod(0o644)
    os.environ[MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    restore_captured_fds()
    arguments = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-euc",
        'mount --bind "$1" /etc/hosts; shift; exec "$@"',
        "sh",
        str(hosts),
        *command,
    ]
    os.execvp(arguments[0], arguments)  # noqa: S606
