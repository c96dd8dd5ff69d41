"""Every status the charm can reach, from config, relations and the Kubernetes API."""

from __future__ import annotations

import pytest
from ops import testing
from training_testing import MODEL, dataset_relation, tracking_relation

from tests.fake_kubernetes import TRAINJOB_CRD


def _status(ctx, state: testing.State) -> testing.State:
    return ctx.run(ctx.on.update_status(), state)


def test_active_says_the_backend_and_that_nothing_runs(ctx, make_state, kubernetes):
    out = _status(ctx, make_state())
    assert out.unit_status == testing.ActiveStatus("backend: Job; no job running")


def test_active_counts_the_running_jobs_and_shows_gpus(ctx, make_state, kubernetes):
    state = make_state(config={"gpus": 2})
    ctx.run(ctx.on.action("train", params={"spec": "image-svc"}), state)
    ctx.run(ctx.on.action("train", params={"spec": "image-svc"}), state)
    name = kubernetes.list(MODEL, "jobs")[0]["metadata"]["name"]
    kubernetes.finish(MODEL, "jobs", name, succeeded=True)
    out = _status(ctx, state)
    assert out.unit_status == testing.ActiveStatus("backend: Job, 2 GPU(s) each; 1 job(s) running")


def test_without_trust_it_is_blocked_saying_how_to_grant_it(ctx, make_state, kubernetes):
    kubernetes.forbidden = True
    out = _status(ctx, make_state())
    assert out.unit_status == testing.BlockedStatus(
        "no access to the Kubernetes API: run `juju trust training-k8s --scope=cluster`"
    )


def test_an_unreachable_api_is_waiting(ctx, make_state, kubernetes, monkeypatch, tmp_path):
    kubeconfig = tmp_path / "dead.json"
    kubeconfig.write_text(
        kubernetes.kubeconfig(tmp_path / "k", MODEL)
        .read_text()
        .replace(kubernetes.url, "http://127.0.0.1:9")
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    out = _status(ctx, make_state())
    assert out.unit_status.name == "waiting"
    assert "the API is not reachable" in out.unit_status.message


def test_multi_node_without_trainer_is_blocked_and_with_it_says_trainjob(
    ctx, make_state, kubernetes
):
    state = make_state(config={"num-nodes": 4})
    assert _status(ctx, state).unit_status == testing.BlockedStatus(
        "num-nodes > 1 needs Kubeflow Trainer: no TrainJob CRD in the cluster"
    )
    kubernetes.crds.add(TRAINJOB_CRD)
    assert _status(ctx, state).unit_status == testing.ActiveStatus(
        "backend: TrainJob on torch-distributed, 4 nodes; no job running"
    )


@pytest.mark.parametrize(
    ("missing", "status"),
    [
        ("mlops-dataset", testing.BlockedStatus("relate mlops-dataset to data-versioning-k8s")),
        ("mlops-tracking", testing.BlockedStatus("relate mlops-tracking to tracking-k8s")),
    ],
)
def test_missing_relations_block_the_training_actions(
    ctx, make_state, kubernetes, missing, status
):
    present = [
        pair for pair in (dataset_relation(), tracking_relation()) if pair[0].endpoint != missing
    ]
    state = make_state(
        related=False, relations={r for r, _ in present}, secrets={s for _, s in present}
    )
    assert _status(ctx, state).unit_status == status


def test_a_provider_that_has_not_answered_yet_is_waited_for(ctx, make_state, kubernetes):
    empty = testing.Relation("mlops-dataset", remote_app_name="data-versioning-k8s")
    tracking, secret = tracking_relation()
    state = make_state(related=False, relations={empty, tracking}, secrets={secret})
    assert _status(ctx, state).unit_status == testing.WaitingStatus(
        "waiting for the data registry"
    )


def test_bad_provider_data_is_blocked_naming_the_field(ctx, make_state, kubernetes):
    bad = testing.Relation(
        "mlops-dataset",
        remote_app_name="data-versioning-k8s",
        remote_app_data={"latest_version": '"3"'},
    )
    tracking, secret = tracking_relation()
    state = make_state(related=False, relations={bad, tracking}, secrets={secret})
    status = _status(ctx, state).unit_status
    assert status.name == "blocked" and "latest_version" in status.message


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"gpus": -1}, "gpus: must be an integer, 0 or more"),
        ({"node-selector": "{a: [unclosed"}, "node-selector:"),
        ({"node-selector": "[1, 2]"}, "node-selector: must be a mapping"),
        ({"node-selector": "gpu.present: true"}, "quote them"),
        ({"tolerations": "{key: a}"}, "tolerations: must be a list"),
        (
            {"tolerations": '[{"key": "a", "operator": "Maybe"}]'},
            "operator must be Exists or Equal",
        ),
        ({"tolerations": '[{"key": "a", "effect": "Never"}]'}, "effect must be one of"),
        ({"tolerations": '[{"key": "a", "colour": "blue"}]'}, "unknown field colour"),
        ({"num-nodes": 0}, "num-nodes: must be between 1 and 1000"),
        ({"training-runtime": "Torch Runtime"}, "training-runtime"),
        ({"job-deadline": 0}, "job-deadline"),
    ],
)
def test_bad_config_is_blocked_naming_the_option(ctx, make_state, kubernetes, config, reason):
    status = _status(ctx, make_state(config=config)).unit_status
    assert status.name == "blocked" and reason in status.message, status


def test_yaml_and_json_config_are_both_read(ctx, make_state, kubernetes):
    config = {
        "node-selector": 'nvidia.com/gpu.present: "true"',
        "tolerations": (
            "- {key: dedicated, operator: Equal, value: ml, effect: NoExecute,"
            " tolerationSeconds: 60}"
        ),
        "gpus": 1,
    }
    state = make_state(config=config)
    assert _status(ctx, state).unit_status.name == "active"
    ctx.run(ctx.on.action("train", params={"spec": "image-svc"}), state)
    pod = kubernetes.list(MODEL, "jobs")[0]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["tolerationSeconds"] == 60


def test_a_non_leader_is_a_standby(ctx, make_state, kubernetes):
    out = _status(ctx, make_state(leader=False))
    assert out.unit_status == testing.ActiveStatus("standby: the leader unit runs the jobs")


def test_no_pebble_yet_is_waiting(ctx, make_state, make_container, kubernetes):
    out = _status(ctx, make_state(container=make_container(can_connect=False)))
    assert out.unit_status == testing.WaitingStatus("waiting for Pebble in the training container")
