"""The registry rotated labelling's credentials: labelling follows on secret-changed.

The secret's new revision is read at once (``get_content(refresh=True)``), so the next job
(an import here) runs with the new git password and S3 keys; no job runs with the old ones.
"""

from __future__ import annotations

import dataclasses

from tests.labelling_testing import REGISTRY_PASSWORD, dataset_relation, registry_secret

IMPORT = {"version": "v1", "project": "reviews", "preset": "text-classification", "labels": "a"}
IMPORTED = {
    "project": "reviews",
    "project_id": 3,
    "version": "v1",
    "items": 2,
    "tasks_created": 2,
    "tasks_total": 2,
    "skipped_files": 0,
    "overlap": 1,
}
ROTATED = {"password": "rotated-Pa55word", "access-key": "mlopsROTATED", "secret-key": "r0t"}


def test_a_job_after_secret_changed_uses_the_new_revision(ctx, make_state, workload_jobs):
    old = registry_secret()
    rotated = dataclasses.replace(old, latest_content={**old.tracked_content, **ROTATED})
    state = make_state(relations={dataset_relation(rotated)}, secrets={rotated})
    state = ctx.run(ctx.on.secret_changed(rotated), state)
    workload_jobs.succeeds("import-version", IMPORTED)

    ctx.run(ctx.on.action("import-version", params=IMPORT), state)

    environment = workload_jobs.last.environment
    assert environment["MLOPS_REGISTRY_PASSWORD"] == ROTATED["password"]
    assert environment["AWS_ACCESS_KEY_ID"] == ROTATED["access-key"]
    assert environment["AWS_SECRET_ACCESS_KEY"] == ROTATED["secret-key"]
    assert REGISTRY_PASSWORD not in environment.values()
