"""The actions: validated params, the workload command they run, results and failures."""

from __future__ import annotations

import json

import pytest
from labelling_testing import (
    ADMIN_PASSWORD,
    ADMIN_TOKEN,
    REGISTRY_PASSWORD,
    REGISTRY_URL,
    REGISTRY_USER,
    S3_ENDPOINT,
    dataset_relation,
    registry_secret,
    workload_exec,
)
from ops import testing

IMPORTED = {
    "project": "reviews",
    "project_id": 3,
    "version": "v1",
    "items": 6,
    "tasks_created": 6,
    "tasks_total": 6,
    "skipped_files": 3,
    "overlap": 2,
}
EXPORTED = {
    "version": "v2",
    "parent": "v1",
    "project": "reviews",
    "labels_path": "labels/reviews.jsonl",
    "tasks_exported": 6,
    "annotations": 12,
    "commit": "0123abcd",
}
REPORT = {
    "project": "reviews",
    "tasks": 6,
    "krippendorff_alpha": 0.125,
    "mean_observed_agreement": 0.5,
    "threshold": 0.5,
    "inconsistent": [{"item": "texts/item-1.txt", "labels": []}],
    "ambiguous": [],
}


@pytest.fixture
def registry_state(make_state):
    """A unit related to the registry with write access, running the given execs."""

    def make(*execs: testing.Exec, **kwargs) -> testing.State:
        secret = registry_secret()
        return make_state(
            relations={dataset_relation(secret)}, secrets={secret}, execs=set(execs), **kwargs
        )

    return make


def _arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_get_admin_credentials_returns_the_secret(ctx, make_state):
    ctx.run(ctx.on.action("get-admin-credentials"), make_state())
    assert ctx.action_results == {
        "username": "admin@labelling.mlops.invalid",
        "password": ADMIN_PASSWORD,
        "api-token": ADMIN_TOKEN,
        "url": "http://labelling-k8s.mlops.svc.cluster.local:8080",
    }


def test_get_admin_credentials_fails_before_the_secret_exists(ctx, make_state):
    with pytest.raises(testing.ActionFailed, match="admin secret does not exist yet"):
        ctx.run(ctx.on.action("get-admin-credentials"), make_state(admin_secret_exists=False))


def test_import_version_runs_the_workload_with_the_registry_credentials(ctx, registry_state):
    state = registry_state(workload_exec("import-version", IMPORTED), config={"overlap": 2})
    params = {
        "version": "v1",
        "project": "reviews",
        "preset": "text-classification",
        "labels": "positive, negative",
    }
    ctx.run(ctx.on.action("import-version", params=params), state)
    (run,) = ctx.exec_history["label-studio"]
    assert run.command[:3] == ["/opt/mlops/bin/mlops-workload", "labelling", "import-version"]
    assert (_arg(run.command, "--version"), _arg(run.command, "--project")) == ("v1", "reviews")
    assert _arg(run.command, "--labels") == "positive,negative"
    assert _arg(run.command, "--overlap") == "2"  # from config
    env = run.environment
    assert (env["MLOPS_REGISTRY_URL"], env["MLOPS_DVC_ENDPOINT_URL"]) == (
        REGISTRY_URL,
        S3_ENDPOINT,
    )
    assert (env["MLOPS_REGISTRY_USERNAME"], env["MLOPS_REGISTRY_PASSWORD"]) == (
        REGISTRY_USER,
        REGISTRY_PASSWORD,
    )
    assert env["LABEL_STUDIO_API_KEY"] == ADMIN_TOKEN
    assert "AWS_DEFAULT_REGION" not in env  # the embedded remote has no region
    assert REGISTRY_PASSWORD not in " ".join(run.command)
    assert ctx.action_results is not None
    assert ctx.action_results["tasks-created"] == "6"
    assert ctx.action_results["project-id"] == "3"


def test_an_external_remote_s_region_reaches_the_workload(ctx, make_state):
    secret = registry_secret()
    relation = dataset_relation(secret, remote_region="eu-west-1")
    state = make_state(
        relations={relation}, secrets={secret}, execs={workload_exec("export-annotations", {})}
    )
    ctx.run(ctx.on.action("export-annotations", params={"project": "reviews"}), state)
    (run,) = ctx.exec_history["label-studio"]
    assert run.environment["AWS_DEFAULT_REGION"] == "eu-west-1"


def test_import_version_passes_a_custom_label_config(ctx, registry_state):
    config = '<View><Text name="t" value="$text"/><Choices name="c" toName="t"/></View>'
    params = {"version": "v1", "project": "reviews", "label-config": config, "overlap": 3}
    ctx.run(
        ctx.on.action("import-version", params=params),
        registry_state(workload_exec("import-version", IMPORTED)),
    )
    (run,) = ctx.exec_history["label-studio"]
    assert _arg(run.command, "--label-config") == config
    assert _arg(run.command, "--overlap") == "3"
    assert "--preset" not in run.command


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        (
            {"version": "latest", "project": "p", "preset": "text-classification", "labels": "a"},
            "version must be a version name",
        ),
        (
            {"version": "v1", "project": " p", "preset": "text-classification", "labels": "a"},
            "project must be 1-100 characters",
        ),
        ({"version": "v1", "project": "p"}, "give exactly one of preset and label-config"),
        (
            {"version": "v1", "project": "p", "preset": "text-classification"},
            "labels: give the preset's labels",
        ),
        (
            {"version": "v1", "project": "p", "label-config": "<View/>"},
            "label-config must read $text or $image",
        ),
    ],
)
def test_import_version_rejects_bad_params(ctx, registry_state, params, reason):
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("import-version", params=params), registry_state())
    assert reason in failure.value.message
    assert ctx.exec_history.get("label-studio", []) == []


def test_import_version_needs_the_registry(ctx, make_state):
    params = {"version": "v1", "project": "p", "preset": "text-classification", "labels": "a"}
    with pytest.raises(testing.ActionFailed, match="no data registry: relate mlops-dataset"):
        ctx.run(ctx.on.action("import-version", params=params), make_state())


def test_a_workload_failure_fails_the_action_with_its_one_line(ctx, registry_state):
    failing = workload_exec(
        "import-version", error="unknown version v9: the registry has no such tag"
    )
    params = {"version": "v9", "project": "p", "preset": "text-classification", "labels": "a"}
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("import-version", params=params), registry_state(failing))
    assert failure.value.message == "unknown version v9: the registry has no such tag"


def test_actions_fail_while_label_studio_is_down(ctx, registry_state, healthy):
    healthy["up"] = False
    with pytest.raises(testing.ActionFailed, match="Label Studio is not ready"):
        ctx.run(
            ctx.on.action("export-annotations", params={"project": "reviews"}), registry_state()
        )


def test_export_annotations_returns_the_new_version(ctx, registry_state):
    state = registry_state(workload_exec("export-annotations", EXPORTED))
    params = {"project": "reviews", "message": "first labels"}
    ctx.run(ctx.on.action("export-annotations", params=params), state)
    (run,) = ctx.exec_history["label-studio"]
    assert _arg(run.command, "--message") == "first labels"
    assert ctx.action_results is not None
    assert (ctx.action_results["version"], ctx.action_results["parent"]) == ("v2", "v1")


def test_export_annotations_reports_no_annotations(ctx, registry_state):
    failing = workload_exec("export-annotations", error="project 'reviews' has no annotations")
    with pytest.raises(testing.ActionFailed, match="has no annotations"):
        ctx.run(
            ctx.on.action("export-annotations", params={"project": "reviews"}),
            registry_state(failing),
        )


def test_consistency_report_uses_the_configured_threshold_and_lists_tasks(ctx, make_state):
    state = make_state(
        execs={workload_exec("consistency-report", REPORT)},
        config={"consistency-threshold": 0.75},
    )
    ctx.run(ctx.on.action("consistency-report", params={"project": "reviews"}), state)
    (run,) = ctx.exec_history["label-studio"]
    assert _arg(run.command, "--threshold") == "0.75"
    assert "--requeue" not in run.command
    assert "MLOPS_REGISTRY_PASSWORD" not in run.environment  # needs no registry
    results = ctx.action_results
    assert results is not None
    assert results["krippendorff-alpha"] == "0.125"
    assert results["inconsistent-count"] == "1"
    assert json.loads(results["inconsistent"]) == REPORT["inconsistent"]


def test_consistency_report_requeues_on_request(ctx, make_state):
    state = make_state(execs={workload_exec("consistency-report", REPORT)})
    params = {"project": "reviews", "threshold": 0.9, "requeue": True}
    ctx.run(ctx.on.action("consistency-report", params=params), state)
    (run,) = ctx.exec_history["label-studio"]
    assert _arg(run.command, "--threshold") == "0.9"
    assert "--requeue" in run.command


def test_consistency_report_fails_for_an_unknown_project(ctx, make_state):
    failing = workload_exec("consistency-report", error="unknown project 'nope'")
    with pytest.raises(testing.ActionFailed, match="unknown project 'nope'"):
        ctx.run(
            ctx.on.action("consistency-report", params={"project": "nope"}),
            make_state(execs={failing}),
        )
