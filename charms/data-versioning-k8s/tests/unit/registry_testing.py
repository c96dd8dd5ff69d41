"""Helpers for data-versioning-k8s's unit tests: exec mocks and relation builders."""

from __future__ import annotations

import json

from ops import testing

import charm

MODEL = "mlops"
STATE_DIR = "/var/lib/registry"
WORKLOAD = "/bin/mlops-workload"


def versions_output(*names: str) -> str:
    """What ``mlops-workload dataset list-versions`` prints for these versions."""
    return json.dumps(
        {
            "versions": [
                {"version": name, "number": int(name[1:]), "source": "upload", "files": 3}
                for name in names
            ]
        }
    )


def dataset_exec(
    command: str, result: dict | str | None = None, *, fail: str = ""
) -> testing.Exec:
    """A mocked ``mlops-workload dataset <command>``: JSON on stdout, or a one-line error."""
    if fail:
        return testing.Exec(
            [WORKLOAD, "dataset", command], return_code=1, stderr=f"error: {fail}\n"
        )
    stdout = result if isinstance(result, str) else json.dumps(result or {})
    return testing.Exec([WORKLOAD, "dataset", command], stdout=stdout + "\n")


BOOTSTRAP = testing.Exec(["/bin/sh", "-c"], stdout="changed\n")


def consumer_relation(access: str | None = None, **databag: str) -> testing.Relation:
    data = {"access": json.dumps(access)} if access else {}
    return testing.Relation(
        charm.DATASET_ENDPOINT,
        interface="mlops_dataset",
        remote_app_name="training",
        remote_app_data={**data, **databag},
    )


def provided(state: testing.State, relation: testing.Relation) -> dict:
    """The data this application published on ``relation``, decoded."""
    return {k: json.loads(v) for k, v in state.get_relation(relation.id).local_app_data.items()}
