"""The data registry's exporter: Apache's mod_status, rclone's own metrics, the versions, sizes.

- Apache: ``/server-status?auto`` (mod_status, granted to loopback only), as ``apache_*``;
- rclone: each ``rclone serve s3``'s ``--metrics-addr`` (a unix socket), its ``rclone_*``
  series with a ``server`` label (``read-write``, ``read-only``);
- the registry: whether git answers, the dataset versions (the bare repository's ``vN`` tags,
  loose and packed), the pinned one, and the repository's and object store's sizes (cached).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mlops_workload.metrics import common
from mlops_workload.metrics.exposition import Family, gauge, parse

VERSION = re.compile(r"^v([1-9][0-9]*)$")
# mod_status' ?auto keys, as (family, type, help, scale).
_APACHE = {
    "Total Accesses": ("apache_accesses_total", "counter", "Requests Apache served.", 1),
    "Total kBytes": ("apache_sent_kilobytes_total", "counter", "Kilobytes Apache sent.", 1),
    "ServerUptimeSeconds": ("apache_uptime_seconds_total", "counter", "Apache's uptime.", 1),
}


@dataclass(frozen=True)
class RegistrySources:
    """Where the registry's exporter reads."""

    state_dir: str
    repository: str
    objects_dir: str
    health_url: str
    status_url: str
    rclone_sockets: dict[str, str]
    pinned_version_file: str | None = None
    # The CA of Apache's certificate when it serves HTTPS (the URLs are then https://).
    ca_file: str | None = None


def apache(status_url: str, ca_file: str | None = None) -> list[Family]:
    """Apache's own figures from mod_status' machine-readable page."""
    try:
        text = common.read_page(status_url, cafile=ca_file)
    except OSError:
        return [gauge("apache_up", "Whether Apache's status page answers.", 0)]
    families = [gauge("apache_up", "Whether Apache's status page answers.", 1)]
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        values[key.strip()] = value.strip()
    for key, (name, kind, help_text, scale) in _APACHE.items():
        try:
            number = float(values[key]) * scale
        except (KeyError, ValueError):
            continue
        families.append(Family(name, kind, help_text, [(name, {}, number)]))
    workers = gauge("apache_workers", "Apache's workers, by state.")
    for key, state in (("BusyWorkers", "busy"), ("IdleWorkers", "idle")):
        if values.get(key, "").isdigit():
            workers.add(int(values[key]), {"state": state})
    families.append(workers)
    return families


def rclone(sockets: dict[str, str]) -> list[Family]:
    """Each rclone server's own ``rclone_*`` series, labelled with the server's name."""
    up = gauge("mlops_registry_s3_up", "Whether an S3 server's metrics answer, by server.")
    merged: dict[str, Family] = {}
    for server, path in sorted(sockets.items()):
        try:
            text = common.read_unix_page(path, "/metrics")
        except OSError:
            up.add(0, {"server": server})
            continue
        up.add(1, {"server": server})
        for name, family in parse(text, "rclone_").items():
            into = merged.setdefault(name, Family(name, family.kind, family.help))
            into.samples += [
                (n, {**labels, "server": server}, v) for n, labels, v in family.samples
            ]
    return [up, *merged.values()]


def version_numbers(repository: str) -> list[int]:
    """The numbers of the repository's ``vN`` tags, loose and packed."""
    names = set()
    tags = Path(repository) / "refs" / "tags"
    try:
        names |= {entry.name for entry in tags.iterdir()}
    except OSError:
        pass
    try:
        packed = (Path(repository) / "packed-refs").read_text()
    except OSError:
        packed = ""
    for line in packed.splitlines():
        _sha, _, ref = line.partition(" ")
        if ref.startswith("refs/tags/"):
            names.add(ref.removeprefix("refs/tags/"))
    return sorted(int(m.group(1)) for m in map(VERSION.match, names) if m)


def versions(repository: str, pinned_file: str | None) -> list[Family]:
    """How many versions, the newest's and the pinned one's numbers (vN: N)."""
    numbers = version_numbers(repository)
    try:
        pinned = Path(pinned_file).read_text().strip() if pinned_file else ""
    except OSError:
        pinned = ""  # never pinned yet
    pinned_match = VERSION.match(pinned)
    return [
        gauge(
            "mlops_registry_dataset_versions", "Dataset versions in the registry.", len(numbers)
        ),
        gauge(
            "mlops_registry_latest_version_number",
            "N of the newest dataset version vN (0: none).",
            max(numbers, default=0),
        ),
        gauge(
            "mlops_registry_pinned_version_number",
            "N of the pinned dataset version vN (0: none pinned).",
            int(pinned_match.group(1)) if pinned_match else 0,
        ),
    ]


def sizes(repository: str, objects_dir: str) -> list[Family]:
    """The repository's and the objects' bytes on the storage: a walk of each."""
    repository_bytes, _ = common.directory_size(repository)
    object_bytes, objects = common.directory_size(objects_dir)
    return [
        gauge("mlops_registry_repository_bytes", "Size of the git repository.", repository_bytes),
        gauge(
            "mlops_registry_objects_bytes",
            "Size of the DVC remote's objects on the unit's storage (0 in an external bucket).",
            object_bytes,
        ),
        gauge("mlops_registry_objects", "DVC objects on the unit's storage.", objects),
    ]


def collectors(sources: RegistrySources, size_interval: float = 60.0) -> list:
    """What each scrape of the registry's exporter runs."""
    jobs = common.JobsCollector(f"{sources.state_dir}/jobs")
    # Walked again at most every size_interval, or when a version is added.
    cached_sizes = common.Cached(
        lambda: sizes(sources.repository, sources.objects_dir),
        size_interval,
        key=lambda: version_numbers(sources.repository),
    )
    return [
        lambda: [
            gauge(
                "mlops_registry_up",
                "Whether the registry's git server answers its health URL.",
                common.answers(sources.health_url, cafile=sources.ca_file),
            )
        ],
        lambda: apache(sources.status_url, sources.ca_file),
        lambda: rclone(sources.rclone_sockets),
        lambda: versions(sources.repository, sources.pinned_version_file),
        cached_sizes.collect,
        lambda: common.storage(sources.state_dir),
        jobs.collect,
    ]
