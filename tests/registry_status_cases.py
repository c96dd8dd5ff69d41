"""The status cases both data-versioning charms share: one behaviour, one test, run on each charm.

Config, scale, the secrets, the bootstrap and the versions give the same statuses on Kubernetes
and on a machine (``mlops_charms.registry_server``): each charm's ``test_status.py`` subclasses
``StatusCases``. The fixtures they use are each charm's conftest's: ``ctx``, ``make_state``
(leader, storage, writer secret; ``peer_data=``), ``data_dir`` (the storage's folder),
``come_up`` (runs the event after which the substrate is ready: pebble-ready, start) and
``servers_defined`` (whether the unit runs or defines any server).
"""

from __future__ import annotations

import dataclasses

import pytest
from ops import testing

from mlops_charms import registry_server
from tests.registry_relations import consumer_relation, integrator_2, push_tags

BAD_CONFIG = {
    "bucket": ({"bucket": "Datasets_2"}, "bucket: must be 3-63 lowercase letters, digits or '-'"),
    "short bucket": ({"bucket": "ab"}, "bucket: must be 3-63 lowercase letters, digits or '-'"),
    "git-port": ({"git-port": 80}, "git-port: must be between 1024 and 65535"),
    "s3-port": ({"s3-port": 65534}, "s3-port: must be between 1024 and 65533"),
    "git-port on s3-port + 2": (
        {"git-port": 9002},
        "git-port: must not be s3-port, s3-port + 1 or s3-port + 2",
    ),
    "public-host wildcard": (
        {"public-host": "*.example.com"},
        "public-host: must be a DNS name or an IP address",
    ),
    "public-host with a port": (
        {"public-host": "registry:8080"},
        "public-host: must be a DNS name or an IP address",
    ),
    "approach": ({"approach": "both"}, "approach: must be model-centric, data-centric or empty"),
}
BOOTSTRAP_ERROR = "fatal: could not create leading directories: No space left on device"
SINGLE_WRITER = "scale to 1 unit: the registry's git server is a single writer"


class StatusCases:
    """The substrate-neutral status tests; a ``Test...`` subclass runs them on a charm."""

    @pytest.mark.parametrize(("config", "problem"), BAD_CONFIG.values(), ids=BAD_CONFIG.keys())
    def test_bad_config_blocks_naming_the_option_and_runs_nothing(
        self, ctx, make_state, data_dir, servers_defined, config, problem
    ):
        out = ctx.run(ctx.on.config_changed(), make_state(config=config))
        assert out.unit_status == testing.BlockedStatus(f"invalid config: {problem}")
        assert not servers_defined(out)
        assert out.opened_ports == frozenset()
        assert list(data_dir.iterdir()) == []

    @pytest.mark.parametrize(
        "config",
        [
            {"public-host": "10.0.0.7"},
            {"public-host": "registry.example.com"},
            {"approach": "data-centric"},
        ],
    )
    def test_good_config_is_active(self, come_up, make_state, config):
        out = come_up(make_state(config=config))
        assert out.unit_status == testing.ActiveStatus("no versions yet")

    def test_bad_config_wins_over_every_other_status(self, ctx, make_state):
        relation, keys = integrator_2(bucket="a/b")
        state = make_state(
            config={"git-port": 80},
            relations=[relation, consumer_relation("admin")],
            secrets=[keys],
            planned_units=2,
        )
        out = ctx.run(ctx.on.config_changed(), state)
        assert out.unit_status == testing.BlockedStatus(
            "invalid config: git-port: must be between 1024 and 65535"
        )

    def test_more_than_one_unit_blocks(self, ctx, make_state):
        out = ctx.run(ctx.on.config_changed(), make_state(planned_units=2))
        assert out.unit_status == testing.BlockedStatus(SINGLE_WRITER)

    def test_a_second_unit_is_blocked_too(self, ctx, make_state):
        out = ctx.run(ctx.on.config_changed(), make_state(leader=False, planned_units=2))
        assert out.unit_status == testing.BlockedStatus(SINGLE_WRITER)

    def test_a_non_leader_waits_for_the_leader_to_create_the_secrets(
        self, come_up, make_state, servers_defined
    ):
        out = come_up(dataclasses.replace(make_state(leader=False), secrets=frozenset()))
        assert out.unit_status == testing.WaitingStatus(
            "waiting for the leader to create the secrets"
        )
        assert not servers_defined(out)

    def test_the_leaders_failed_bootstrap_shows_on_the_other_units(self, ctx, make_state):
        peer_data = {registry_server.BOOTSTRAP_ERROR_KEY: BOOTSTRAP_ERROR}
        out = ctx.run(ctx.on.update_status(), make_state(leader=False, peer_data=peer_data))
        assert out.unit_status == testing.BlockedStatus(
            f"registry bootstrap failed: {BOOTSTRAP_ERROR}"
        )

    def test_a_non_leader_does_not_show_the_leaders_move_failure(self, ctx, make_state):
        peer_data = {registry_server.MOVE_ERROR_KEY: "Failed to copy"}
        out = ctx.run(ctx.on.update_status(), make_state(leader=False, peer_data=peer_data))
        assert out.unit_status == testing.ActiveStatus("no versions yet")

    @pytest.mark.parametrize(
        ("tags", "known", "message"),
        [
            ((), {}, "no versions yet"),
            (("v1", "v2"), {registry_server.LATEST_KEY: "v2"}, "latest v2"),
            (
                ("v1", "v2"),
                {registry_server.LATEST_KEY: "v2", registry_server.PINNED_KEY: "v1"},
                "latest v2; pinned v1",
            ),
            (
                ("v1", "v2", "v3", "v4"),
                {
                    registry_server.LATEST_KEY: "v2",
                    registry_server.PINNED_KEY: "v1",
                    registry_server.INVALID_KEY: "v3 v4",
                },
                "latest v2; pinned v1; invalid (data missing): v3, v4",
            ),
            (
                ("v1",),
                {registry_server.INVALID_KEY: "v1"},
                "no versions yet; invalid (data missing): v1",
            ),
        ],
    )
    def test_active_says_which_versions_consumers_use(
        self, come_up, make_state, data_dir, tags, known, message
    ):
        push_tags(data_dir, *tags)
        out = come_up(make_state(peer_data=known))
        assert out.unit_status == testing.ActiveStatus(message)
