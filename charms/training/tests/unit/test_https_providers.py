"""Providers serving HTTPS: their CAs are written in the job's folder and named in its unit."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

from conftest import Machine
from ops import testing

import machine_paths

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "training-k8s/tests/unit"))
from training_testing import REGISTRY_CA, TRACKING_CA, dataset_relation, tracking_relation


def _train(ctx, *, registry_ca=None, tracking_ca=None) -> tuple[Path, str]:
    """Start a train job; its folder and its unit's text."""
    dataset, dataset_secret = dataset_relation(ca=registry_ca)
    tracking, tracking_secret = tracking_relation(ca=tracking_ca)
    state = testing.State(
        leader=True, relations={dataset, tracking}, secrets={dataset_secret, tracking_secret}
    )
    ctx.run(ctx.on.action("train", params={"spec": "text-tfidf-logreg"}), state)
    results = ctx.action_results
    assert results is not None and results["state"] == "running"
    folder = Path(machine_paths.PATHS.jobs_dir) / results["job"]
    return folder, (Path(machine_paths.PATHS.units_dir) / results["unit"]).read_text()


def test_the_cas_are_files_of_the_job_named_to_git_dvc_and_mlflow(ctx, machine: Machine):
    folder, unit = _train(ctx, registry_ca=REGISTRY_CA, tracking_ca=TRACKING_CA)
    registry_ca, tracking_ca = folder / "registry-ca.pem", folder / "tracking-ca.pem"
    assert registry_ca.read_text() == REGISTRY_CA and tracking_ca.read_text() == TRACKING_CA
    assert stat.S_IMODE(registry_ca.stat().st_mode) == 0o644  # the job's user reads it
    assert f'Environment="GIT_SSL_CAINFO={registry_ca}"' in unit
    assert f'Environment="AWS_CA_BUNDLE={registry_ca}"' in unit
    assert f'Environment="MLFLOW_TRACKING_SERVER_CERT_PATH={tracking_ca}"' in unit
    assert "BEGIN CERTIFICATE" not in unit + (folder / "env").read_text()


def test_without_a_ca_the_job_is_as_before(ctx, machine: Machine):
    folder, unit = _train(ctx)
    assert not list(folder.glob("*.pem"))
    for variable in ("GIT_SSL_CAINFO", "AWS_CA_BUNDLE", "MLFLOW_TRACKING_SERVER_CERT_PATH"):
        assert variable not in unit
