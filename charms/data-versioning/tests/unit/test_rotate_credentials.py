"""rotate-credentials on the data-versioning machine charm: the shared cases, one restart."""

from __future__ import annotations

from tests.registry_relations import consumer_relation
from tests.rotation_cases import RegistryRotationCases, rotate


class TestRotateCredentials(RegistryRotationCases):
    """The shared cases, on the machine charm."""


def test_rotation_restarts_each_server_once(ctx, deployed, machine):
    state = deployed(relations=[consumer_relation()])
    before = len(machine.calls("systemctl"))

    rotate(ctx, state)

    restarts = [call[1] for call in machine.calls("systemctl")[before:] if call[0] == "restart"]
    assert restarts and len(restarts) == len(set(restarts)), restarts
