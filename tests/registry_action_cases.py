"""The action cases both data-versioning charms share: one behaviour, one test, run on each charm.

Parameters are validated, and an action refuses where it cannot run, the same way on Kubernetes
and on a machine (``mlops_charms.registry_server``): each charm's ``test_actions.py`` subclasses
``ActionCases``. The fixtures they use are each charm's: ``ctx``, ``make_state``, ``data_dir``
(the storage's folder), ``state_dir`` (where the charm sees it), ``consumer`` (a consumer's
relation), ``registry_with(*versions, peers=)`` (a registry that came up, with the consumer and
these versions, the last one the latest) and ``commands_run()`` (the commands the charm ran as
the service user since the registry came up).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ops import testing

from mlops_charms import registry_server
from tests.registry_relations import peer_data, provided, push_tags

# Every action with parameters it accepts.
ACTIONS = {
    "create-version": {"source": "{root}/incoming/batch-7"},
    "rollback": {"to": "v1"},
    "list-versions": {},
    "diff-versions": {"from": "v1", "to": "v2"},
    "pin-version": {"version": "v1"},
    "list-jobs": {},
}
# create-version's bad parameters and why each is refused; {root}: the storage's location.
BAD_CREATE = {
    "relative path": (
        {"source": "incoming/x"},
        "source must be an absolute path or an s3://bucket/prefix URL",
    ),
    "outside the storage": ({"source": "/etc"}, "source must be under {root}/"),
    "climbing out": ({"source": "{root}/incoming/../../../etc"}, "source must be under {root}/"),
    "the storage itself": ({"source": "{root}"}, "source must be under {root}/"),
    "the registry's git": (
        {"source": "{root}/git/registry.git"},
        "source must not be the registry's own folder {root}/git",
    ),
    "the jobs": (
        {"source": "{root}/jobs"},
        "source must not be the registry's own folder {root}/jobs",
    ),
    "unknown kind": (
        {"source": "{root}/incoming/x", "source-kind": "rollback"},
        "source-kind must be upload, labelling-export or augmentation",
    ),
    "two lines": (
        {"source": "{root}/incoming/x", "message": "two\nlines"},
        "message must be one line of at most 500 characters",
    ),
    "too long": (
        {"source": "{root}/incoming/x", "message": "x" * 501},
        "message must be one line of at most 500 characters",
    ),
}
BAD_ROLLBACK = {
    "v0": ({"to": "v0"}, "to must be a version name such as v3, not 'v0'"),
    "latest": ({"to": "latest"}, "to must be a version name such as v3, not 'latest'"),
    "two lines": ({"to": "v1", "message": "a\nb"}, "message must be one line"),
}
BAD_DIFF = {
    "from": ({"from": "1", "to": "v2"}, "from must be a version name such as v3, not '1'"),
    "to": ({"from": "v1", "to": "head"}, "to must be a version name such as v3, not 'head'"),
    "same": ({"from": "v2", "to": "v2"}, "from and to must be different versions"),
    "missing": ({"from": "v1"}, "to: Field required"),
}
BAD_PIN = {
    "unknown": ("v9", "cannot pin v9: no such valid version"),
    "not validated yet": ("v3", "cannot pin v3: no such valid version"),
    "not a version": ("latest", "version must be a version name such as v3, not 'latest'"),
}


def action_params(params: dict[str, str], root: str) -> dict[str, str]:
    """``params`` with ``{root}`` replaced by the storage's location."""
    return {name: value.replace("{root}", root) for name, value in params.items()}


def refused(ctx, state: testing.State, action: str, **params) -> str:
    """Why ``action`` failed (it must fail)."""
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action(action, params=params), state)
    return failure.value.message


def started_jobs(data_dir: Path) -> list[str]:
    """The ids of the jobs recorded on the storage."""
    return sorted(path.parent.name for path in (data_dir / "jobs").glob("*/job.json"))


class ActionCases:
    """The substrate-neutral action tests; a ``Test...`` subclass runs them on a charm."""

    @pytest.mark.parametrize(("params", "reason"), BAD_CREATE.values(), ids=BAD_CREATE.keys())
    def test_create_version_refuses_bad_params_and_starts_nothing(
        self, ctx, make_state, data_dir, state_dir, params, reason
    ):
        message = refused(ctx, make_state(), "create-version", **action_params(params, state_dir))
        assert reason.replace("{root}", state_dir) in message
        assert started_jobs(data_dir) == []

    @pytest.mark.parametrize(("action", "params"), ACTIONS.items(), ids=ACTIONS.keys())
    def test_every_action_refuses_on_a_non_leader(
        self, ctx, make_state, data_dir, state_dir, action, params
    ):
        message = refused(
            ctx, make_state(leader=False), action, **action_params(params, state_dir)
        )
        assert message == "run the action on the leader unit"
        assert started_jobs(data_dir) == []

    @pytest.mark.parametrize(("action", "params"), ACTIONS.items(), ids=ACTIONS.keys())
    def test_every_action_refuses_while_the_config_is_bad(
        self, ctx, make_state, state_dir, action, params
    ):
        state = make_state(config={"s3-port": 80})
        assert refused(ctx, state, action, **action_params(params, state_dir)) == (
            "cannot run while blocked: invalid config: s3-port: must be between 1024 and 65533"
        )

    @pytest.mark.parametrize(("params", "reason"), BAD_ROLLBACK.values(), ids=BAD_ROLLBACK.keys())
    def test_rollback_refuses_bad_params_and_starts_nothing(
        self, ctx, registry_with, data_dir, params, reason
    ):
        assert reason in refused(ctx, registry_with("v1"), "rollback", **params)
        assert started_jobs(data_dir) == []

    def test_list_versions_of_an_empty_registry(self, ctx, registry_with):
        ctx.run(ctx.on.action("list-versions"), registry_with())
        assert ctx.action_results == {"count": 0, "latest": "", "pinned": "", "versions": "[]"}

    @pytest.mark.parametrize(("params", "reason"), BAD_DIFF.values(), ids=BAD_DIFF.keys())
    def test_diff_versions_refuses_bad_params_and_runs_nothing(
        self, ctx, registry_with, commands_run, params, reason
    ):
        message = refused(ctx, registry_with("v1", "v2"), "diff-versions", **params)
        assert message.startswith("Error in action parameters: ")
        assert reason in message
        assert commands_run() == []

    def test_pin_version_tells_consumers_which_version_to_use(
        self, ctx, registry_with, consumer, commands_run
    ):
        out = ctx.run(
            ctx.on.action("pin-version", params={"version": "v1"}), registry_with("v1", "v2")
        )
        assert ctx.action_results == {"pinned": "v1"}
        assert peer_data(out)[registry_server.PINNED_KEY] == "v1"
        assert provided(out, consumer)["pinned_version"] == "v1"
        assert out.unit_status == testing.ActiveStatus("latest v2; pinned v1")
        assert commands_run() == []

    def test_an_empty_pin_follows_the_latest_again(self, ctx, registry_with, consumer):
        pin = ctx.on.action("pin-version", params={"version": "v1"})
        pinned = ctx.run(pin, registry_with("v1", "v2"))
        out = ctx.run(ctx.on.action("pin-version", params={"version": ""}), pinned)
        assert ctx.action_results == {"pinned": ""}
        assert registry_server.PINNED_KEY not in peer_data(out)
        assert "pinned_version" not in provided(out, consumer)

    @pytest.mark.parametrize(("version", "reason"), BAD_PIN.values(), ids=BAD_PIN.keys())
    def test_pin_version_refuses_what_is_not_a_valid_version(
        self, ctx, registry_with, data_dir, commands_run, version, reason
    ):
        state = registry_with("v1", "v2")
        push_tags(data_dir, "v3")  # pushed, not validated yet
        assert reason in refused(ctx, state, "pin-version", version=version)
        assert commands_run() == []

    def test_pin_version_refuses_a_version_whose_data_is_missing(self, ctx, registry_with):
        state = registry_with("v1", "v2", peers={registry_server.INVALID_KEY: "v2"})
        message = refused(ctx, state, "pin-version", version="v2")
        assert message == "cannot pin v2: its data is not in the remote"

    def test_list_jobs_of_a_registry_that_never_ran_one(self, ctx, registry_with):
        ctx.run(ctx.on.action("list-jobs"), registry_with())
        assert ctx.action_results == {"count": 0, "running": "", "jobs": "[]"}
