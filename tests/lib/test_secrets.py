"""Application secrets: created once by the leader, read by every unit, old revisions pruned."""

from __future__ import annotations

import logging
import string

import ops
import pytest
from ops import testing

from mlops_charms.secrets import (
    ensure_app_secret,
    generate_password,
    granted_secret_id,
    read_app_secret,
    remove_app_secret,
)

META = {"name": "tracking", "provides": {"keys": {"interface": "keys"}}}
LABEL = "admin-credentials"


class SecretsCharm(ops.CharmBase):
    pass


@pytest.fixture
def ctx() -> testing.Context[SecretsCharm]:
    return testing.Context(SecretsCharm, meta=META)


@pytest.fixture
def made() -> list[dict[str, str]]:
    return []


@pytest.fixture
def make_content(made: list[dict[str, str]]):
    def make() -> dict[str, str]:
        content = {"password": f"generated-{len(made)}"}
        made.append(content)
        return content

    return make


@pytest.fixture
def add_secret_calls(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    calls: list[str | None] = []
    original = ops.Application.add_secret

    def spy(self, content, *, label=None, **kwargs):
        calls.append(label)
        return original(self, content, label=label, **kwargs)

    monkeypatch.setattr(ops.Application, "add_secret", spy)
    return calls


def admin_secret(**kwargs) -> testing.Secret:
    return testing.Secret(
        tracked_content={"password": "first"}, owner="app", label=LABEL, **kwargs
    )


def permission_denied(monkeypatch: pytest.MonkeyPatch) -> None:
    def get_secret(model, id=None, label=None):
        raise ops.ModelError("ERROR permission denied (unauthorized access)")

    monkeypatch.setattr(ops.Model, "get_secret", get_secret)


# --- ensure_app_secret -----------------------------------------------------------------------


def test_leader_creates_the_secret_on_first_use(ctx, make_content, made):
    with ctx(ctx.on.leader_elected(), testing.State(leader=True)) as manager:
        content = ensure_app_secret(manager.charm, LABEL, make_content)
        out = manager.run()

    assert content == {"password": "generated-0"}
    [secret] = out.secrets
    assert (secret.label, secret.owner, secret.latest_content) == (LABEL, "app", content)
    assert len(made) == 1


def test_an_existing_secret_is_read_at_its_latest_revision_not_recreated(
    ctx, make_content, made, add_secret_calls
):
    secret = admin_secret(latest_content={"password": "rotated"})

    with ctx(ctx.on.update_status(), testing.State(leader=True, secrets={secret})) as manager:
        content = ensure_app_secret(manager.charm, LABEL, make_content)

    assert content == {"password": "rotated"}
    assert made == []
    assert add_secret_calls == []


def test_non_leader_gets_none_until_the_leader_created_it(ctx, make_content, made):
    with ctx(ctx.on.update_status(), testing.State(leader=False)) as manager:
        content = ensure_app_secret(manager.charm, LABEL, make_content)
        out = manager.run()

    assert content is None
    assert made == []
    assert out.secrets == frozenset()


def test_non_leader_reads_the_secret_the_leader_created(ctx, make_content):
    with ctx(ctx.on.update_status(), testing.State(secrets={admin_secret()})) as manager:
        assert ensure_app_secret(manager.charm, LABEL, make_content) == {"password": "first"}


def test_another_error_reaches_the_caller_and_creates_nothing(
    ctx, make_content, made, add_secret_calls, monkeypatch
):
    # A transient Juju error must not make a second secret with the same label.
    permission_denied(monkeypatch)

    with ctx(ctx.on.update_status(), testing.State(leader=True)) as manager:
        with pytest.raises(ops.ModelError, match="permission denied"):
            ensure_app_secret(manager.charm, LABEL, make_content)

    assert made == []
    assert add_secret_calls == []


# --- read_app_secret and remove_app_secret ---------------------------------------------------


def test_read_gives_the_latest_content(ctx):
    secret = admin_secret(latest_content={"password": "rotated"})

    with ctx(ctx.on.update_status(), testing.State(leader=True, secrets={secret})) as manager:
        assert read_app_secret(manager.charm.model, LABEL) == {"password": "rotated"}


def test_read_of_a_missing_secret_is_none(ctx):
    with ctx(ctx.on.update_status(), testing.State(leader=True)) as manager:
        assert read_app_secret(manager.charm.model, LABEL) is None


def test_read_of_an_unreadable_secret_is_none_and_logged(ctx, monkeypatch, caplog):
    permission_denied(monkeypatch)

    with ctx(ctx.on.update_status(), testing.State(leader=True)) as manager:
        with caplog.at_level(logging.WARNING, logger="mlops_charms.secrets"):
            content = read_app_secret(manager.charm.model, LABEL)

    assert content is None
    warnings = [r for r in caplog.records if r.name == "mlops_charms.secrets"]
    assert [record.getMessage() for record in warnings] == [
        f"cannot read secret {LABEL}: ERROR permission denied (unauthorized access)"
    ]


def test_remove_removes_every_revision(ctx):
    with ctx(ctx.on.update_status(), testing.State(leader=True, secrets={admin_secret()})) as m:
        remove_app_secret(m.charm.model, LABEL)
        out = m.run()

    assert out.secrets == frozenset()


def test_remove_of_a_missing_secret_does_nothing(ctx):
    with ctx(ctx.on.update_status(), testing.State(leader=True)) as manager:
        remove_app_secret(manager.charm.model, LABEL)
        out = manager.run()

    assert out.secrets == frozenset()


def test_remove_lets_another_error_reach_the_caller(ctx, monkeypatch):
    permission_denied(monkeypatch)

    with ctx(ctx.on.update_status(), testing.State(leader=True)) as manager:
        with pytest.raises(ops.ModelError):
            remove_app_secret(manager.charm.model, LABEL)


# --- grants --------------------------------------------------------------------------


def test_a_consumer_is_granted_the_secret_once_and_given_its_id(ctx):
    secret = admin_secret()
    relation = testing.Relation("keys", remote_app_name="consumer")
    state = testing.State(leader=True, secrets={secret}, relations={relation})

    with ctx(ctx.on.relation_joined(relation), state) as manager:
        model = manager.charm.model
        secret_id = granted_secret_id(model, model.get_relation("keys"), LABEL, None)
        out = manager.run()

    assert secret_id is not None
    assert secret_id.endswith(secret.id.removeprefix("secret:"))
    assert out.get_secret(id=secret.id).remote_grants == {relation.id: {"consumer"}}


def test_an_id_already_published_is_not_granted_again(ctx):
    secret = admin_secret()
    relation = testing.Relation("keys", remote_app_name="consumer")
    state = testing.State(leader=True, secrets={secret}, relations={relation})

    with ctx(ctx.on.relation_changed(relation), state) as manager:
        model = manager.charm.model
        secret_id = granted_secret_id(model, model.get_relation("keys"), LABEL, secret.id)
        out = manager.run()

    assert secret_id == secret.id
    assert out.get_secret(id=secret.id).remote_grants == {}


# --- passwords -------------------------------------------------------------------------------


def test_generated_passwords_are_url_safe_of_the_length_asked_and_differ():
    passwords = {generate_password() for _ in range(5)}

    assert len(passwords) == 5
    assert all(len(p) == 32 for p in passwords)
    assert set("".join(passwords)) <= set(string.ascii_letters + string.digits + "-_")
    assert len(generate_password(12)) == 12
