"""What the bundle tests do with a deployed stack, on Kubernetes and on machines alike.

The services' REST APIs as a person uses them (Label Studio as its admin, MLflow as its admin),
a bundle rendered with packed charms, and waiting: for a status message, for a training job
to end. Each helper takes the application it talks to: the Kubernetes bundle names it
``training-k8s``, the machine bundle ``training``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pytest_operator.plugin import OpsTest

STATUS_TIMEOUT_S = 10 * 60
JOB_TIMEOUT_S = 15 * 60
POLL_S = 10


# --- the services' REST APIs --------------------------------------------------------------------


def request_json(url: str, authorization: str, method: str = "GET", body: Any = None) -> Any:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": authorization, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


def choice(label: str) -> list[dict[str, Any]]:
    """A text classification answer of the bundle's label config."""
    return [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}
    ]


class LabelStudio:
    """Label Studio's REST API as the admin, where the annotators work."""

    def __init__(self, base: str, token: str):
        self.base = base
        self.authorization = f"Token {token}"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return request_json(f"{self.base}{path}", self.authorization, method, body)

    def project(self, title: str) -> dict[str, Any] | None:
        projects = self.call("GET", "/api/projects?page_size=100")["results"]
        return next((p for p in projects if p["title"] == title), None)

    def tasks(self, title: str) -> list[dict[str, Any]]:
        """The project's tasks with their annotations; none while there is no such project."""
        project = self.project(title)
        if project is None:
            return []
        return self.call(
            "GET", f"/api/projects/{project['id']}/export?exportType=JSON&download_all_tasks=true"
        )

    def create_user(self, username: str) -> int:
        body = {"email": f"{username}@labelling.test", "username": username}
        return self.call("POST", "/api/users/", body)["id"]

    def annotate(self, task_id: int, user_id: int, label: str) -> None:
        body = {"completed_by": user_id, "result": choice(label)}
        self.call("POST", f"/api/tasks/{task_id}/annotations", body)


def mlflow_call(base: str, user: str, password: str, path: str, body: Any = None) -> Any:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    method = "GET" if body is None else "POST"
    return request_json(f"{base}/api/2.0/mlflow/{path}", f"Basic {token}", method, body)


def run_tag(run: dict[str, Any], key: str) -> str | None:
    return next((t["value"] for t in run["data"].get("tags", []) if t["key"] == key), None)


# --- Juju ---------------------------------------------------------------------------------------


def render_bundle(
    bundle_path: Path,
    directory: Path,
    charms: Mapping[str, Path],
    resources: Mapping[str, str] | None = None,
) -> Path:
    """``bundle_path`` with packed charms (absolute paths) and these ``resources``, written."""
    bundle = yaml.safe_load(bundle_path.read_text())
    for app, application in bundle["applications"].items():
        application["charm"] = str(charms[app])
        for resource in application.get("resources") or {}:
            application["resources"][resource] = (resources or {})[resource]
    rendered = directory / bundle_path.name
    rendered.write_text(yaml.safe_dump(bundle, sort_keys=False))
    return rendered


async def config_value(ops_test: OpsTest, app: str, option: str) -> Any:
    assert ops_test.model is not None
    config = await ops_test.model.applications[app].get_config()
    entry = config[option]
    return entry.get("value", entry.get("default"))


async def wait_for_message(
    ops_test: OpsTest, unit_name: str, wanted: Callable[[str], bool], what: str
) -> str:
    """Until the unit is active with a status message ``wanted`` accepts; the message."""
    assert ops_test.model is not None
    deadline = time.monotonic() + STATUS_TIMEOUT_S
    while True:
        unit = ops_test.model.units[unit_name]
        message = unit.workload_status_message or ""
        if unit.workload_status == "active" and wanted(message):
            return message
        assert time.monotonic() < deadline, (
            f"{unit_name} never showed {what}: {unit.workload_status} {message!r}"
        )
        await asyncio.sleep(POLL_S)


async def ended_job(run_action, unit_name: str, kind: str, version: str) -> dict[str, Any]:
    """The unit's newest ``kind`` job on ``version``, once it has ended.

    The job may not exist yet: the charm starts it by itself.
    """
    deadline = time.monotonic() + JOB_TIMEOUT_S
    seen = None
    while True:
        listed = await run_action(unit_name, "list-jobs")
        seen = next(
            (
                job
                for job in json.loads(listed.results["jobs"])  # newest first
                if job["kind"] == kind and job["params"].get("version") == version
            ),
            None,
        )
        if seen is not None and seen["state"] != "running":
            return seen
        assert time.monotonic() < deadline, f"no ended {kind} job on {version}: {seen}"
        await asyncio.sleep(POLL_S)


async def job_result(run_action, unit_name: str, job_id: str) -> dict[str, Any]:
    """An ended training job's JSON result: the last line of its log that is a JSON object."""
    logs = await run_action(unit_name, "job-logs", job=job_id, lines=50)
    for line in reversed(logs.results["log"].splitlines()):
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(result, dict):
            return result
    raise AssertionError(f"job {job_id} logged no JSON result: {logs.results['log'][-500:]}")


async def label_studio(run_action, unit_address, ops_test: OpsTest, app: str) -> LabelStudio:
    token = (await run_action(f"{app}/0", "get-admin-credentials")).results["api-token"]
    port = await config_value(ops_test, app, "port")
    return LabelStudio(f"http://{await unit_address(f'{app}/0')}:{port}", token)


async def tracking(run_action, unit_address, ops_test: OpsTest, app: str) -> Callable[..., Any]:
    """A caller of MLflow's REST API as its admin: ``await call(path, body=None)``."""
    admin = (await run_action(f"{app}/0", "get-admin-credentials")).results
    port = await config_value(ops_test, app, "port")
    base = f"http://{await unit_address(f'{app}/0')}:{port}"

    async def call(path: str, body: Any = None) -> Any:
        return await asyncio.to_thread(
            mlflow_call, base, admin["username"], admin["password"], path, body
        )

    return call
