"""Providers serving HTTPS: their CAs reach a run as mounted files, and variables naming them."""

from __future__ import annotations

import dataclasses
import json

import pytest
from ops import testing
from training_testing import (
    APP,
    MODEL,
    REGISTRY_CA,
    TRACKING_CA,
    dataset_relation,
    tracking_relation,
)

from tests.fake_kubernetes import TRAINJOB_CRD

CA_DIR = "/etc/mlops-training/ca"
CA_VARIABLES = {
    "GIT_SSL_CAINFO": f"{CA_DIR}/registry-ca.pem",
    "AWS_CA_BUNDLE": f"{CA_DIR}/registry-ca.pem",
    "MLFLOW_TRACKING_SERVER_CERT_PATH": f"{CA_DIR}/tracking-ca.pem",
}


def _state(make_state, *, registry_ca=None, tracking_ca=None, **kwargs) -> testing.State:
    dataset, dataset_secret = dataset_relation(ca=registry_ca)
    tracking, tracking_secret = tracking_relation(ca=tracking_ca)
    return make_state(
        related=False,
        relations={dataset, tracking},
        secrets={dataset_secret, tracking_secret},
        **kwargs,
    )


def _train(ctx, state) -> dict:
    ctx.run(ctx.on.action("train", params={"spec": "text-tfidf-logreg"}), state)
    assert ctx.action_results is not None
    return ctx.action_results


def _pod(kubernetes) -> dict:
    (job,) = kubernetes.list(MODEL, "jobs")
    return job["spec"]["template"]["spec"]


def _credentials(kubernetes) -> dict[str, str]:
    secret = kubernetes.get(MODEL, "secrets", f"{APP}-training-credentials")
    assert secret is not None
    return secret["stringData"]


def test_the_cas_are_mounted_from_the_secret_and_named_to_git_dvc_and_mlflow(
    ctx, make_state, kubernetes
):
    _train(ctx, _state(make_state, registry_ca=REGISTRY_CA, tracking_ca=TRACKING_CA))
    pod = _pod(kubernetes)
    (container,) = pod["containers"]
    env = {var["name"]: var.get("value") for var in container["env"]}
    assert {name: env.get(name) for name in CA_VARIABLES} == CA_VARIABLES
    # Uploads as rclone's S3 reads them over HTTPS (tests/workload/training/test_https_clients).
    assert env["AWS_REQUEST_CHECKSUM_CALCULATION"] == "when_required"
    assert {"name": "ca", "mountPath": CA_DIR, "readOnly": True} in container["volumeMounts"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "ca"]
    assert volume["secret"]["secretName"] == f"{APP}-training-credentials"
    # Only the CA files are mounted: the credentials stay variables.
    assert sorted(item["key"] for item in volume["secret"]["items"]) == [
        "registry-ca.pem",
        "tracking-ca.pem",
    ]
    credentials = _credentials(kubernetes)
    assert credentials["registry-ca.pem"] == REGISTRY_CA
    assert credentials["tracking-ca.pem"] == TRACKING_CA
    assert "BEGIN CERTIFICATE" not in json.dumps(pod)


def test_only_the_provider_with_a_ca_gets_its_variables(ctx, make_state, kubernetes):
    _train(ctx, _state(make_state, tracking_ca=TRACKING_CA))
    env = {var["name"] for var in _pod(kubernetes)["containers"][0]["env"]}
    assert "MLFLOW_TRACKING_SERVER_CERT_PATH" in env
    assert not env & {"GIT_SSL_CAINFO", "AWS_CA_BUNDLE"}
    assert "registry-ca.pem" not in _credentials(kubernetes)


def test_without_a_ca_the_run_is_as_before(ctx, make_state, kubernetes):
    _train(ctx, _state(make_state))
    pod = _pod(kubernetes)
    env = {var["name"] for var in pod["containers"][0]["env"]}
    assert not env & {*CA_VARIABLES, "AWS_REQUEST_CHECKSUM_CALCULATION"}
    assert [v["name"] for v in pod["volumes"]] == ["work"]
    assert not any(key.endswith(".pem") for key in _credentials(kubernetes))


def test_a_ca_that_is_not_pem_blocks_naming_the_field(ctx, make_state, kubernetes):
    state = _state(make_state, registry_ca="not a certificate")
    out = ctx.run(ctx.on.update_status(), state)
    assert out.unit_status == testing.BlockedStatus(
        "mlops-dataset: invalid data from data-versioning-k8s: ca: Value error, "
        "must be PEM certificates"
    )
    with pytest.raises(testing.ActionFailed, match="ca: Value error, must be PEM"):
        _train(ctx, state)
    assert kubernetes.list(MODEL, "jobs") == []


def test_a_multi_node_run_gets_the_cas_as_variables_that_mlops_workload_writes(
    ctx, make_state, kubernetes
):
    # A TrainJob mounts nothing: each CA comes from the Secret as a variable, and
    # MLOPS_INLINE_FILES says where mlops-workload writes it (tests/workload/training).
    kubernetes.crds.add(TRAINJOB_CRD)
    state = _state(
        make_state, registry_ca=REGISTRY_CA, tracking_ca=TRACKING_CA, config={"num-nodes": 2}
    )
    _train(ctx, state)
    (trainjob,) = kubernetes.list(MODEL, "trainjobs")
    env = {var["name"]: var for var in trainjob["spec"]["trainer"]["env"]}
    folder = "/var/lib/mlops-training/ca"  # the run's work folder, writable
    assert {name: env[name]["value"] for name in CA_VARIABLES} == {
        name: path.replace(CA_DIR, folder) for name, path in CA_VARIABLES.items()
    }
    assert json.loads(env["MLOPS_INLINE_FILES"]["value"]) == {
        f"{folder}/registry-ca.pem": "MLOPS_INLINE_REGISTRY_CA_PEM",
        f"{folder}/tracking-ca.pem": "MLOPS_INLINE_TRACKING_CA_PEM",
    }
    for variable, key in (
        ("MLOPS_INLINE_REGISTRY_CA_PEM", "registry-ca.pem"),
        ("MLOPS_INLINE_TRACKING_CA_PEM", "tracking-ca.pem"),
    ):
        assert env[variable]["valueFrom"]["secretKeyRef"] == {
            "name": f"{APP}-training-credentials",
            "key": key,
        }
    credentials = _credentials(kubernetes)
    assert credentials["registry-ca.pem"] == REGISTRY_CA
    assert "BEGIN CERTIFICATE" not in json.dumps(trainjob)


def test_rotated_credentials_keep_the_cas_in_the_runs_secret(ctx, make_state, kubernetes):
    # The Secret is applied whole: a refresh without the CAs would unmount them from new pods.
    dataset, dataset_secret = dataset_relation(ca=REGISTRY_CA)
    tracking, tracking_secret = tracking_relation(ca=TRACKING_CA)
    rotated = dataclasses.replace(
        tracking_secret, latest_content={**tracking_secret.tracked_content, "password": "new"}
    )
    state = make_state(
        related=False, relations={dataset, tracking}, secrets={dataset_secret, rotated}
    )
    ctx.run(ctx.on.secret_changed(rotated), state)
    credentials = _credentials(kubernetes)
    assert credentials["MLFLOW_TRACKING_PASSWORD"] == "new"
    assert credentials["registry-ca.pem"] == REGISTRY_CA
    assert credentials["tracking-ca.pem"] == TRACKING_CA


def test_a_renewed_ca_reaches_the_runs_secret_on_relation_changed(ctx, make_state, kubernetes):
    # The registry's CA changed (a new CA behind its certificates relation): the pods started
    # from now on mount the new one, without waiting for the next run.
    _train(ctx, _state(make_state, registry_ca=REGISTRY_CA))
    renewed = TRACKING_CA  # any other PEM certificate
    dataset, dataset_secret = dataset_relation(ca=renewed)
    tracking, tracking_secret = tracking_relation()
    state = make_state(
        related=False, relations={dataset, tracking}, secrets={dataset_secret, tracking_secret}
    )
    ctx.run(ctx.on.relation_changed(dataset, remote_unit=0), state)
    assert _credentials(kubernetes)["registry-ca.pem"] == renewed
