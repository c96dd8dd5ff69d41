"""Juju secrets owned by a charm's application: created once by the leader, read by every unit."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import ops


def generate_password(length: int = 32) -> str:
    """A random URL-safe password, long enough for every workload's password policy."""
    return secrets.token_urlsafe(length)[:length]


def ensure_app_secret(
    charm: ops.CharmBase, label: str, make_content: Callable[[], dict[str, str]]
) -> dict[str, str] | None:
    """The content of the application secret ``label``, created by the leader on first use.

    Returns None on a non-leader unit while the leader has not created it yet.
    """
    content = read_app_secret(charm.model, label)
    if content is not None or not charm.unit.is_leader():
        return content
    content = make_content()
    charm.app.add_secret(content, label=label)
    return content


def read_app_secret(model: ops.Model, label: str) -> dict[str, str] | None:
    """The latest content of a secret owned by this application, or None if it does not exist."""
    try:
        return model.get_secret(label=label).get_content(refresh=True)
    except (ops.SecretNotFoundError, ops.ModelError):
        return None


def remove_app_secret(model: ops.Model, label: str) -> None:
    """Remove an application secret if it exists (leader only)."""
    try:
        model.get_secret(label=label).remove_all_revisions()
    except (ops.SecretNotFoundError, ops.ModelError):
        return
