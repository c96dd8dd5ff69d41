#!/usr/bin/env python3
"""Hook cost of tracking-k8s: wall time and peak memory of one hook, run as Juju runs it.

Every Juju hook is a fresh Python process, so each run here is a fresh interpreter that imports
``ops.testing`` and the charm, and runs one event through ``testing.Context`` (leader unit, the
``mlflow`` container reachable, the ``mlflow-data`` storage mounted, the admin secret created).
The wall time is the child's whole life (interpreter start, imports, the hook); CPU time and
peak RSS are the child's own (``os.wait4``: user + system time, ``ru_maxrss``). On a busy
machine the wall time swells and CPU time much less: compare the two. Not a test: it prints
a table.

The only thing replaced in the child is the network: ``MLflowAPI.is_healthy`` answers True (a
healthy local server, as on a settled unit) and any other MLflow REST call raises, so no run
waits on a socket. Two reference rows stop early: "imports" imports ``ops.testing`` and the
charm and runs no hook; "ops.testing only" imports just that, the part of every figure that a
real hook (``ops.main``) does not pay.

    python benchmarks/hook_cost.py [--runs 15] [--events config-changed update-status]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CHARM_SRC = REPO_ROOT / "charms" / "tracking-k8s" / "src"
SHARED_LIB = REPO_ROOT / "lib"
TARGET_MEDIAN_S = 0.45
# Children that stop early, to show where the time goes: no hook runs in them.
REFERENCE_ROWS = {"imports": "(imports, no hook)", "baseline": "(ops.testing only)"}

# The child. sys.path is set explicitly and the interpreter runs with -I, so PYTHONPATH and
# PYTHONDONTWRITEBYTECODE (tox sets both) do not change what is measured: a deployed charm
# keeps its bytecode, so the warm-up run compiles it once.
CHILD = r"""
import sys
src, lib, storage, event = sys.argv[1:5]
sys.path[:0] = [src, lib]
from ops import testing
if event == "baseline":
    raise SystemExit(0)

import charm
from mlops_charms.mlflow import MLflowAPI
if event == "imports":
    raise SystemExit(0)

def _no_network(self, *args, **kwargs):
    raise RuntimeError("the benchmark makes no MLflow REST calls")

MLflowAPI.is_healthy = lambda self: True
MLflowAPI._call = _no_network

container = testing.Container(
    "mlflow",
    can_connect=True,
    mounts={"mlflow-data": testing.Mount(location="/var/lib/mlflow", source=storage)},
)
admin_secret = testing.Secret(
    {"admin-password": "a" * 32, "flask-secret-key": "f" * 48}, label="mlflow-server", owner="app"
)
state = testing.State(
    leader=True,
    model=testing.Model(name="mlops"),
    containers={container},
    storages={testing.Storage("mlflow-data")},
    secrets={admin_secret},
)
ctx = testing.Context(charm.TrackingCharm)
out = ctx.run(getattr(ctx.on, event.replace("-", "_"))(), state)
if not isinstance(out.unit_status, testing.ActiveStatus):
    raise SystemExit(f"{event}: unit status {out.unit_status!r}, expected active")
"""


def run_child(event: str, storage: Path) -> tuple[float, float, int]:
    """Run one fresh interpreter for ``event``: wall seconds, CPU seconds, peak RSS in KiB."""
    argv = [sys.executable, "-I", "-c", CHILD, str(CHARM_SRC), str(SHARED_LIB), str(storage)]
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: never blocks the child
        start = time.perf_counter()
        child = subprocess.Popen([*argv, event], stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            errors.seek(0)
            message = errors.read().decode(errors="replace")
            raise SystemExit(f"{event} run failed (exit {child.returncode}):\n{message}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss  # ru_maxrss: KiB on Linux


def p90(values: list[float]) -> float:
    """The 90th percentile, interpolated."""
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def measure(event: str, runs: int) -> tuple[float, float, float, float]:
    """Median and p90 wall seconds, median CPU seconds, highest peak RSS (MiB) of ``runs``."""
    with tempfile.TemporaryDirectory(prefix="hook-cost-") as storage:
        run_child(event, Path(storage))  # warm-up: bytecode, the files on the storage
        results = [run_child(event, Path(storage)) for _ in range(runs)]
    walls = [wall for wall, _, _ in results]
    cpu = statistics.median(cpu for _, cpu, _ in results)
    return statistics.median(walls), p90(walls), cpu, max(rss for _, _, rss in results) / 1024


def main() -> int:
    """Measure each event and print the table."""
    parser = argparse.ArgumentParser(description="Hook cost of tracking-k8s, fresh processes.")
    parser.add_argument("--runs", type=int, default=15, help="runs per event (default 15)")
    parser.add_argument(
        "--events", nargs="+", default=["config-changed", "update-status"], help="events to run"
    )
    args = parser.parse_args()
    if args.runs < 2:
        parser.error("--runs must be at least 2")

    print(
        f"tracking-k8s hook cost: {args.runs} fresh processes per event, {sys.version.split()[0]}"
    )
    print(f"{'event':<22} {'median s':>9} {'p90 s':>7} {'CPU s':>7} {'peak RSS MiB':>13}")
    over_target = []
    for event in [*args.events, *REFERENCE_ROWS]:
        median, high, cpu, rss = measure(event, args.runs)
        label = REFERENCE_ROWS.get(event, event)
        print(f"{label:<22} {median:>9.3f} {high:>7.3f} {cpu:>7.3f} {rss:>13.1f}")
        if event not in REFERENCE_ROWS and median > TARGET_MEDIAN_S:
            over_target.append(event)
    print(f"target: median <= {TARGET_MEDIAN_S} s per event", end="")
    print(f"; over target: {', '.join(over_target)}" if over_target else "; all within")
    return 1 if over_target else 0


if __name__ == "__main__":
    sys.exit(main())
