"""The actions' cases both labelling charms share: one behaviour, one test, run on each charm.

Parameter validation, the preconditions of every action and get-admin-credentials are the same
on Kubernetes and on a machine (``mlops_charms.labelling_server``): each charm's
``test_actions.py`` subclasses ``ActionCases``. The fixtures they use (``ctx``, ``make_state``,
``healthy``, ``url``: where the charm says Label Studio is, ``registry_charm``: the registry's
charm on its substrate, and ``jobs_started``: how many labelling jobs its substrate was asked
to run) are each charm's conftest's.
"""

from __future__ import annotations

import pytest
from ops import testing

from tests.labelling_testing import ADMIN_PASSWORD, ADMIN_TOKEN, dataset_relation, registry_secret

IMPORT = {"version": "v1", "project": "reviews", "preset": "text-classification", "labels": "a"}

BAD_IMPORT_PARAMS = {
    "version latest": ({**IMPORT, "version": "latest"}, "version must be a version name"),
    "version v0": ({**IMPORT, "version": "v0"}, "version must be a version name such as v3"),
    "leading space": ({**IMPORT, "project": " p"}, "project must be 1-100 characters"),
    "long project": ({**IMPORT, "project": "x" * 101}, "project must be 1-100 characters"),
    "no config": (
        {"version": "v1", "project": "p"},
        "give exactly one of preset and label-config",
    ),
    "two configs": (
        {**IMPORT, "label-config": '<View><Text value="$text"/></View>'},
        "give exactly one of preset and label-config",
    ),
    "unknown preset": ({**IMPORT, "preset": "audio"}, "preset must be one of text-classification"),
    "no labels": ({**IMPORT, "labels": " , "}, "labels: give the preset's labels"),
    "config reads nothing": (
        {"version": "v1", "project": "p", "label-config": "<View/>"},
        "label-config must read $text or $image",
    ),
    "overlap": ({**IMPORT, "overlap": 11}, "overlap must be between 1 and 10"),
}

BAD_EXPORT_PARAMS = {
    "two-line message": (
        {"project": "reviews", "message": "two\nlines"},
        "message must be one line",
    ),
    "long message": ({"project": "reviews", "message": "x" * 501}, "message must be one line"),
    "empty project": ({"project": ""}, "project must be 1-100 characters"),
}


def failure(ctx, state: testing.State, name: str, **params) -> str:
    """The message the action fails with."""
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action(name, params=params), state)
    return failed.value.message


def with_registry(make_state, **kwargs) -> testing.State:
    """A unit related to the registry, which granted write access."""
    secret = registry_secret()
    return make_state(relations={dataset_relation(secret)}, secrets={secret}, **kwargs)


class ActionCases:
    """The substrate-neutral action tests; a ``Test...`` subclass runs them on a charm."""

    def test_get_admin_credentials_returns_the_secret(self, ctx, make_state, url):
        ctx.run(ctx.on.action("get-admin-credentials"), make_state())
        assert ctx.action_results == {
            "username": "admin@labelling.mlops.invalid",
            "password": ADMIN_PASSWORD,
            "api-token": ADMIN_TOKEN,
            "url": url,
        }

    def test_get_admin_credentials_leaves_out_the_url_while_the_config_is_invalid(
        self, ctx, make_state
    ):
        ctx.run(ctx.on.action("get-admin-credentials"), make_state(config={"port": 1}))
        assert ctx.action_results is not None
        assert "url" not in ctx.action_results
        assert ctx.action_results["password"] == ADMIN_PASSWORD

    def test_get_admin_credentials_fails_before_the_secret_exists(self, ctx, make_state):
        state = make_state(admin_secret_exists=False)
        assert failure(ctx, state, "get-admin-credentials") == (
            "the admin secret does not exist yet: wait for the leader"
        )

    @pytest.mark.parametrize(
        ("params", "reason"), BAD_IMPORT_PARAMS.values(), ids=BAD_IMPORT_PARAMS.keys()
    )
    def test_import_version_rejects_bad_params(
        self, ctx, make_state, jobs_started, params, reason
    ):
        message = failure(ctx, with_registry(make_state), "import-version", **params)
        assert reason in message
        assert "\n" not in message
        assert jobs_started() == 0

    def test_import_version_needs_the_registry(
        self, ctx, make_state, jobs_started, registry_charm
    ):
        assert failure(ctx, make_state(), "import-version", **IMPORT) == (
            f"no data registry: relate mlops-dataset to {registry_charm}"
        )
        assert jobs_started() == 0

    def test_import_version_waits_for_write_access(self, ctx, make_state, jobs_started):
        secret = registry_secret()
        relation = dataset_relation(secret, access="read")
        state = make_state(relations={relation}, secrets={secret})
        assert failure(ctx, state, "import-version", **IMPORT) == (
            "the data registry is not usable: mlops-dataset: waiting for write access"
        )
        assert jobs_started() == 0

    def test_actions_fail_while_label_studio_is_down(self, ctx, make_state, healthy, jobs_started):
        healthy["up"] = False
        message = failure(ctx, with_registry(make_state), "export-annotations", project="reviews")
        assert message == "Label Studio is not ready: check `juju status`"
        assert jobs_started() == 0

    def test_actions_fail_before_the_admin_secret_exists(self, ctx, make_state):
        state = with_registry(make_state, admin_secret_exists=False)
        assert failure(ctx, state, "consistency-report", project="reviews") == (
            "the admin secret does not exist yet: wait for the leader"
        )

    def test_actions_fail_while_the_config_is_invalid(self, ctx, make_state):
        state = with_registry(make_state, config={"workers": 0})
        assert failure(ctx, state, "consistency-report", project="reviews") == (
            "cannot run while blocked: invalid config: workers: must be between 1 and 16"
        )

    @pytest.mark.parametrize(
        ("params", "reason"), BAD_EXPORT_PARAMS.values(), ids=BAD_EXPORT_PARAMS.keys()
    )
    def test_export_annotations_rejects_bad_params(
        self, ctx, make_state, jobs_started, params, reason
    ):
        assert reason in failure(ctx, with_registry(make_state), "export-annotations", **params)
        assert jobs_started() == 0

    def test_export_annotations_needs_the_registry(
        self, ctx, make_state, jobs_started, registry_charm
    ):
        assert failure(ctx, make_state(), "export-annotations", project="reviews") == (
            f"no data registry: relate mlops-dataset to {registry_charm}"
        )
        assert jobs_started() == 0

    @pytest.mark.parametrize("threshold", [-0.1, 1.5])
    def test_consistency_report_rejects_a_threshold_outside_0_to_1(
        self, ctx, make_state, jobs_started, threshold
    ):
        message = failure(
            ctx, make_state(), "consistency-report", project="reviews", threshold=threshold
        )
        assert "threshold must be between 0 and 1" in message
        assert jobs_started() == 0

    def test_list_jobs_without_jobs_lists_none(self, ctx, make_state):
        ctx.run(ctx.on.action("list-jobs"), make_state())
        assert ctx.action_results == {"count": 0, "running": "", "jobs": "[]"}

    def test_list_jobs_works_while_the_config_is_invalid(self, ctx, make_state):
        ctx.run(ctx.on.action("list-jobs"), make_state(config={"port": 1}))
        assert ctx.action_results == {"count": 0, "running": "", "jobs": "[]"}
