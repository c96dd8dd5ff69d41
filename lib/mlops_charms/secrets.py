"""Juju secrets owned by a charm's application: created once by the leader, read by every unit."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

import ops

logger = logging.getLogger(__name__)


def generate_password(length: int = 32) -> str:
    """A random URL-safe password, long enough for every workload's password policy."""
    return secrets.token_urlsafe(length)[:length]


def ensure_app_secret(
    charm: ops.CharmBase, label: str, make_content: Callable[[], dict[str, str]]
) -> dict[str, str] | None:
    """The content of the application secret ``label``, created by the leader on first use.

    Returns None on a non-leader unit while the leader has not created it yet. Only a secret
    that does not exist is created: any other error reaches the caller.
    """
    try:
        return charm.model.get_secret(label=label).get_content(refresh=True)
    except ops.SecretNotFoundError:
        if not charm.unit.is_leader():
            return None
    content = make_content()
    charm.app.add_secret(content, label=label)
    return content


def read_app_secret(model: ops.Model, label: str) -> dict[str, str] | None:
    """The latest content of a secret owned by this application, or None if it is unreadable.

    For statuses and actions, which must not fail: a secret that exists but cannot be read
    now (a transient Juju error) reads as None too, and is logged.
    """
    try:
        return model.get_secret(label=label).get_content(refresh=True)
    except ops.SecretNotFoundError:
        return None
    except ops.ModelError as error:
        logger.warning("cannot read secret %s: %s", label, error)
        return None


def admin_secret_or_fail(
    model: ops.Model, label: str, event: ops.ActionEvent
) -> dict[str, str] | None:
    """An action's read of the server's admin secret; None after failing ``event``: not yet."""
    content = read_app_secret(model, label)
    if content is None:
        event.fail("the admin secret does not exist yet: wait for the leader")
    return content


def remove_app_secret(model: ops.Model, label: str) -> None:
    """Remove an application secret if it exists (leader only)."""
    try:
        model.get_secret(label=label).remove_all_revisions()
    except ops.SecretNotFoundError:
        return


def granted_secret_id(
    model: ops.Model, relation: ops.Relation, label: str, published_id: str | None
) -> str | None:
    """The id of the secret ``label`` for a consumer, granted to it once.

    ``published_id`` is the id this application already published on the relation: the
    grant was made then, so no hook tool is called again on every hook.
    """
    if published_id:
        return published_id
    secret = model.get_secret(label=label)
    secret.grant(relation)
    return secret.get_info().id
