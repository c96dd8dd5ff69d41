"""The actions: the cases shared with tracking-k8s, and the URL this charm gives."""

from __future__ import annotations

from conftest import INTERNAL_URL

from tests.tracking_action_cases import ActionCases, run_action
from tests.tracking_testing import ADMIN_PASSWORD


def test_get_admin_credentials_returns_the_admin_secret_and_the_machine_url(ctx, make_state):
    results = run_action(ctx, make_state(), "get-admin-credentials")
    assert results == {"username": "admin", "password": ADMIN_PASSWORD, "url": INTERNAL_URL}


class TestActions(ActionCases):
    """The shared action cases, on the machine charm."""
