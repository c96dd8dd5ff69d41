"""The model runner does what Juju does between two applications, and no more.

Two small charms: a provider that shares a secret on its relation (its content from config)
and a requirer that reads it and says what it read in its own databag. No workload: the
runner's part only (events, their order, databags and secrets carried across).
"""

from __future__ import annotations

import json
from pathlib import Path

import ops
import pytest
import yaml

from tests.workload.model_runner import JujuModel, PlainCharm


class Provider(ops.CharmBase):
    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        framework.observe(self.on["shared"].relation_created, self._share)
        framework.observe(self.on.config_changed, self._share)

    def _share(self, _event: ops.EventBase) -> None:
        relation = self.model.get_relation("shared")
        if relation is None:
            return
        content = {"token": str(self.config["token"])}
        try:
            secret = self.model.get_secret(label="shared")
            secret.set_content(content)
        except ops.SecretNotFoundError:
            secret = self.app.add_secret(content, label="shared")
        secret.grant(relation)
        relation.data[self.app]["secret-id"] = secret.id or ""


class Requirer(ops.CharmBase):
    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        framework.observe(self.on["shared"].relation_changed, self._read)
        framework.observe(self.on.secret_changed, self._read)

    def _read(self, _event: ops.EventBase) -> None:
        relation = self.model.get_relation("shared")
        assert relation is not None and relation.app is not None
        secret_id = relation.data[relation.app].get("secret-id")
        if secret_id:
            token = self.model.get_secret(id=secret_id).get_content(refresh=True)["token"]
            relation.data[self.app]["seen"] = json.dumps(token)


def _charm_root(tmp_path: Path, name: str, role: str) -> Path:
    root = tmp_path / name
    root.mkdir()
    meta = {
        "name": name,
        role: {"shared": {"interface": "shared_token"}},
        "config": {"options": {"token": {"type": "string", "default": "one"}}},
    }
    (root / "charmcraft.yaml").write_text(yaml.safe_dump(meta))
    return root


@pytest.fixture
def model(tmp_path: Path) -> JujuModel:
    juju = JujuModel("test")
    for name, charm_class, role in (("p", Provider, "provides"), ("r", Requirer, "requires")):
        root = _charm_root(tmp_path, name, role)
        juju.add(name, PlainCharm(charm_class, root), root)
        juju.deploy(name)
    return juju


def test_an_integration_runs_juju_s_hooks_in_order_and_carries_data_and_secrets(
    model: JujuModel,
):
    model.hooks.clear()
    model.integrate("p:shared", "r:shared")
    assert [(h.app, h.event) for h in model.hooks] == [
        ("p", "shared-relation-created"),
        ("r", "shared-relation-created"),
        ("p", "shared-relation-joined"),
        ("p", "shared-relation-changed"),
        ("r", "shared-relation-joined"),
        ("r", "shared-relation-changed"),
        # What r wrote reaches p; what p wrote before r's hooks was already there.
        ("p", "shared-relation-changed"),
    ]
    assert model.app_data("r", "shared") == {"seen": '"one"'}


def test_a_new_secret_revision_fires_secret_changed_and_an_unchanged_databag_nothing(
    model: JujuModel,
):
    model.integrate("p:shared", "r:shared")
    model.hooks.clear()
    model.config("p", token="two")
    assert [(h.app, h.event) for h in model.hooks] == [
        ("p", "config-changed"),
        ("r", "secret-changed"),
        ("p", "shared-relation-changed"),
    ]
    assert model.app_data("r", "shared") == {"seen": '"two"'}
    model.hooks.clear()
    model.config("p", token="two")
    assert [(h.app, h.event) for h in model.hooks] == [("p", "config-changed")]
