"""HTTPS on a machine: Debian's mod_ssl loaded, the key in a secret file, the units restarted."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from ops import testing

import registry_units
from tests.tls_provider import TestCA, issued_in

SERVER_UNITS = [
    registry_units.server_unit(name) for name in ("git-http", "s3", "s3-read-only", "metrics")
]


def _issued(ctx, make_state) -> testing.State:
    ca = TestCA()
    relation = ca.relation()
    state = ctx.run(ctx.on.start(), make_state(relations=[relation]))
    state = ctx.run(ctx.on.relation_created(relation), state)
    state, issued = issued_in(ca, state)
    return ctx.run(ctx.on.relation_changed(issued), state)


def test_an_issued_certificate_restarts_the_servers_on_https(ctx, make_state, machine, data_dir):
    ca = TestCA()
    relation = ca.relation()
    consumer = testing.Relation("mlops-dataset", remote_app_name="training")
    state = ctx.run(ctx.on.start(), make_state(relations=[relation, consumer]))
    state = ctx.run(ctx.on.relation_created(relation), state)
    before = len(machine.calls("systemctl"))
    state, issued = issued_in(ca, state)
    state = ctx.run(ctx.on.relation_changed(issued), state)
    assert state.unit_status == testing.ActiveStatus("no versions yet")
    restarted = {call[-1] for call in machine.calls("systemctl")[before:] if call[0] == "restart"}
    assert restarted == set(SERVER_UNITS)
    conf = (data_dir / "conf" / "httpd.conf").read_text()
    modules = registry_units.PATHS.apache_modules
    assert f"LoadModule ssl_module {modules}/mod_ssl.so" in conf
    assert conf.count("SSLEngine on") == 2
    key = data_dir / "conf" / "tls.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    published = state.get_relation(consumer.id).local_app_data
    assert json.loads(published["registry_url"]).startswith("https://")
    assert json.loads(published["ca"]) == ca.ca_pem


def test_no_unit_file_holds_the_key(ctx, make_state, data_dir):
    _issued(ctx, make_state)
    key = (data_dir / "conf" / "tls.key").read_text()
    assert "PRIVATE KEY" in key
    for unit in SERVER_UNITS:
        text = Path(registry_units.PATHS.unit_file(unit)).read_text()
        assert "PRIVATE KEY" not in text
    metrics = Path(registry_units.PATHS.unit_file(SERVER_UNITS[-1])).read_text()
    assert f'"--ca-file" "{data_dir}/conf/tls-ca.pem"' in metrics
