"""What every exporter serves: the storage, the jobs, whether a URL answers; the HTTP server.

The jobs are read from the folder layout every charm's jobs share (``mlops_charms.jobs``:
``<jobs_dir>/<id>/job.json``, ``stdout``, ``stderr``, ``exit``), whatever ran them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mlops_workload.metrics.exposition import CONTENT_TYPE, Family, counter, gauge, render

logger = logging.getLogger(__name__)

JOB_STATES = ("running", "succeeded", "failed")
_JOB_ID = re.compile(r"^[0-9]{14}-[0-9]{4}$")
TIMEOUT = 3.0  # seconds, for each page an exporter reads


def storage(path: str) -> list[Family]:
    """The size of the filesystem holding ``path`` and what is free on it."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return []
    return [
        gauge("mlops_storage_size_bytes", "Size of the unit's storage.", usage.total),
        gauge("mlops_storage_available_bytes", "Free space on the unit's storage.", usage.free),
    ]


def _tls_context(cafile: str | None) -> ssl.SSLContext | None:
    """Verification with ``cafile`` only (a private CA), read anew: it may be renewed."""
    return ssl.create_default_context(cafile=cafile) if cafile else None


def answers(url: str, timeout: float = TIMEOUT, cafile: str | None = None) -> bool:
    """Whether ``url`` answers 2xx (an https URL verified with ``cafile`` when given)."""
    try:
        context = _tls_context(cafile)
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310
            return 200 <= response.status < 300
    except (OSError, ValueError):
        return False


def read_page(
    url: str,
    timeout: float = TIMEOUT,
    headers: dict[str, str] | None = None,
    cafile: str | None = None,
) -> str:
    """The body of ``url``; raises ``OSError`` when it does not answer 200."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - our URL
    context = _tls_context(cafile)
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
        return response.read().decode("utf-8", "replace")


class _UnixConnection(HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def read_unix_page(socket_path: str, path: str, timeout: float = TIMEOUT) -> str:
    """The body of ``path`` served over the unix socket ``socket_path``; ``OSError`` if none."""
    connection = _UnixConnection(socket_path, timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        if response.status != 200:
            raise OSError(f"HTTP {response.status}")
        return response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def _timestamp(text: str) -> float | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def job_state(folder: Path) -> tuple[str, str, float | None, float | None]:
    """A job's (state, kind, start, end) from its folder, as ``mlops_charms.jobs`` reads it."""
    try:
        record = json.loads(_read(folder / "job.json") or "")
    except json.JSONDecodeError:
        record = {}
    record = record if isinstance(record, dict) else {}
    kind = str(record.get("kind") or "unknown")
    started = _timestamp(str(record.get("started") or ""))
    ended = _read(folder / "exit")
    if ended is None:
        return "running", kind, started, None
    code, _, finished = ended.strip().partition(" ")
    end = _timestamp(finished)
    if code != "0":
        return "failed", kind, started, end
    try:
        result = json.loads(_read(folder / "stdout") or "")
    except json.JSONDecodeError:
        result = None
    return ("succeeded" if isinstance(result, dict) else "failed"), kind, started, end


class JobsCollector:
    """Jobs by state, the failed ones as a counter, and the last ended job's duration.

    The charms keep only the newest jobs, so the count of failed folders can fall: the
    counter counts the failed jobs this process has seen instead, and only grows.
    """

    def __init__(self, jobs_dir: str):
        self.jobs_dir = Path(jobs_dir)
        self._failed_seen: set[str] = set()

    def collect(self) -> list[Family]:
        by_state: dict[str, int] = dict.fromkeys(JOB_STATES, 0)
        last: tuple[float, str, float] | None = None  # end, kind, duration
        try:
            folders = sorted(p for p in self.jobs_dir.iterdir() if _JOB_ID.match(p.name))
        except OSError:
            folders = []
        for folder in folders:
            state, kind, start, end = job_state(folder)
            by_state[state] += 1
            if state == "failed":
                self._failed_seen.add(folder.name)
            if end is not None and start is not None and (last is None or end >= last[0]):
                last = (end, kind, max(0.0, end - start))
        jobs = gauge("mlops_jobs", "Jobs kept on the unit's storage, by state.")
        for state, count in by_state.items():
            jobs.add(count, {"state": state})
        families = [
            jobs,
            counter(
                "mlops_jobs_failed_total",
                "Failed jobs seen since the exporter started (and kept then).",
                len(self._failed_seen),
            ),
        ]
        if last is not None:
            duration = gauge("mlops_job_last_duration_seconds", "The last ended job's run time.")
            duration.add(last[2], {"kind": last[1]})
            families += [
                duration,
                gauge("mlops_job_last_end_timestamp_seconds", "When the last job ended.", last[0]),
            ]
        return families


class Cached:
    """A collector whose cost grows with the data, run at most every ``interval`` seconds.

    And whenever ``key`` (something cheap that changes with the data) changes.
    """

    def __init__(
        self,
        collect: Callable[[], list[Family]],
        interval: float,
        key: Callable[[], object] = lambda: None,
    ):
        self._collect = collect
        self._key = key
        self.interval = interval
        self._families: list[Family] = []
        self._at = float("-inf")
        self._seen: object = None
        self._lock = threading.Lock()

    def collect(self) -> list[Family]:
        with self._lock:
            key = self._key()
            if key != self._seen or time.monotonic() - self._at >= self.interval:
                self._families = self._collect()
                self._at, self._seen = time.monotonic(), key
            return self._families


def directory_size(path: str) -> tuple[int, int]:
    """The bytes and the number of files under ``path`` (links not followed)."""
    total = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
                files += 1
            except OSError:
                continue  # removed while walking
    return total, files


def serve(port: int, collectors: Iterable[Callable[[], list[Family]]], address: str = "") -> None:
    """Serve ``GET /metrics`` on ``port`` until killed; each scrape runs every collector."""
    collectors = list(collectors)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            started = time.monotonic()
            families: list[Family] = []
            for collect in collectors:
                try:
                    families += collect()
                except Exception:  # one broken source must not hide the others
                    logger.exception("a collector failed")
            families.append(
                gauge(
                    "mlops_exporter_scrape_duration_seconds",
                    "How long this scrape took the exporter.",
                    time.monotonic() - started,
                )
            )
            body = render(families).encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # a scrape every 15 s is not news

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    server.serve_forever()
