"""rotate-credentials on data-versioning-k8s: the shared cases, and one restart of the servers."""

from __future__ import annotations

from registry_testing import consumer_relation

from tests.rotation_cases import RegistryRotationCases, rotate


class TestRotateCredentials(RegistryRotationCases):
    """The shared cases, on data-versioning-k8s."""


def test_rotation_restarts_the_servers_once_and_the_next_hook_nothing(
    ctx, deployed, service_changes
):
    state = deployed(relations=[consumer_relation()])
    service_changes.clear()

    _, rotated = rotate(ctx, state)
    assert service_changes == ["restart"]

    service_changes.clear()
    ctx.run(ctx.on.update_status(), rotated)
    assert service_changes == []
