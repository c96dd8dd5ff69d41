"""Fixtures of the approach charm's tests: the charm, its peer relation, related services."""

from __future__ import annotations

import json

import pytest
from ops import testing

from charm import ApproachCharm


@pytest.fixture
def ctx() -> testing.Context[ApproachCharm]:
    return testing.Context(ApproachCharm)


@pytest.fixture
def peers() -> testing.PeerRelation:
    return testing.PeerRelation("approach-peers")


def service(app: str, **ack) -> testing.Relation:
    """A service related over mlops-approach, with its acknowledgement (JSON per field)."""
    return testing.Relation(
        "mlops-approach",
        remote_app_name=app,
        remote_app_data={key: json.dumps(value) for key, value in ack.items()},
    )


def published(state: testing.State) -> dict:
    """What the leader recorded in the peer application databag."""
    peers = next(r for r in state.relations if r.endpoint == "approach-peers")
    return json.loads(peers.local_app_data["published"])


def sent(relation: testing.RelationBase) -> dict:
    return {key: json.loads(value) for key, value in relation.local_app_data.items()}
