"""The mlops-approach relation: each policy revision applied once, pinned or not, acknowledged.

Model-centric pins its ``dataset_version`` (checked as pin-version checks it), or the latest
version when the revision is applied; data-centric unpins. A revision that cannot be applied
yet is retried by later hooks while the previous one is acknowledged with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import shlex

import pytest
from ops import testing
from registry_testing import (
    STATE_DIR,
    consumer_relation,
    peer_data,
    provided,
    push_tags,
    with_relation,
    without_relation,
)

import charm
from mlops_charms import registry_server
from tests.provider_data import approach_relation

SOURCE = f"{STATE_DIR}/incoming/batch-1"
SERVICE = {"service": "data-versioning"}


@pytest.fixture
def consumer() -> testing.Relation:
    return consumer_relation()


@pytest.fixture
def registry_with(deployed, consumer, data_dir):
    """A running registry with a consumer and these versions, the last one the latest."""

    def make(*versions: str, peers: dict[str, str] | None = None, **kwargs) -> testing.State:
        push_tags(data_dir, *versions)
        latest = {registry_server.LATEST_KEY: versions[-1]} if versions else {}
        return deployed(relations=[consumer], peer_data={**latest, **(peers or {})}, **kwargs)

    return make


def _relate(ctx, state: testing.State, relation: testing.Relation) -> testing.State:
    return ctx.run(ctx.on.relation_changed(relation), with_relation(state, relation))


def _publish(ctx, state, relation, mode: str, revision: int, **policy) -> testing.State:
    """The approach charm publishes a new revision on the same relation."""
    published = approach_relation(mode, revision, **policy).remote_app_data
    changed = dataclasses.replace(state.get_relation(relation.id), remote_app_data=published)
    return _relate(ctx, state, changed)


def _create_version(ctx, state, **params) -> testing.State:
    return ctx.run(ctx.on.action("create-version", params={"source": SOURCE, **params}), state)


def _job_command(state: testing.State) -> list[str]:
    command = state.get_container(charm.CONTAINER).plan.services["registry-job"].command
    return shlex.split(command)[5:]  # after /bin/sh -c WRAPPER job FOLDER


# --- model-centric: pinned -----------------------------------------------------------------------


def test_model_centric_pins_its_dataset_version_for_every_consumer(ctx, registry_with, consumer):
    labelling = consumer_relation("write", app="labelling")
    state = registry_with("v1", "v2", "v3")
    state = with_relation(state, labelling)
    relation = approach_relation("model-centric", 1, dataset_version="v2")
    out = _relate(ctx, state, relation)
    assert peer_data(out)[registry_server.PINNED_KEY] == "v2"
    for each in (consumer, labelling):
        assert provided(out, each)["pinned_version"] == "v2"
        assert provided(out, each)["latest_version"] == "v3"
    assert provided(out, relation) == {**SERVICE, "applied_revision": 1, "pinned_version": "v2"}
    assert out.unit_status == testing.ActiveStatus("latest v3; model-centric: pinned v2")


def test_model_centric_without_a_version_pins_the_latest_and_later_ones_do_not_move_it(
    ctx, registry_with, consumer
):
    relation = approach_relation("model-centric", 1)
    out = _relate(ctx, registry_with("v1", "v2"), relation)
    assert provided(out, relation) == {**SERVICE, "applied_revision": 1, "pinned_version": "v2"}
    made = _create_version(ctx, out)
    assert ctx.action_results is not None and ctx.action_results["version"] == "v3"
    assert provided(made, consumer)["latest_version"] == "v3"
    assert provided(made, consumer)["pinned_version"] == "v2"
    assert made.unit_status == testing.ActiveStatus("latest v3; model-centric: pinned v2")


def test_no_version_yet_is_acknowledged_with_a_reason_and_the_first_version_is_pinned(
    ctx, registry_with, consumer
):
    relation = approach_relation("model-centric", 1)
    waiting = _relate(ctx, registry_with(), relation)
    assert provided(waiting, relation) == {
        **SERVICE,
        "applied_revision": 0,
        "reason": "no dataset version to pin yet",
        "waiting": True,
    }
    assert waiting.unit_status == testing.WaitingStatus(
        "mlops-approach: cannot apply model-centric (rev 1): no dataset version to pin yet"
    )
    waiting = ctx.run(ctx.on.update_status(), waiting)
    assert provided(waiting, relation)["reason"] == "no dataset version to pin yet"
    out = _create_version(ctx, waiting)
    assert provided(out, consumer)["pinned_version"] == "v1"
    assert provided(out, relation) == {**SERVICE, "applied_revision": 1, "pinned_version": "v1"}
    assert out.unit_status == testing.ActiveStatus("latest v1; model-centric: pinned v1")


def test_a_dataset_version_not_valid_yet_keeps_the_previous_revision_until_it_is(
    ctx, registry_with, workload, consumer, data_dir
):
    relation = approach_relation("data-centric", 1, annotator_overlap=2)
    state = _relate(ctx, registry_with("v1"), relation)
    state = _publish(ctx, state, relation, "model-centric", 2, dataset_version="v2")
    assert provided(state, relation) == {
        **SERVICE,
        "applied_revision": 1,
        "reason": "cannot pin v2: no such valid version",
    }
    assert state.unit_status == testing.BlockedStatus(
        "mlops-approach: cannot apply model-centric (rev 2): cannot pin v2: no such valid version"
    )
    assert "pinned_version" not in provided(state, consumer)
    # A writer pushes v2: its validation's end publishes it, and the revision is applied.
    push_tags(data_dir, "v2")
    state = ctx.run(ctx.on.update_status(), state)
    assert provided(state, relation)["applied_revision"] == 1
    state, notice = workload.end(state)
    out = ctx.run(ctx.on.pebble_custom_notice(state.get_container(charm.CONTAINER), notice), state)
    assert provided(out, consumer)["pinned_version"] == "v2"
    assert provided(out, relation) == {**SERVICE, "applied_revision": 2, "pinned_version": "v2"}
    assert out.unit_status == testing.ActiveStatus("latest v2; model-centric: pinned v2")


def test_a_dataset_version_whose_data_is_missing_is_never_pinned(
    ctx, registry_with, consumer, data_dir
):
    push_tags(data_dir, "v2")
    state = registry_with("v1", peers={registry_server.INVALID_KEY: "v2"})
    relation = approach_relation("model-centric", 1, dataset_version="v2")
    out = _relate(ctx, state, relation)
    assert provided(out, relation) == {
        **SERVICE,
        "applied_revision": 0,
        "reason": "cannot pin v2: its data is not in the remote",
    }
    assert out.unit_status == testing.BlockedStatus(
        "mlops-approach: cannot apply model-centric (rev 1): "
        "cannot pin v2: its data is not in the remote"
    )
    assert registry_server.PINNED_KEY not in peer_data(out)


# --- data-centric: unpinned ----------------------------------------------------------------------


def test_data_centric_unpins_and_every_new_version_is_the_latest(ctx, registry_with, consumer):
    relation = approach_relation("model-centric", 1)
    state = _relate(ctx, registry_with("v1", "v2"), relation)
    assert provided(state, consumer)["pinned_version"] == "v2"
    out = _publish(ctx, state, relation, "data-centric", 2, annotator_overlap=3)
    assert registry_server.PINNED_KEY not in peer_data(out)
    assert "pinned_version" not in provided(out, consumer)
    assert provided(out, relation) == {**SERVICE, "applied_revision": 2}
    assert out.unit_status == testing.ActiveStatus("latest v2; data-centric")
    made = _create_version(ctx, out)
    assert provided(made, consumer)["latest_version"] == "v3"
    assert "pinned_version" not in provided(made, consumer)


# --- once per revision; the operator's pin -------------------------------------------------------


def test_a_revision_is_applied_once_and_an_operators_pin_holds_until_the_next(
    ctx, registry_with, consumer
):
    relation = approach_relation("model-centric", 3)
    state = _relate(ctx, registry_with("v1", "v2"), relation)
    state = ctx.run(ctx.on.action("pin-version", params={"version": "v1"}), state)
    for event in (
        ctx.on.relation_changed(state.get_relation(relation.id)),
        ctx.on.update_status(),
        ctx.on.leader_elected(),
    ):
        state = ctx.run(event, state)
    assert provided(state, consumer)["pinned_version"] == "v1"
    # Revision 3 is applied; what it pinned is what it reports.
    assert provided(state, relation) == {**SERVICE, "applied_revision": 3, "pinned_version": "v2"}
    assert state.unit_status == testing.ActiveStatus("latest v2; model-centric: pinned v1")
    out = _publish(ctx, state, relation, "model-centric", 4)
    assert provided(out, consumer)["pinned_version"] == "v2"
    assert provided(out, relation)["applied_revision"] == 4


def test_nothing_published_yet_applies_and_acknowledges_nothing(ctx, registry_with, consumer):
    relation = approach_relation()
    state = with_relation(registry_with("v1"), relation)
    out = ctx.run(ctx.on.relation_created(relation), state)
    assert provided(out, relation) == {}
    assert registry_server.APPROACH_KEY not in peer_data(out)
    assert out.unit_status == testing.ActiveStatus("latest v1")


def test_a_non_leader_applies_and_acknowledges_nothing(ctx, make_state, data_dir):
    push_tags(data_dir, "v1")
    relation = approach_relation("model-centric", 1)
    state = make_state(
        leader=False, relations=[relation], peer_data={registry_server.LATEST_KEY: "v1"}
    )
    out = ctx.run(ctx.on.relation_changed(relation), state)
    assert registry_server.PINNED_KEY not in peer_data(out)
    assert out.get_relation(relation.id).local_app_data == {}


# --- the relation goes; bad data -----------------------------------------------------------------


def test_removing_the_relation_keeps_the_pin_and_a_new_one_applies_afresh(
    ctx, registry_with, consumer
):
    relation = approach_relation("model-centric", 1, dataset_version="v1")
    state = _relate(ctx, registry_with("v1", "v2"), relation)
    acknowledged = dict(state.get_relation(relation.id).local_app_data)
    broken = ctx.run(ctx.on.relation_broken(state.get_relation(relation.id)), state)
    assert broken.get_relation(relation.id).local_app_data == acknowledged  # nothing more said
    assert registry_server.APPROACH_KEY not in peer_data(broken)
    gone = ctx.run(ctx.on.update_status(), without_relation(broken, relation))
    assert provided(gone, consumer)["pinned_version"] == "v1"
    assert gone.unit_status == testing.ActiveStatus("latest v2; pinned v1")
    # Another approach relation, at the same revision number: applied as new.
    again = approach_relation("model-centric", 1)
    out = _relate(ctx, gone, again)
    assert provided(out, consumer)["pinned_version"] == "v2"
    assert provided(out, again) == {**SERVICE, "applied_revision": 1, "pinned_version": "v2"}


@pytest.mark.parametrize(
    ("databag", "problem"),
    [
        (
            {"mode": json.dumps("both"), "revision": "2", "policy": "{}"},
            "mode: Input should be 'model-centric' or 'data-centric'",
        ),
        ({"mode": json.dumps("model-centric"), "revision": "{not json"}, "Expecting"),
        (
            {
                "mode": json.dumps("model-centric"),
                "revision": "2",
                "policy": json.dumps({"dataset_version": "latest"}),
            },
            "policy.dataset_version",
        ),
    ],
    ids=["unknown mode", "not JSON", "not a version"],
)
def test_a_bad_approach_databag_blocks_and_keeps_what_was_applied(
    ctx, registry_with, consumer, databag, problem
):
    relation = approach_relation("model-centric", 1, dataset_version="v1")
    state = _relate(ctx, registry_with("v1", "v2"), relation)
    bad = dataclasses.replace(state.get_relation(relation.id), remote_app_data=databag)
    out = ctx.run(ctx.on.relation_changed(bad), with_relation(state, bad))
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert out.unit_status.message.startswith("mlops-approach: invalid data from mlops-approach: ")
    assert problem in out.unit_status.message
    assert provided(out, consumer)["pinned_version"] == "v1"
    assert provided(out, relation) == {**SERVICE, "applied_revision": 1, "pinned_version": "v1"}


# --- what versions record ------------------------------------------------------------------------


def test_versions_record_the_relations_mode_over_the_approach_option(ctx, registry_with):
    state = registry_with("v1", config={"approach": "data-centric"})
    state = _relate(ctx, state, approach_relation("model-centric", 1))
    out = _create_version(ctx, state, wait=False)
    command = _job_command(out)
    assert command[command.index("--approach") + 1] == "model-centric"


def test_a_revision_changes_nothing_in_the_workload(ctx, registry_with, service_changes, pushes):
    state = registry_with("v1", "v2")
    service_changes.clear()
    pushes.clear()
    ctx.exec_history.clear()
    relation = approach_relation("model-centric", 1)
    state = _relate(ctx, state, relation)
    _publish(ctx, state, relation, "data-centric", 2, annotator_overlap=2)
    assert service_changes == []
    # Only the pin, for the metrics exporter, which reads it on every scrape.
    assert [path for path in pushes if not path.endswith("/conf/pinned-version")] == []
    assert ctx.exec_history.get(charm.CONTAINER, []) == []
