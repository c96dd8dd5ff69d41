"""A demo of the workloads, no Juju: the bundle's charms and services run on this machine.

    sudo tox -e demo            # or: tox -e demo -- --no-wait

The five charms of bundle.yaml run as one model (stack.py: each charm through ops.testing,
each container on a real Pebble, Juju's transport simulated), with the real MLflow, registry,
Label Studio and trainer. It runs one data-centric iteration (loop.py, the end-to-end test's
own steps), prints what happened, and keeps the services up until Enter so that MLflow and
Label Studio can be opened in a browser. Root: the workloads run as their rocks' users, and
the cluster's DNS lives in a private mount namespace.
"""

from __future__ import annotations

import argparse
import sys
import time

from tests.workload import cluster_dns
from tests.workload.loop.loop import (
    APPROACH_CONFIG,
    PROJECT,
    RELABEL_PROJECT,
    Loop,
    data_centric_iteration,
    print_timings,
    run_tag,
)
from tests.workload.loop.stack import APPS, MODEL, running_stack
from tests.workload.pebble_backed import shared_folder


def main() -> int:
    parser = argparse.ArgumentParser(description="A demo of the workloads, no Juju.")
    parser.add_argument("--no-wait", action="store_true", help="stop as soon as it has run")
    args = parser.parse_args()
    names = cluster_dns.service_names(MODEL, APPS)
    cluster_dns.reexec_with_cluster_dns(
        names, [sys.executable, "-m", "tests.workload.loop.demo", *sys.argv[1:]]
    )
    if not cluster_dns.inside():
        print("the demo runs the workloads as their own users: run it as root", file=sys.stderr)
        return 1
    started = time.monotonic()
    print("starting the stack (Label Studio's first start takes a few minutes) ...", flush=True)
    with shared_folder("mlops-demo-") as base, running_stack(base, APPROACH_CONFIG) as stack:
        print(f"stack up in {time.monotonic() - started:.0f} s; one data-centric iteration ...")
        loop = Loop(stack)
        seen = data_centric_iteration(loop)
        print(
            f"\nv1: {seen.tasks_created} texts imported into {PROJECT!r}, "
            f"{seen.overlap} annotators a task, {seen.annotations} annotations"
        )
        print(f"export refused by the agreement gate:\n  {seen.refusal}")
        print(f"{seen.corrected} tasks revised; exported and trained: {', '.join(seen.versions)}")
        print(f"error analysis sent {len(seen.relabel_items)} items to {RELABEL_PROJECT!r}:")
        for item in seen.relabel_items:
            print(f"  {item}")
        print("\nruns in MLflow:")
        for run in sorted(loop.runs(), key=lambda r: r["info"]["start_time"]):
            metrics = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
            accuracy = metrics.get("cv_accuracy_mean")  # error analysis logs no accuracy
            print(
                f"  {run['info']['run_name']:36} {run_tag(run, 'mlops-job') or '':15} "
                f"dataset {run_tag(run, 'dataset-version')}"
                + (f"  cv accuracy {accuracy:.3f}" if accuracy is not None else "")
            )
        print_timings(loop, time.monotonic() - started)
        mlflow = loop.model.action("tracking-k8s", "get-admin-credentials")
        studio = loop.model.action("labelling-k8s", "get-admin-credentials")
        print(
            f"\nMLflow:       {stack.mlflow_url}  (user {mlflow['username']}, "
            f"password {mlflow['password']})"
        )
        print(
            f"Label Studio: {stack.label_studio_url}  (user {studio['username']}, "
            f"password {studio['password']})"
        )
        if not args.no_wait and sys.stdin.isatty():
            input("\nPress Enter to stop the stack ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
