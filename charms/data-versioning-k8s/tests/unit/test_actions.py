"""Actions: validated parameters, structured results, one-line failures."""

from __future__ import annotations

import json

import pytest
from ops import testing
from registry_testing import consumer_relation, dataset_exec, provided

NEW_VERSION = {
    "version": "v3",
    "parent": "v2",
    "source": "upload",
    "source_uri": "/var/lib/registry/incoming/batch",
    "files": 120,
    "bytes": 4096,
    "commit": "0123abcd",
}


def _workload_calls(ctx, command: str) -> list[list[str]]:
    return [e.command for e in ctx.exec_history.get("registry", []) if e.command[2:3] == [command]]


def test_create_version_returns_the_version_and_tells_consumers(ctx, make_state):
    relation = consumer_relation()
    state = make_state(
        relations=[relation],
        execs=[dataset_exec("create-version", NEW_VERSION)],
        config={"approach": "data-centric"},
    )
    out = ctx.run(
        ctx.on.action(
            "create-version",
            params={"source": "/var/lib/registry/incoming/batch", "message": "new photos"},
        ),
        state,
    )
    assert ctx.action_results == {
        "version": "v3",
        "parent": "v2",
        "commit": "0123abcd",
        "files": 120,
        "bytes": 4096,
        "source": "upload",
    }
    assert provided(out, relation)["latest_version"] == "v3"
    [call] = _workload_calls(ctx, "create-version")
    assert call[3:] == [
        "--source",
        "/var/lib/registry/incoming/batch",
        "--source-kind",
        "upload",
        "--message",
        "new photos",
        "--approach",
        "data-centric",
    ]


def test_create_version_from_s3_reads_from_the_registrys_s3_server(ctx, make_state):
    state = make_state(execs=[dataset_exec("create-version", NEW_VERSION)])
    ctx.run(ctx.on.action("create-version", params={"source": "s3://incoming/batch-7"}), state)
    [call] = _workload_calls(ctx, "create-version")
    assert call[3:] == [
        "--source",
        "s3://incoming/batch-7",
        "--source-kind",
        "upload",
        "--source-endpoint-url",
        "http://127.0.0.1:9000",
    ]


def test_create_version_failure_is_one_line_and_publishes_nothing(ctx, make_state):
    relation = consumer_relation()
    failing = dataset_exec(
        "create-version",
        fail="cannot upload the data to the DVC remote: Could not connect to the endpoint URL",
    )
    state = make_state(relations=[relation], execs=[failing])
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(
            ctx.on.action("create-version", params={"source": "/var/lib/registry/incoming/x"}),
            state,
        )
    assert failed.value.message == (
        "cannot upload the data to the DVC remote: Could not connect to the endpoint URL"
    )
    state_out = failed.value.state
    assert isinstance(state_out, testing.State)
    assert "latest_version" not in provided(state_out, relation)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"source": "incoming/x"}, "source must be an absolute path or an s3://bucket/prefix URL"),
        ({"source": "/etc/passwd"}, "source must be under /var/lib/registry/"),
        ({"source": "s3://b/p", "source-kind": "rollback"}, "source-kind must be upload"),
        ({"source": "s3://b/p", "message": "two\nlines"}, "message must be one line"),
    ],
)
def test_create_version_rejects_bad_params(ctx, make_state, params, reason):
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("create-version", params=params), make_state())
    assert reason in failed.value.message
    assert _workload_calls(ctx, "create-version") == []


def test_list_versions_returns_them_as_json(ctx, make_state):
    listed = {"versions": [{"version": "v1", "number": 1}, {"version": "v2", "number": 2}]}
    state = make_state(execs=[dataset_exec("list-versions", listed)])
    ctx.run(ctx.on.action("list-versions"), state)
    assert ctx.action_results["count"] == 2
    assert ctx.action_results["latest"] == "v2"
    assert json.loads(ctx.action_results["versions"]) == listed["versions"]


def test_diff_versions_returns_paths_and_bytes(ctx, make_state):
    diff = {
        "from": "v1",
        "to": "v2",
        "added": ["data/a"],
        "removed": [],
        "modified": ["data/b"],
        "added_bytes": 10,
        "removed_bytes": 0,
        "modified_bytes": 5,
    }
    state = make_state(execs=[dataset_exec("diff-versions", diff)])
    ctx.run(ctx.on.action("diff-versions", params={"from": "v1", "to": "v2"}), state)
    assert json.loads(ctx.action_results["added"]) == ["data/a"]
    assert ctx.action_results["modified-bytes"] == 5
    assert _workload_calls(ctx, "diff-versions")[0][3:] == ["v1", "v2"]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"from": "1", "to": "v2"}, "from must be a version name such as v3"),
        ({"from": "v2", "to": "v2"}, "from and to must be different versions"),
        ({"from": "v1"}, "to: Field required"),
    ],
)
def test_diff_versions_rejects_bad_params(ctx, make_state, params, reason):
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("diff-versions", params=params), make_state())
    assert reason in failed.value.message


def test_unknown_version_fails_with_the_workload_reason(ctx, make_state):
    state = make_state(execs=[dataset_exec("diff-versions", fail="no version v9 in the registry")])
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("diff-versions", params={"from": "v1", "to": "v9"}), state)
    assert failed.value.message == "no version v9 in the registry"


def test_pin_version_tells_consumers_which_version_to_use(ctx, make_state):
    relation = consumer_relation()
    report = {"version": "v1", "valid": True, "files": 3}
    state = make_state(relations=[relation], execs=[dataset_exec("validate-version", report)])
    out = ctx.run(ctx.on.action("pin-version", params={"version": "v1"}), state)
    assert ctx.action_results == {"pinned": "v1"}
    assert provided(out, relation)["pinned_version"] == "v1"
    assert "pinned v1" in out.unit_status.message


def test_pin_version_refuses_a_version_whose_data_is_missing(ctx, make_state):
    report = {"version": "v4", "valid": False, "reason": "3 files are not in the DVC remote"}
    state = make_state(execs=[dataset_exec("validate-version", report)])
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("pin-version", params={"version": "v4"}), state)
    assert failed.value.message == "cannot pin v4: 3 files are not in the DVC remote"


def test_empty_pin_follows_the_latest_again(ctx, make_state, peers):
    relation = consumer_relation()
    pinned = testing.PeerRelation(
        peers.endpoint, id=peers.id, local_app_data={"pinned-version": "v1"}
    )
    state = make_state(relations=[relation, pinned])
    out = ctx.run(ctx.on.action("pin-version", params={"version": ""}), state)
    assert "pinned_version" not in provided(out, relation)


def test_pin_version_rejects_a_bad_name(ctx, make_state):
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("pin-version", params={"version": "latest"}), make_state())
    assert "version must be a version name such as v3" in failed.value.message


def test_rollback_creates_a_new_version(ctx, make_state):
    rolled = {**NEW_VERSION, "source": "rollback", "source_uri": "v1"}
    relation = consumer_relation()
    state = make_state(relations=[relation], execs=[dataset_exec("rollback", rolled)])
    out = ctx.run(ctx.on.action("rollback", params={"to": "v1"}), state)
    assert ctx.action_results["version"] == "v3"
    assert ctx.action_results["source"] == "rollback"
    assert provided(out, relation)["latest_version"] == "v3"
    assert _workload_calls(ctx, "rollback")[0][3:] == ["--to", "v1"]


def test_rollback_rejects_a_bad_target(ctx, make_state):
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("rollback", params={"to": "v0"}), make_state())
    assert "to must be a version name such as v3" in failed.value.message


def test_actions_refuse_on_a_non_leader(ctx, make_state):
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("list-versions"), make_state(leader=False))
    assert failed.value.message == "run the action on the leader unit"


def test_actions_refuse_while_config_is_bad(ctx, make_state):
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("list-versions"), make_state(config={"bucket": "X"}))
    assert failed.value.message.startswith("cannot run while blocked: invalid config: bucket")


def test_create_version_refuses_a_path_that_climbs_out_of_the_storage(ctx, make_state):
    source = "/var/lib/registry/incoming/../../../etc"
    with pytest.raises(testing.ActionFailed, match="source must be under /var/lib/registry/"):
        ctx.run(ctx.on.action("create-version", params={"source": source}), make_state())
