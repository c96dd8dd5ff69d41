"""The machine charm's hooks and actions, on a fake machine (see conftest)."""

from __future__ import annotations

import dataclasses
import json
import stat
import sys
from pathlib import Path

from conftest import APP, Machine
from ops import testing

import machine_paths

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "training-k8s/tests/unit"))
from training_testing import (
    GIT_PASSWORD,
    MLFLOW_PASSWORD,
    dataset_relation,
    tracking_relation,
)


def _related() -> testing.State:
    dataset, dataset_secret = dataset_relation()
    tracking, tracking_secret = tracking_relation()
    return testing.State(
        leader=True,
        relations={dataset, tracking},
        secrets={dataset_secret, tracking_secret},
    )


def test_status_says_cpu_only_without_a_gpu(ctx, machine: Machine):
    state = ctx.run(ctx.on.update_status(), _related())
    assert state.unit_status == testing.ActiveStatus("no NVIDIA GPU: CPU only; no job running")


def test_status_names_the_gpus_nvidia_smi_reports(ctx, machine: Machine):
    machine.give_gpus("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3")
    state = ctx.run(ctx.on.update_status(), _related())
    assert state.unit_status.message.startswith(
        "2 GPU(s): NVIDIA H100 80GB HBM3, driver 570.86.15"
    )


def test_install_asks_apt_for_venv_and_git(ctx, machine: Machine):
    ctx.run(ctx.on.install(), testing.State())
    assert any("python3-venv" in call and "git" in call for call in machine.calls("apt-get"))


def test_bad_memory_limit_blocks(ctx, machine: Machine):
    state = ctx.run(ctx.on.config_changed(), testing.State(config={"job-memory-max": "lots"}))
    assert isinstance(state.unit_status, testing.BlockedStatus)
    assert "job-memory-max" in state.unit_status.message


def test_a_pip_index_that_is_not_a_url_blocks(ctx, machine: Machine):
    state = ctx.run(ctx.on.config_changed(), testing.State(config={"pip-index-url": "pypi"}))
    assert state.unit_status == testing.BlockedStatus(
        "pip-index-url: must be an http:// or https:// URL"
    )


def test_train_starts_a_systemd_unit_with_gpus_and_private_credentials(ctx, machine: Machine):
    machine.give_gpus("NVIDIA A100", "NVIDIA A100")
    ctx.run(ctx.on.action("train", params={"spec": "text-tfidf-logreg"}), _related())
    results = ctx.action_results
    assert results is not None and results["state"] == "running" and results["gpus"] == "0"
    unit = Path(machine_paths.PATHS.units_dir) / results["unit"]
    text = unit.read_text()
    assert "Environment=CUDA_VISIBLE_DEVICES=0" in text and "Restart=no" in text
    assert GIT_PASSWORD not in text and MLFLOW_PASSWORD not in text
    env = Path(machine_paths.PATHS.jobs_dir) / results["job"] / "env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600 and GIT_PASSWORD in env.read_text()
    assert results["unit"] in machine.running_units()


def test_a_second_job_gets_the_next_free_gpu_and_a_third_fails(ctx, machine: Machine):
    machine.give_gpus("NVIDIA A100", "NVIDIA A100")
    given = []
    for _ in range(2):
        ctx.run(ctx.on.action("train", params={"spec": "image-svc"}), _related())
        assert ctx.action_results is not None
        given.append(ctx.action_results["gpus"])
    assert given == ["0", "1"]
    try:
        ctx.run(ctx.on.action("train", params={"spec": "image-svc"}), _related())
    except testing.ActionFailed as failure:
        assert "fewer are free" in failure.message
    else:
        raise AssertionError("a third job found a GPU")


def test_a_run_systemd_does_not_start_fails_the_action_and_frees_its_gpu(ctx, machine: Machine):
    machine.give_gpus("NVIDIA A100")
    (machine.state / "systemctl-fails").write_text("start\n")
    try:
        ctx.run(ctx.on.action("train", params={"spec": "image-svc"}), _related())
    except testing.ActionFailed as failure:
        assert "systemd did not start" in failure.message
    else:
        raise AssertionError("train reported a run systemd did not start")
    ctx.run(ctx.on.action("list-jobs"), _related())
    assert ctx.action_results is not None
    (listed,) = json.loads(ctx.action_results["jobs"])
    assert listed["state"] == "failed" and "systemd did not start" in listed["error"]
    (machine.state / "systemctl-fails").unlink()
    ctx.run(ctx.on.action("train", params={"spec": "image-svc"}), _related())
    assert ctx.action_results is not None and ctx.action_results["gpus"] == "0"


def test_an_ended_error_analysis_offers_its_batch_once(ctx, machine: Machine):
    relabel = testing.Relation("mlops-relabel", remote_app_name="labelling-k8s")
    state = _related()
    state = testing.State(
        leader=True, relations={*state.relations, relabel}, secrets=state.secrets
    )
    ctx.run(ctx.on.action("error-analysis", params={"spec": "image-svc"}), state)
    assert ctx.action_results is not None
    job_id = ctx.action_results["job"]
    folder = Path(machine_paths.PATHS.jobs_dir) / job_id
    batch = {"batch_id": "b1", "items": ["images/1.png"], "reason": "suspected label error"}
    (folder / "stdout").write_text(json.dumps({"relabel_batch": batch}))
    (folder.parent / "unreported" / job_id).touch()
    (folder / "exit").write_text("0 2026-11-30T16:00:00Z\n")
    # job-ended (juju-exec) and update-status run the same reconcile.
    out = ctx.run(ctx.on.update_status(), state)
    offered = json.loads(out.get_relation(relabel.id).local_app_data["batches"])
    assert [b["batch_id"] for b in offered] == ["b1"]
    assert not (folder.parent / "unreported" / job_id).exists()
    assert not (Path(machine_paths.PATHS.units_dir) / machine_paths.unit_name(job_id)).exists()


def test_cancel_job_records_the_end_and_stops_without_blocking(ctx, machine: Machine):
    ctx.run(ctx.on.action("train", params={"spec": "image-svc"}), _related())
    assert ctx.action_results is not None
    job_id = ctx.action_results["job"]
    ctx.run(ctx.on.action("cancel-job", params={"job": job_id}), _related())
    assert ctx.action_results == {"job": job_id, "state": "cancelled", "stopped": "yes"}
    assert ["stop", "--no-block", machine_paths.unit_name(job_id)] in machine.calls("systemctl")
    ctx.run(ctx.on.action("list-jobs"), _related())
    assert ctx.action_results is not None
    listed = json.loads(ctx.action_results["jobs"])
    assert listed[0]["state"] == "failed" and "cancelled" in listed[0]["error"]


def test_job_logs_reads_the_units_journal(ctx, machine: Machine):
    ctx.run(ctx.on.action("train", params={"spec": "image-svc"}), _related())
    assert ctx.action_results is not None
    job_id = ctx.action_results["job"]
    journal = machine.state / "journal" / machine_paths.unit_name(job_id)
    journal.write_text("fold 1/5: accuracy 0.91\nfold 2/5: accuracy 0.93\n")
    ctx.run(ctx.on.action("job-logs", params={"job": job_id, "lines": 1}), _related())
    assert ctx.action_results is not None
    assert ctx.action_results["log"] == "fold 2/5: accuracy 0.93"


def test_update_status_records_a_job_whose_unit_vanished(ctx, machine: Machine):
    ctx.run(ctx.on.action("train", params={"spec": "image-svc"}), _related())
    assert ctx.action_results is not None
    job_id = ctx.action_results["job"]
    (machine.state / "units" / machine_paths.unit_name(job_id)).unlink()  # a reboot
    ctx.run(ctx.on.update_status(), _related())
    folder = Path(machine_paths.PATHS.jobs_dir) / job_id
    assert (folder / "exit").read_text().startswith("1 ")
    assert "end was not recorded" in (folder / "stderr").read_text()


def test_train_without_the_registry_fails_with_the_reason(ctx, machine: Machine):
    try:
        ctx.run(ctx.on.action("train", params={"spec": "image-svc"}), testing.State(leader=True))
    except testing.ActionFailed as failure:
        assert failure.message == "no data registry: relate mlops-dataset to data-versioning-k8s"
    else:
        raise AssertionError("train ran without a registry")


def test_leader_asks_for_write_access_and_its_experiment(ctx, machine: Machine):
    state = ctx.run(ctx.on.config_changed(), _related())
    dataset = next(r for r in state.relations if r.endpoint == "mlops-dataset")
    tracking = next(r for r in state.relations if r.endpoint == "mlops-tracking")
    assert json.loads(dataset.local_app_data["access"]) == "write"
    assert json.loads(tracking.local_app_data["experiment"]) == APP


def test_runs_log_to_the_tracking_servers_ingress_url_from_outside_the_cluster(
    ctx, machine: Machine
):
    external = "https://mlflow.example.com/mlops-tracking-k8s"
    dataset, dataset_secret = dataset_relation()
    tracking, tracking_secret = tracking_relation()
    data = {**tracking.remote_app_data, "external_tracking_uri": json.dumps(external)}
    tracking = dataclasses.replace(tracking, remote_app_data=data)
    state = testing.State(
        leader=True, relations={dataset, tracking}, secrets={dataset_secret, tracking_secret}
    )
    ctx.run(ctx.on.action("train", params={"spec": "image-svc"}), state)
    assert ctx.action_results is not None
    unit = Path(machine_paths.PATHS.units_dir) / ctx.action_results["unit"]
    assert f'Environment="MLFLOW_TRACKING_URI={external}"' in unit.read_text()
