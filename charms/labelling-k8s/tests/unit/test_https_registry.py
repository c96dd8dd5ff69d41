"""A registry serving HTTPS: its CA is a file in the storage, named to the job's git and DVC."""

from __future__ import annotations

import pytest

from tests.labelling_testing import (
    DATA_DIR,
    REGISTRY_CA,
    dataset_relation,
    registry_secret,
)

IMPORT = {"version": "v1", "project": "reviews", "preset": "text-classification", "labels": "a"}
CA_PATH = f"{DATA_DIR}/registry-ca.pem"


@pytest.mark.parametrize("action", ["import-version", "export-annotations"])
def test_the_registry_ca_reaches_the_jobs_that_use_the_registry(
    ctx, make_state, workload_jobs, data_dir, action
):
    secret = registry_secret()
    state = make_state(relations={dataset_relation(secret, ca=REGISTRY_CA)}, secrets={secret})
    workload_jobs.succeeds(action, {"version": "v2"} if action != "import-version" else {})
    params = IMPORT if action == "import-version" else {"project": "reviews"}
    ctx.run(ctx.on.action(action, params={**params, "wait": False}), state)
    (run,) = workload_jobs.runs
    assert run.environment["GIT_SSL_CAINFO"] == CA_PATH
    assert run.environment["AWS_CA_BUNDLE"] == CA_PATH
    assert (data_dir / "registry-ca.pem").read_text() == REGISTRY_CA


def test_without_a_ca_the_job_is_as_before(ctx, make_state, workload_jobs, data_dir):
    secret = registry_secret()
    state = make_state(relations={dataset_relation(secret)}, secrets={secret})
    workload_jobs.succeeds("import-version", {})
    ctx.run(ctx.on.action("import-version", params={**IMPORT, "wait": False}), state)
    (run,) = workload_jobs.runs
    assert not {"GIT_SSL_CAINFO", "AWS_CA_BUNDLE"} & set(run.environment)
    assert not (data_dir / "registry-ca.pem").exists()
