"""The job watcher against an API server over real HTTP: list, watch, record, notify."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from training_testing import APP, MODEL

import job_watcher
import kubernetes_jobs
from job_watcher import JOBS, TRAINJOBS, Watcher
from tests.fake_kubernetes import TRAINJOB_CRD, FakeKubernetes

RESULT = {"run_id": "abc123", "metrics": {"accuracy": 0.9}}


def _job(job_id: str, kind: str = "train") -> dict:
    labels = {**kubernetes_jobs.app_labels(APP), "mlops-stack.dev/job-id": job_id}
    labels["mlops-stack.dev/job-kind"] = kind
    return {"metadata": {"name": f"{APP}-{job_id}", "labels": labels}, "spec": {}}


@pytest.fixture
def cluster() -> Iterator[FakeKubernetes]:
    with FakeKubernetes(crds={TRAINJOB_CRD}).serve() as fake:
        yield fake


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    return tmp_path / "jobs"


@pytest.fixture
def notices(tmp_path: Path) -> Path:
    return tmp_path / "notices"


@pytest.fixture
def watcher(cluster: FakeKubernetes, jobs_dir: Path, notices: Path) -> Watcher:
    """The watcher; its notice command appends ``job=<id>`` lines to ``notices``."""
    script = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"
    notify = [sys.executable, "-c", script, str(notices)]
    return Watcher(
        job_watcher.Api(cluster.url, None, None),
        MODEL,
        kubernetes_jobs.selector(APP),
        jobs_dir,
        notify,
    )


def _folder(jobs_dir: Path, job_id: str) -> Path:
    """The job's folder as the charm makes it when it creates the Job."""
    folder = jobs_dir / job_id
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps({"id": job_id, "kind": "train"}))
    return folder


def _wait_for(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture
def following(watcher: Watcher, cluster: FakeKubernetes) -> Iterator[threading.Event]:
    """The watcher following Jobs in a thread, as its service does."""
    stop = threading.Event()
    thread = threading.Thread(target=watcher.follow, args=(JOBS, stop), daemon=True)
    thread.start()
    yield stop
    stop.set()  # the thread ends with the server's stream (a daemon: nothing waits for it)


def test_a_job_ending_while_watched_is_recorded_with_its_result_and_notified(
    cluster: FakeKubernetes, jobs_dir: Path, notices: Path, following
):
    folder = _folder(jobs_dir, "20260101120000-0001")
    name = cluster.add("apis/batch/v1", MODEL, "jobs", _job("20260101120000-0001"))["metadata"][
        "name"
    ]
    log = "loading v2\n" + json.dumps(RESULT) + "\n"
    cluster.run_pod(MODEL, name, log, exit_code=0)
    cluster.finish(MODEL, "jobs", name, succeeded=True)
    _wait_for(folder / "exit")
    assert folder.joinpath("exit").read_text().startswith("0 ")
    assert json.loads(folder.joinpath("stdout").read_text()) == RESULT
    assert folder.joinpath("log").read_text() == log
    assert (jobs_dir / "unreported" / "20260101120000-0001").exists()
    _wait_for(notices)
    assert notices.read_text() == "job=20260101120000-0001\n"


def test_a_failed_job_gives_the_trainers_error_line_and_the_jobs_reason(
    cluster: FakeKubernetes, jobs_dir: Path, watcher: Watcher
):
    folder = _folder(jobs_dir, "20260101120000-0002")
    name = cluster.add("apis/batch/v1", MODEL, "jobs", _job("20260101120000-0002"))["metadata"][
        "name"
    ]
    cluster.run_pod(MODEL, name, "working\nerror: unknown spec 'nope'\n", exit_code=1)
    cluster.finish(
        MODEL,
        "jobs",
        name,
        succeeded=False,
        reason="PodFailurePolicy",
        message="Container trainer for pod x failed with exit code 1",
    )
    watcher.sync(JOBS)
    assert folder.joinpath("exit").read_text().startswith("1 ")
    assert folder.joinpath("stderr").read_text() == (
        "unknown spec 'nope' (PodFailurePolicy: Container trainer for pod x failed with exit"
        " code 1)\n"
    )


def test_a_job_past_its_deadline_without_a_pod_log_gives_the_condition(
    cluster: FakeKubernetes, jobs_dir: Path, watcher: Watcher
):
    folder = _folder(jobs_dir, "20260101120000-0003")
    name = cluster.add("apis/batch/v1", MODEL, "jobs", _job("20260101120000-0003"))["metadata"][
        "name"
    ]
    cluster.finish(
        MODEL,
        "jobs",
        name,
        succeeded=False,
        reason="DeadlineExceeded",
        message="Job was active longer than specified deadline",
    )
    watcher.sync(JOBS)
    assert folder.joinpath("stderr").read_text() == (
        "DeadlineExceeded: Job was active longer than specified deadline\n"
    )


def test_a_job_deleted_before_it_ended_is_recorded_as_failed(
    cluster: FakeKubernetes, jobs_dir: Path, following
):
    folder = _folder(jobs_dir, "20260101120000-0004")
    name = cluster.add("apis/batch/v1", MODEL, "jobs", _job("20260101120000-0004"))["metadata"][
        "name"
    ]
    time.sleep(0.2)  # the watch has seen it
    cluster.delete(MODEL, "jobs", name)
    _wait_for(folder / "exit")
    assert "deleted before it ended" in folder.joinpath("stderr").read_text()


def test_a_recorded_end_is_never_recorded_again(
    cluster: FakeKubernetes, jobs_dir: Path, watcher: Watcher, notices: Path
):
    folder = _folder(jobs_dir, "20260101120000-0005")
    name = cluster.add("apis/batch/v1", MODEL, "jobs", _job("20260101120000-0005"))["metadata"][
        "name"
    ]
    cluster.finish(MODEL, "jobs", name, succeeded=True)
    watcher.sync(JOBS)
    first = folder.joinpath("exit").stat()
    watcher.sync(JOBS)  # a restarted watcher lists everything again
    assert folder.joinpath("exit").stat().st_ino == first.st_ino  # a rewrite is a new file
    assert notices.read_text().count("job=") == 1


def test_jobs_without_a_folder_or_of_another_app_are_left_alone(
    cluster: FakeKubernetes, jobs_dir: Path, watcher: Watcher
):
    theirs = _job("20260101120000-0006")
    theirs["metadata"]["labels"]["mlops-stack.dev/app"] = "other-training"
    theirs["metadata"]["name"] = "other"
    _folder(jobs_dir, "20260101120000-0006")
    for obj in (theirs, _job("20260101120000-0007")):
        cluster.add("apis/batch/v1", MODEL, "jobs", obj)
        cluster.finish(MODEL, "jobs", obj["metadata"]["name"], succeeded=True)
    watcher.sync(JOBS)
    assert not (jobs_dir / "20260101120000-0006" / "exit").exists()
    assert not (jobs_dir / "20260101120000-0007").exists()


def test_a_watch_too_old_to_resume_lists_again_and_misses_nothing(
    cluster: FakeKubernetes, jobs_dir: Path, following
):
    folder = _folder(jobs_dir, "20260101120000-0008")
    name = cluster.add("apis/batch/v1", MODEL, "jobs", _job("20260101120000-0008"))["metadata"][
        "name"
    ]
    time.sleep(0.2)
    cluster.expire_watch_history()  # the watch's next events would be from a compacted version
    cluster.finish(MODEL, "jobs", name, succeeded=True)
    _wait_for(folder / "exit", timeout=15)


def test_a_trainjob_is_recorded_from_its_first_nodes_log(
    cluster: FakeKubernetes, jobs_dir: Path, watcher: Watcher
):
    folder = _folder(jobs_dir, "20260101120000-0009")
    trainjob = _job("20260101120000-0009")
    name = trainjob["metadata"]["name"]
    cluster.add("apis/trainer.kubeflow.org/v1alpha1", MODEL, "trainjobs", trainjob)
    for index, log in (("1", "worker\n"), ("0", json.dumps(RESULT) + "\n")):
        labels = {
            "jobset.sigs.k8s.io/jobset-name": name,
            "batch.kubernetes.io/job-completion-index": index,
        }
        cluster.run_pod(MODEL, f"{name}-node-0", log, exit_code=0, labels=labels, container="node")
    cluster.finish(MODEL, "trainjobs", name, succeeded=True)
    watcher.sync(TRAINJOBS)
    assert json.loads(folder.joinpath("stdout").read_text()) == RESULT


def test_forbidden_is_an_api_error_the_follower_retries(cluster: FakeKubernetes, watcher: Watcher):
    cluster.forbidden = True
    with pytest.raises(job_watcher.ApiError) as raised:
        watcher.sync(JOBS)
    assert raised.value.code == 403


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([], None),
        ([{"type": "SuccessCriteriaMet", "status": "True"}], None),
        ([{"type": "Complete", "status": "True"}], ("succeeded", "")),
        ([{"type": "Failed", "status": "False"}], None),
        (
            [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
            ("failed", "BackoffLimitExceeded"),
        ),
    ],
)
def test_outcome_reads_only_the_final_conditions(conditions, expected):
    assert job_watcher.outcome({"status": {"conditions": conditions}}) == expected


def test_the_service_account_token_is_sent_and_reread(cluster: FakeKubernetes, tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("first\n")
    api = job_watcher.Api(cluster.url, token, None)
    api.get_json(f"/apis/batch/v1/namespaces/{MODEL}/jobs")
    token.write_text("rotated\n")
    api.get_json(f"/apis/batch/v1/namespaces/{MODEL}/jobs")
    assert [r.authorization for r in cluster.requests[-2:]] == ["Bearer first", "Bearer rotated"]
