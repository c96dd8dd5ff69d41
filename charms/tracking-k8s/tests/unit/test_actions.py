"""The actions: get-admin-credentials, create-user and promote-model, succeeding and failing.

The cases both tracking charms share are ``tests/tracking_action_cases.py``'s; here, the URLs
this charm gives (in-cluster, ingress).
"""

from __future__ import annotations

from tests.tracking_action_cases import ActionCases, run_action
from tests.tracking_testing import ADMIN_PASSWORD, INGRESS_URL, INTERNAL_URL, ingress_relation

# --- get-admin-credentials ---------------------------------------------------------------


def test_get_admin_credentials_returns_the_admin_secret_and_url(ctx, make_state):
    results = run_action(ctx, make_state(), "get-admin-credentials")
    assert results == {"username": "admin", "password": ADMIN_PASSWORD, "url": INTERNAL_URL}


def test_get_admin_credentials_gives_the_ingress_url_when_there_is_ingress(ctx, make_state):
    state = make_state(relations={ingress_relation()})
    assert run_action(ctx, state, "get-admin-credentials")["url"] == INGRESS_URL


class TestActions(ActionCases):
    """The shared action cases, on tracking-k8s."""
