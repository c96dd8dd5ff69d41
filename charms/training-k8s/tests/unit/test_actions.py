"""The actions: validated parameters, a Job created at once, its id back; cancel, logs, list."""

from __future__ import annotations

import json
import threading
import time

import pytest
from ops import testing
from training_testing import APP, MODEL, SECRETS, dataset_relation, tracking_relation

from job_watcher import JOBS
from mlops_charms import training
from tests.fake_kubernetes import TRAINJOB_CRD

RESULT = {"run_id": "r1", "metrics": {"accuracy": 0.93}, "classes": ["neg", "pos"]}


def _command(kubernetes, name: str | None = None) -> list[str]:
    jobs = kubernetes.list(MODEL, "jobs")
    job = next(j for j in jobs if name is None or j["metadata"]["name"] == name)
    return job["spec"]["template"]["spec"]["containers"][0]["command"]


def _arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _run(ctx, state, action: str, **params):
    return ctx.run(ctx.on.action(action, params=params), state)


def test_train_creates_a_job_and_returns_its_id_at_once(ctx, make_state, kubernetes):
    _run(ctx, make_state(), "train", spec="text-tfidf-logreg", params='{"C": 2}', seed=7)
    results = ctx.action_results
    assert results is not None
    assert results["state"] == "running" and results["backend"] == "Job"
    assert results["name"] == f"{APP}-{results['job']}"
    command = _command(kubernetes)
    assert command[:3] == ["/opt/mlops/bin/mlops-workload", "training", "train"]
    assert _arg(command, "--spec") == "text-tfidf-logreg"
    assert _arg(command, "--params") == '{"C": 2}'
    assert (_arg(command, "--seed"), _arg(command, "--folds")) == ("7", "5")
    assert _arg(command, "--version") == "v2"  # the registry's latest


def test_the_pinned_version_wins_over_the_latest_and_a_given_one_over_both(
    ctx, make_state, kubernetes
):
    relation, secret = dataset_relation(latest="v5", pinned="v3")
    tracking, tracking_secret = tracking_relation()
    state = make_state(
        related=False, relations={relation, tracking}, secrets={secret, tracking_secret}
    )
    _run(ctx, state, "train", spec="image-svc")
    assert _arg(_command(kubernetes), "--version") == "v3"
    _run(ctx, state, "error-analysis", spec="image-svc", version="v4", **{"top-k": 20})
    command = _command(kubernetes, ctx.action_results["name"])  # type: ignore[index]
    assert (_arg(command, "--version"), _arg(command, "--top-k")) == ("v4", "20")


def test_the_job_reads_its_credentials_from_the_secret_the_charm_wrote(
    ctx, make_state, kubernetes
):
    _run(ctx, make_state(), "train", spec="image-svc")
    job = kubernetes.list(MODEL, "jobs")[0]
    assert not any(secret in json.dumps(job) for secret in SECRETS)
    secret = kubernetes.get(MODEL, "secrets", f"{APP}-training-credentials")
    assert secret is not None
    assert secret["stringData"]["MLOPS_REGISTRY_PASSWORD"] == SECRETS[0]
    assert secret["stringData"]["MLFLOW_TRACKING_PASSWORD"] == SECRETS[2]
    statefulset = kubernetes.get(MODEL, "statefulsets", APP)
    assert statefulset is not None
    assert secret["metadata"]["ownerReferences"][0]["uid"] == statefulset["metadata"]["uid"]


def test_sweep_passes_grid_metric_and_alias(ctx, make_state, kubernetes):
    _run(
        ctx,
        make_state(),
        "sweep",
        spec="image-svc",
        grid='{"C": [1, 10]}',
        metric="f1_macro",
        promote="champion",
    )
    command = _command(kubernetes)
    assert command[2] == "sweep"
    assert (_arg(command, "--grid"), _arg(command, "--metric")) == ('{"C": [1, 10]}', "f1_macro")
    assert _arg(command, "--promote") == "champion"


def test_augment_needs_write_access_and_then_runs_without_tracking(ctx, make_state, kubernetes):
    read_only, secret = dataset_relation(access="read")
    state = make_state(related=False, relations={read_only}, secrets={secret})
    with pytest.raises(testing.ActionFailed, match="needs write access"):
        _run(ctx, state, "augment", transforms='{"text": [{"op": "swap"}]}', seed=3)
    writable, secret = dataset_relation()
    state = make_state(related=False, relations={writable}, secrets={secret})
    _run(ctx, state, "augment", transforms='{"text": [{"op": "swap"}]}', seed=3, message="aug")
    command = _command(kubernetes)
    assert command[2] == "augment" and _arg(command, "--seed") == "3"
    env = {
        e["name"]
        for e in kubernetes.list(MODEL, "jobs")[0]["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert "MLFLOW_TRACKING_URI" not in env


@pytest.mark.parametrize(
    ("action", "params", "reason"),
    [
        ("train", {"spec": "Bad Spec!"}, "spec must be"),
        ("train", {"spec": "image-svc", "params": "{not json"}, "params is not JSON"),
        ("train", {"spec": "image-svc", "params": "[1]"}, "params must be a JSON object"),
        ("train", {"spec": "image-svc", "version": "3"}, "version must be a version name"),
        ("sweep", {"spec": "image-svc", "grid": '{"C": []}'}, "grid must map"),
        ("sweep", {"spec": "image-svc", "grid": '{"C": [1]}', "promote": "latest"}, "promote"),
        ("sweep", {"spec": "image-svc", "grid": '{"C": [1]}', "promote": "v2"}, "promote"),
        ("augment", {"transforms": '{"copies": 2}', "seed": 1}, "transforms must name"),
        ("augment", {"transforms": '{"text": []}', "seed": 1, "message": "a\nb"}, "message"),
        ("cancel-job", {"job": "../etc"}, "job must be a job id"),
    ],
)
def test_bad_parameters_fail_in_one_line_and_create_nothing(
    ctx, make_state, kubernetes, action, params, reason
):
    with pytest.raises(testing.ActionFailed) as failed:
        _run(ctx, make_state(), action, **params)
    assert reason in failed.value.message and "\n" not in failed.value.message
    assert kubernetes.list(MODEL, "jobs") == []


@pytest.mark.parametrize(
    ("relations", "reason"),
    [
        (("tracking",), "no data registry: relate mlops-dataset"),
        (("dataset",), "no tracking server"),
    ],
)
def test_training_without_its_relations_fails_saying_which(
    ctx, make_state, kubernetes, relations, reason
):
    present = {"dataset": dataset_relation(), "tracking": tracking_relation()}
    chosen = [present[name] for name in relations]
    state = make_state(
        related=False, relations={r for r, _ in chosen}, secrets={s for _, s in chosen}
    )
    with pytest.raises(testing.ActionFailed, match=reason):
        _run(ctx, state, "train", spec="image-svc")


def test_an_empty_registry_needs_a_version(ctx, make_state, kubernetes):
    relation, secret = dataset_relation(latest=None)
    tracking, tracking_secret = tracking_relation()
    state = make_state(
        related=False, relations={relation, tracking}, secrets={secret, tracking_secret}
    )
    with pytest.raises(testing.ActionFailed, match="no dataset version yet"):
        _run(ctx, state, "train", spec="image-svc")


def test_only_the_leader_starts_jobs(ctx, make_state, kubernetes):
    with pytest.raises(testing.ActionFailed, match="leader"):
        _run(ctx, make_state(leader=False), "train", spec="image-svc")


def test_without_trust_the_action_fails_saying_so_and_the_job_is_recorded_failed(
    ctx, make_state, kubernetes
):
    kubernetes.forbidden = True
    with pytest.raises(testing.ActionFailed, match="juju trust"):
        _run(ctx, make_state(), "train", spec="image-svc")
    kubernetes.forbidden = False
    _run(ctx, make_state(), "list-jobs")
    listed = json.loads(ctx.action_results["jobs"])  # type: ignore[index]
    assert listed == []  # the cluster refused before the job was recorded


def test_a_job_the_cluster_refuses_is_listed_as_failed_with_the_reason(
    ctx, make_state, kubernetes
):
    kubernetes.validators["jobs"] = lambda body: [
        "spec.template.spec.containers[0].image: Required value"
    ]
    with pytest.raises(testing.ActionFailed, match="Required value"):
        _run(ctx, make_state(), "train", spec="image-svc")
    _run(ctx, make_state(), "list-jobs")
    (job,) = json.loads(ctx.action_results["jobs"])  # type: ignore[index]
    assert job["state"] == "failed" and "Required value" in job["error"]
    assert job["params"] == {"version": "v2", "spec": "image-svc", "backend": "Job"}


def test_trainer_image_config_replaces_the_resource(ctx, make_state, kubernetes):
    state = make_state(config={"trainer-image": "registry.example/trainer:2"})
    _run(ctx, state, "train", spec="image-svc")
    container = kubernetes.list(MODEL, "jobs")[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/trainer:2"


def test_a_private_resource_image_gets_a_pull_secret(ctx, make_state, kubernetes, tmp_path):
    private = tmp_path / "private.yaml"
    private.write_text(
        "registrypath: registry.jujucharms.com/x/training@sha256:abc\nusername: u\npassword: p\n"
    )
    state = make_state(resources={testing.Resource(name="training-image", path=private)})
    _run(ctx, state, "train", spec="image-svc")
    pod = kubernetes.list(MODEL, "jobs")[0]["spec"]["template"]["spec"]
    (pull,) = pod["imagePullSecrets"]
    secret = kubernetes.get(MODEL, "secrets", pull["name"])
    assert secret is not None and secret["type"] == "kubernetes.io/dockerconfigjson"
    auths = json.loads(secret["stringData"][".dockerconfigjson"])["auths"]
    assert auths["registry.jujucharms.com"]["username"] == "u"


def test_multi_node_runs_are_trainjobs_when_trainer_is_installed(ctx, make_state, kubernetes):
    state = make_state(config={"num-nodes": 3, "gpus": 1})
    with pytest.raises(testing.ActionFailed, match="Kubeflow Trainer"):
        _run(ctx, state, "train", spec="torch-mlp")
    kubernetes.crds.add(TRAINJOB_CRD)
    _run(ctx, state, "train", spec="torch-mlp")
    assert ctx.action_results["backend"] == "TrainJob"  # type: ignore[index]
    (trainjob,) = kubernetes.list(MODEL, "trainjobs")
    assert trainjob["spec"]["trainer"]["numNodes"] == 3
    assert kubernetes.list(MODEL, "jobs") == []


def test_wait_returns_the_result_once_the_watcher_records_the_end(
    ctx, make_state, kubernetes, watcher
):
    def cluster_runs_the_job():
        deadline = time.monotonic() + 10
        while not kubernetes.list(MODEL, "jobs") and time.monotonic() < deadline:
            time.sleep(0.05)
        name = kubernetes.list(MODEL, "jobs")[0]["metadata"]["name"]
        kubernetes.run_pod(MODEL, name, json.dumps(RESULT) + "\n", exit_code=0)
        kubernetes.finish(MODEL, "jobs", name, succeeded=True)
        watcher.sync(JOBS)

    thread = threading.Thread(target=cluster_runs_the_job)
    thread.start()
    _run(ctx, make_state(), "train", spec="image-svc", wait=True)
    thread.join()
    results = ctx.action_results
    assert results is not None
    assert results["state"] == "succeeded" and results["run-id"] == "r1"
    assert results["metrics"] == {"accuracy": "0.93"}
    assert results["classes"] == '["neg", "pos"]'


def test_cancel_job_deletes_in_the_background_and_records_the_cancel(
    ctx, make_state, kubernetes, watcher
):
    state = make_state()
    _run(ctx, state, "train", spec="image-svc")
    job_id = ctx.action_results["job"]  # type: ignore[index]
    name = kubernetes.list(MODEL, "jobs")[0]["metadata"]["name"]
    kubernetes.run_pod(MODEL, name, "epoch 1\n")
    _run(ctx, state, "cancel-job", job=job_id)
    assert ctx.action_results == {"job": job_id, "state": "cancelled", "deleted": "yes"}
    assert kubernetes.deletions == [("jobs", name, "Background")]
    assert kubernetes.list(MODEL, "pods") == []  # background propagation took them
    watcher.sync(JOBS)  # the watcher sees it gone: nothing more is recorded
    _run(ctx, state, "list-jobs")
    (job,) = json.loads(ctx.action_results["jobs"])  # type: ignore[index]
    assert job["state"] == "failed" and job["error"] == "cancelled by the cancel-job action"
    with pytest.raises(testing.ActionFailed, match="has ended already"):
        _run(ctx, state, "cancel-job", job=job_id)


def test_cancel_an_unknown_job_fails(ctx, make_state, kubernetes):
    with pytest.raises(testing.ActionFailed, match="no job 20260101000000-0001"):
        _run(ctx, make_state(), "cancel-job", job="20260101000000-0001")


def test_job_logs_read_the_pod_while_running_and_the_storage_after(
    ctx, make_state, kubernetes, watcher
):
    state = make_state()
    _run(ctx, state, "train", spec="image-svc")
    job_id = ctx.action_results["job"]  # type: ignore[index]
    name = kubernetes.list(MODEL, "jobs")[0]["metadata"]["name"]
    log = "".join(f"line {n}\n" for n in range(10))
    kubernetes.run_pod(MODEL, name, log)
    _run(ctx, state, "job-logs", job=job_id, lines=3)
    assert ctx.action_results == {
        "job": job_id,
        "state": "running",
        "lines": "3",
        "log": "line 7\nline 8\nline 9",
    }
    kubernetes.finish(MODEL, "jobs", name, succeeded=True)
    watcher.sync(JOBS)
    kubernetes.delete(MODEL, "jobs", name)  # its TTL passed: the pods are gone too
    _run(ctx, state, "job-logs", job=job_id, lines=2)
    assert ctx.action_results["log"] == "line 8\nline 9"  # type: ignore[index]
    assert ctx.action_results["state"] == "failed"  # type: ignore[index] - no JSON result


def test_list_jobs_shows_kind_state_and_params_newest_first(ctx, make_state, kubernetes):
    state = make_state()
    _run(ctx, state, "train", spec="image-svc")
    _run(ctx, state, "error-analysis", spec="image-svc", version="v1")
    _run(ctx, state, "list-jobs")
    results = ctx.action_results
    assert results is not None and results["count"] == 2
    listed = json.loads(results["jobs"])
    assert [(j["kind"], j["state"]) for j in listed] == [
        ("error-analysis", "running"),
        ("train", "running"),
    ]
    assert listed[0]["params"] == {"version": "v1", "spec": "image-svc", "backend": "Job"}
    assert results["running"] == ",".join(j["id"] for j in reversed(listed))


def test_load_params_names_hyphenated_action_params():
    params = training.ErrorAnalysisParams(spec="image-svc", top_k=5)
    assert params.arguments("v1")[-2:] == ["--top-k", "5"]
