"""MLflow as tracking-k8s runs it by default: start time and memory (prints, asserts nothing).

Runs the charm's Pebble layer (from an ops.testing run, default config) under a real Pebble,
waits for the ready check, then sums the resident memory of the server's process tree.

    PYTHONPATH=.:lib:charms/tracking-k8s/src python benchmarks/tracking_workload.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tests.workload.processes import run_pebble
from tests.workload.tracking.test_mlflow_workload import start_server


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MB (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total_kb, pending = 0, [pid]
    while pending:
        current = pending.pop()
        pending.extend(children.get(current, []))
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        total_kb += next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")),
            0,
        )
    return total_kb / 1024


def main() -> None:
    with tempfile.TemporaryDirectory() as base_name:
        base = Path(base_name)
        (base / "mlflow-data").mkdir()
        with run_pebble(base) as daemon:
            started = time.monotonic()
            start_server(daemon, base / "mlflow-data")
            ready_s = time.monotonic() - started
            time.sleep(5)  # let the worker settle after its first requests
            service_pid = _server_pid()
            print(f"ready after (first start, SQLite): {ready_s:.1f} s")
            print(f"RSS of the server's process tree:  {tree_rss_mb(service_pid):.0f} MB")


def _server_pid() -> int:
    """The PID of the `mlflow server` process Pebble started."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"server" in argv and any(arg.endswith(b"mlflow") for arg in argv[:2]):
            return int(entry.name)
    raise RuntimeError("no mlflow server process found")


if __name__ == "__main__":
    main()
