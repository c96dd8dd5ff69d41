"""Label Studio as labelling-k8s runs it: start times, memory, and the labelling commands.

Runs the charm's Pebble layer (from an ops.testing run, default config) under a real Pebble
next to a real data registry, then prints (asserts nothing):

- the first start (migrations into a fresh SQLite) and a warm restart, until /health is up;
- the resident memory of the server's processes (uWSGI master and worker);
- the wall time of import-version, consistency-report and export-annotations for a version of
  ``--items`` text files, each item labelled by two annotators.

    PYTHONPATH=.:lib python benchmarks/labelling_workload.py --items 500
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tests.workload.labelling.harness import label_studio, label_studio_layer, run_label_studio
from tests.workload.registry.harness import chown_tree, start_registry


def _timed(label: str, run) -> dict:
    started = time.monotonic()
    result = run()
    assert result.exit_code == 0, result.stderr
    print(f"{label:<34} {time.monotonic() - started:6.1f} s")
    return result.json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=200)
    items = parser.parse_args().items
    with start_registry() as registry, tempfile.TemporaryDirectory() as base:
        source = registry.source_dir("bench")
        for i in range(items):
            (source / f"item-{i:05d}.txt").write_text(f"review number {i}: " + "words " * 20)
        chown_tree(source)
        assert registry.workload("create-version", "--source", str(source)).exit_code == 0
        access = label_studio.RegistryAccess(
            git_url=registry.settings.git_url,
            username=registry.labelling.username,
            password=registry.labelling.password,
            dvc_endpoint=registry.settings.remote_endpoint,
            s3_access_key=registry.labelling.s3_access_key,
            s3_secret_key=registry.labelling.s3_secret_key,
        )
        with run_label_studio(Path(base), migrated=False) as ls:
            print(f"{'first start (migrations, SQLite)':<34} {ls.first_start_seconds:6.1f} s")
            time.sleep(5)  # let the worker settle after its first requests
            print(f"{'RSS (uWSGI master + 1 worker)':<34} {ls.service_rss_kib() / 1024:6.0f} MB")
            client = ls.daemon.client
            started = time.monotonic()
            client.restart_services([label_studio.SERVICE])
            ls.daemon.wait_for_check(label_studio_layer.READY_CHECK, timeout=240)
            while not label_studio.is_healthy(ls.settings):
                time.sleep(0.2)
            print(f"{'warm restart':<34} {time.monotonic() - started:6.1f} s")

            imported = _timed(
                f"import-version ({items} items)",
                lambda: ls.labelling(
                    access,
                    "import-version",
                    "--project",
                    "bench",
                    "--version",
                    "v1",
                    "--preset",
                    "text-classification",
                    "--labels",
                    "pos,neg",
                    "--overlap",
                    "2",
                ),
            )
            users = [
                ls.api("POST", "/api/users/", {"email": f"{n}@bench.test", "username": n})["id"]
                for n in ("ann", "bob")
            ]
            tasks = ls.api(
                "GET",
                f"/api/projects/{imported['project_id']}/export?exportType=JSON"
                "&download_all_tasks=true",
            )
            for index, task in enumerate(tasks):
                for user, choice in zip(
                    users, ("pos", "pos" if index % 7 else "neg"), strict=True
                ):
                    result = [
                        {
                            "from_name": "label",
                            "to_name": "text",
                            "type": "choices",
                            "value": {"choices": [choice]},
                        }
                    ]
                    ls.api(
                        "POST",
                        f"/api/tasks/{task['id']}/annotations",
                        {"completed_by": user, "result": result},
                    )
            report = _timed(
                "consistency-report",
                lambda: ls.labelling(access, "consistency-report", "--project", "bench"),
            )
            print(f"{'  krippendorff alpha':<34} {report['krippendorff_alpha']}")
            _timed(
                "export-annotations",
                lambda: ls.labelling(access, "export-annotations", "--project", "bench"),
            )


if __name__ == "__main__":
    main()
