"""mlops-dataset (write access to the registry) and mlops-relabel (batches to label again)."""

from __future__ import annotations

import json

from labelling_testing import (
    dataset_relation,
    registry_secret,
    relabel_relation,
    workload_exec,
)
from ops import testing

BATCH = {
    "batch_id": "run-42-misclassified",
    "items": ["texts/item-1.txt", "texts/item-5.txt"],
    "reason": "misclassified",
    "run_id": "42abc",
    "dataset_version": "v2",
    "project": "reviews",
}


def test_the_leader_asks_the_registry_for_write_access(ctx, make_state):
    relation = dataset_relation()
    state = ctx.run(ctx.on.relation_created(relation), make_state(relations={relation}))
    assert state.get_relation(relation.id).local_app_data == {"access": '"write"'}


def test_a_registry_that_grants_only_read_access_blocks(ctx, make_state):
    secret = registry_secret()
    relation = dataset_relation(secret, access="read")
    state = ctx.run(
        ctx.on.relation_changed(relation), make_state(relations={relation}, secrets={secret})
    )
    assert state.unit_status == testing.BlockedStatus(
        "mlops-dataset: the registry granted no write access"
    )


def test_malformed_registry_data_blocks_with_the_reason(ctx, make_state):
    relation = testing.Relation(
        "mlops-dataset",
        remote_app_name="data-versioning-k8s",
        remote_app_data={"registry_url": '"http://x"', "latest_version": '"latest"'},
    )
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert isinstance(state.unit_status, testing.BlockedStatus)
    assert state.unit_status.message.startswith(
        "mlops-dataset: invalid data from data-versioning-k8s: latest_version"
    )


def test_a_registry_that_has_not_answered_yet_is_waited_for(ctx, make_state):
    relation = dataset_relation()
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert state.unit_status == testing.WaitingStatus("waiting for the data registry")


def test_an_unreadable_credentials_secret_blocks(ctx, make_state):
    relation = dataset_relation(registry_secret())  # the secret was never granted
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert state.unit_status == testing.BlockedStatus(
        "mlops-dataset: credentials secret not readable"
    )


def test_a_relabel_batch_is_queued_once_and_acknowledged(ctx, make_state):
    relation = relabel_relation(BATCH)
    queued = workload_exec("relabel", {"project": "reviews", "queued": 2})
    state = ctx.run(
        ctx.on.relation_changed(relation), make_state(relations={relation}, execs={queued})
    )
    (run,) = ctx.exec_history["label-studio"]
    args = run.command
    assert args[args.index("--project") + 1] == "reviews"
    assert json.loads(args[args.index("--items") + 1]) == BATCH["items"]
    assert args[args.index("--reason") + 1] == "misclassified (run 42abc)"
    assert args[args.index("--batch") + 1] == "run-42-misclassified"
    acknowledged = state.get_relation(relation.id).local_app_data
    assert json.loads(acknowledged["queued"]) == ["run-42-misclassified"]
    assert state.unit_status == testing.ActiveStatus(
        "serving at http://labelling-k8s.mlops.svc.cluster.local:8080; no data registry related"
    )

    ctx.exec_history.clear()
    ctx.run(ctx.on.update_status(), state)
    assert ctx.exec_history.get("label-studio", []) == []


def test_a_failed_relabel_run_leaves_the_batch_waiting(ctx, make_state):
    relation = relabel_relation(BATCH)
    failing = workload_exec("relabel", error="unknown project 'reviews'")
    state = ctx.run(
        ctx.on.relation_changed(relation), make_state(relations={relation}, execs={failing})
    )
    assert "queued" not in state.get_relation(relation.id).local_app_data
    assert state.unit_status == testing.WaitingStatus("mlops-relabel: 1 batches to queue")


def test_a_batch_without_a_project_uses_the_relabel_project_option(ctx, make_state):
    batch = {key: value for key, value in BATCH.items() if key != "project"}
    relation = relabel_relation(batch)
    state_in = make_state(relations={relation}, execs={workload_exec("relabel", {})})
    blocked = ctx.run(ctx.on.relation_changed(relation), state_in)
    assert blocked.unit_status == testing.BlockedStatus(
        "mlops-relabel: a batch names no project: set relabel-project"
    )
    assert ctx.exec_history.get("label-studio", []) == []

    configured = make_state(
        relations={relation},
        execs={workload_exec("relabel", {})},
        config={"relabel-project": "reviews"},
    )
    ctx.run(ctx.on.relation_changed(relation), configured)
    (run,) = ctx.exec_history["label-studio"]
    assert run.command[run.command.index("--project") + 1] == "reviews"


def test_malformed_relabel_data_blocks_and_runs_nothing(ctx, make_state):
    relation = relabel_relation(raw={"batches": json.dumps([{"items": ["/etc/passwd"]}])})
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert isinstance(state.unit_status, testing.BlockedStatus)
    assert state.unit_status.message.startswith("mlops-relabel: invalid data from training-k8s")
    assert ctx.exec_history.get("label-studio", []) == []


def test_a_batch_without_items_blocks(ctx, make_state):
    relation = relabel_relation({"batch_id": "b1"})
    state = ctx.run(ctx.on.relation_changed(relation), make_state(relations={relation}))
    assert state.unit_status == testing.BlockedStatus(
        "mlops-relabel: a batch lacks batch_id or items"
    )


def test_relabel_batches_wait_while_label_studio_is_down(ctx, make_state, healthy):
    healthy["up"] = False
    relation = relabel_relation(BATCH)
    state_in = make_state(relations={relation}, execs={workload_exec("relabel", {})})
    state = ctx.run(ctx.on.relation_changed(relation), state_in)
    assert ctx.exec_history.get("label-studio", []) == []
    assert state.unit_status == testing.WaitingStatus("mlops-relabel: 1 batches to queue")


def test_a_follower_neither_queues_batches_nor_reads_the_acknowledgements(ctx, make_state):
    relation = relabel_relation(BATCH)
    state_in = make_state(leader=False, relations={relation}, execs={workload_exec("relabel", {})})
    state = ctx.run(ctx.on.relation_changed(relation), state_in)
    assert ctx.exec_history.get("label-studio", []) == []
    assert state.unit_status == testing.BlockedStatus(
        "scale-out needs the database relation: SQLite is per unit"
    )
