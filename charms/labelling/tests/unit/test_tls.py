"""HTTPS on a machine: the issued certificate makes the systemd unit serve HTTPS only."""

from __future__ import annotations

import stat
from pathlib import Path

from conftest import ADDRESS
from ops import testing

import label_studio_unit
from tests.systemd_units import systemd_words, unit_settings
from tests.tls_provider import TestCA, issued_in, requested_names


def test_the_issued_certificate_serves_https_from_0600_files_not_in_the_units(ctx, make_state):
    ca = TestCA()
    relation = ca.relation()
    state = ctx.run(ctx.on.config_changed(), make_state(relations={relation}))
    state = ctx.run(ctx.on.relation_created(state.get_relation(relation.id)), state)
    names, addresses = requested_names(state.get_relation(relation.id))
    assert "localhost" in names
    assert ADDRESS in addresses
    assert state.unit_status == testing.WaitingStatus(
        "waiting for a certificate over certificates"
    )

    state, issued = issued_in(ca, state)
    state = ctx.run(ctx.on.relation_changed(issued), state)

    assert state.unit_status.message.startswith(f"serving at https://{ADDRESS}:8080")
    text = Path(label_studio_unit.PATHS.unit_file).read_text()
    command = systemd_words(unit_settings(text)["ExecStart"][0])
    data_dir = unit_settings(text)["WorkingDirectory"][0]
    secrets_dir = Path(data_dir) / "secrets"
    assert "--http" not in command
    https = command[command.index("--https") + 1]
    assert https == f"0.0.0.0:8080,{secrets_dir}/label-studio.crt,{secrets_dir}/label-studio.key"
    key = (secrets_dir / "label-studio.key").read_text()
    assert "PRIVATE KEY" in key
    for name in ("label-studio.crt", "label-studio.key", "label-studio-ca.pem"):
        assert stat.S_IMODE((secrets_dir / name).stat().st_mode) == 0o600
    metrics = Path(label_studio_unit.PATHS.metrics_unit_file).read_text()
    exporter = systemd_words(unit_settings(metrics)["ExecStart"][0])
    assert exporter[exporter.index("--ca-file") + 1] == f"{secrets_dir}/label-studio-ca.pem"
    for unit in (text, metrics):
        assert "PRIVATE KEY" not in unit
