#!/usr/bin/env python3
"""Watches one application's training Jobs and records each one's end for the charm.

Runs as a Pebble service in the charm's workload container (the training rock carries this
file), with the standard library only: the rock's Python, none of the charm's venv. It talks
to the Kubernetes API with the pod's service account (``juju trust`` gives it access), lists
then watches the Jobs (and Kubeflow Trainer TrainJobs) that carry the application's label,
and when one ends it writes its end into the job's folder in the format of
``mlops_charms.jobs`` (the charm created the folder and its ``job.json`` when it started the
Job), marks it unreported, and records the Pebble custom notice the charm acts on:

    stdout   the last line of the trainer's log that is a JSON object (its result)
    stderr   a failed Job's one-line reason (the trainer's ``error: ...`` line, else the
             Job's Failed condition)
    log      the last lines of the trainer's log, for the job-logs action
    exit     the exit code and end time, written last

A Job without a folder (another unit's, or pruned) is left alone, and an end already
recorded is never recorded again, so a restarted watcher, which lists everything again,
repeats nothing. A Job deleted before it ended (cancel-job records its own end first) is
recorded as failed. The charm also calls ``outcome`` to read a Job's state.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger("job-watcher")

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
JOB_ID_LABEL = "mlops-stack.dev/job-id"
UNREPORTED = "unreported"  # mlops_charms.jobs.UNREPORTED
LOG_LINES = 500
WATCH_SECONDS = 290  # the API server ends a watch after its timeout; we list again then
RETRY_SECONDS = (1, 2, 5, 10, 30, 60)
# The trainer's container: ours in a Job, the torch runtime's in a TrainJob's pods.
TRAINER_CONTAINERS = ("trainer", "node")


@dataclass(frozen=True)
class Kind:
    """A kind of object the watcher follows, and how its pods are found."""

    api: str  # /apis/<group>/<version>
    plural: str
    pod_label: str  # the label pods carry with the object's name

    def collection(self, namespace: str) -> str:
        return f"{self.api}/namespaces/{namespace}/{self.plural}"


JOBS = Kind("/apis/batch/v1", "jobs", "batch.kubernetes.io/job-name")
TRAINJOBS = Kind(
    "/apis/trainer.kubeflow.org/v1alpha1", "trainjobs", "jobset.sigs.k8s.io/jobset-name"
)


def outcome(obj: dict[str, Any]) -> tuple[str, str] | None:
    """``("succeeded" | "failed", reason)`` once a Job or TrainJob has ended, else None.

    Both end with a ``Complete`` or ``Failed`` condition that is true (a Job's
    ``SuccessCriteriaMet`` and ``FailureTarget`` come before them, while pods still stop).
    """
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "succeeded", ""
        if condition.get("type") == "Failed":
            reason = condition.get("reason") or "Failed"
            message = " ".join(str(condition.get("message") or "").split())
            return "failed", f"{reason}: {message}" if message else reason
    return None


def last_json_object(lines: Sequence[str]) -> dict[str, Any] | None:
    """The last line of ``lines`` that is a JSON object: the trainer's result."""
    for line in reversed(lines):
        text = line.strip()
        if not text.startswith("{"):
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def error_line(lines: Sequence[str]) -> str | None:
    """The trainer's one-line failure (``error: why``), without its prefix."""
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ").strip()
    return None


class ApiError(Exception):
    """The API answered with an error status (``code``) or could not be reached (0)."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{code}: {message}" if code else message)
        self.code = code


class Api:
    """The few calls the watcher makes, over HTTPS with the service account's token."""

    def __init__(self, server: str, token_file: Path | None, ca_file: Path | None):
        self.server = server.rstrip("/")
        self.token_file = token_file
        self.context = None
        if server.startswith("https://"):
            self.context = ssl.create_default_context(
                cafile=str(ca_file) if ca_file and ca_file.exists() else None
            )

    def _open(self, path: str, params: dict[str, str], timeout: float) -> Any:
        query = urllib.parse.urlencode(params)
        url = f"{self.server}{path}?{query}" if query else self.server + path
        request = urllib.request.Request(url)  # noqa: S310 - the API server's http(s) URL
        if self.token_file is not None and self.token_file.exists():
            # Re-read each time: projected service-account tokens are rotated.
            request.add_header("Authorization", f"Bearer {self.token_file.read_text().strip()}")
        try:
            return urllib.request.urlopen(request, timeout=timeout, context=self.context)  # noqa: S310 - the API server's URL
        except urllib.error.HTTPError as error:
            body = error.read().decode(errors="replace")
            try:
                message = json.loads(body).get("message") or body
            except (json.JSONDecodeError, AttributeError):
                message = body
            raise ApiError(error.code, " ".join(str(message).split())[:300]) from None
        except (urllib.error.URLError, OSError) as error:
            raise ApiError(0, f"cannot reach the Kubernetes API: {error}") from None

    def get_json(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        with self._open(path, params or {}, timeout=30) as response:
            return json.loads(response.read())

    def get_text(self, path: str, params: dict[str, str] | None = None) -> str:
        with self._open(path, params or {}, timeout=30) as response:
            return response.read().decode(errors="replace")

    def watch(self, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        """The events of a watch, one JSON object per line, until the server ends it."""
        params = {**params, "watch": "true", "timeoutSeconds": str(WATCH_SECONDS)}
        with self._open(path, params, timeout=WATCH_SECONDS + 30) as response:
            for line in response:
                if line.strip():
                    yield json.loads(line)


class Watcher:
    """Records the end of every Job of ``selector`` that has a folder under ``jobs_dir``."""

    def __init__(
        self,
        api: Api,
        namespace: str,
        selector: str,
        jobs_dir: Path,
        notify: Sequence[str],
    ):
        self.api = api
        self.namespace = namespace
        self.selector = selector
        self.jobs_dir = jobs_dir
        self.notify = list(notify)
        self._lock = threading.Lock()  # one recording at a time (Jobs and TrainJobs)

    # --- one object -------------------------------------------------------------------------

    def handle(self, kind: Kind, event_type: str, obj: dict[str, Any]) -> bool:
        """Act on one listed or watched object; True when an end was recorded."""
        metadata = obj.get("metadata") or {}
        job_id = (metadata.get("labels") or {}).get(JOB_ID_LABEL, "")
        folder = self.jobs_dir / job_id
        if not job_id or "/" in job_id or not (folder / "job.json").is_file():
            return False  # not a job of this unit's folder
        if (folder / "exit").exists():
            return False  # recorded already (or cancelled by the charm)
        if event_type == "DELETED":
            end = ("failed", "the Kubernetes object was deleted before it ended")
        else:
            end = outcome(obj)
        if end is None:
            return False
        with self._lock:
            if (folder / "exit").exists():
                return False
            self._record(kind, str(metadata.get("name", "")), folder, *end)
        return True

    def _record(self, kind: Kind, name: str, folder: Path, state: str, reason: str) -> None:
        lines, exit_code = self._trainer_log(kind, name)
        result = last_json_object(lines)
        if state == "succeeded":
            code, stdout, stderr = 0, json.dumps(result) if result else "", ""
        else:
            code = exit_code if exit_code not in (None, 0) else 1
            why = error_line(lines)
            stdout = ""
            stderr = f"{why} ({reason})" if why and reason else (why or reason)
        _write(folder / "stdout", stdout + "\n" if stdout else "")
        _write(folder / "stderr", stderr + "\n" if stderr else "")
        _write(folder / "log", "".join(line + "\n" for line in lines))
        job_id = folder.name
        # As a job's wrapper does: the mark, then the end, then the notice.
        (self.jobs_dir / UNREPORTED).mkdir(parents=True, exist_ok=True)
        (self.jobs_dir / UNREPORTED / job_id).touch()
        _write(folder / "exit", f"{code} {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}\n")
        logger.info("job %s (%s) %s%s", job_id, name, state, f": {stderr}" if stderr else "")
        self._notify(job_id)

    def _notify(self, job_id: str) -> None:
        if not self.notify:
            return
        try:
            subprocess.run(
                [*self.notify, f"job={job_id}"], check=True, capture_output=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError) as error:
            # The mark stays: the charm's next hook reports the job all the same.
            logger.warning("cannot record the notice for job %s: %s", job_id, error)

    def _trainer_log(self, kind: Kind, name: str) -> tuple[list[str], int | None]:
        """The last lines of the trainer's log, and its exit code (the pods may be gone)."""
        pods_path = f"/api/v1/namespaces/{self.namespace}/pods"
        try:
            pods = self.api.get_json(pods_path, {"labelSelector": f"{kind.pod_label}={name}"})
        except ApiError as error:
            logger.warning("cannot list the pods of %s: %s", name, error)
            return [], None
        pod = _trainer_pod(pods.get("items") or [])
        if pod is None:
            return [], None
        container, exit_code = _trainer_container(pod)
        params = {"tailLines": str(LOG_LINES)}
        if container:
            params["container"] = container
        pod_name = (pod.get("metadata") or {}).get("name", "")
        try:
            text = self.api.get_text(f"{pods_path}/{pod_name}/log", params)
        except ApiError as error:
            logger.warning("cannot read the log of %s: %s", pod_name, error)
            return [], exit_code
        return text.splitlines()[-LOG_LINES:], exit_code

    # --- following a kind -------------------------------------------------------------------

    def sync(self, kind: Kind) -> str:
        """List every object of ``kind`` and act on each; the list's resource version."""
        listed = self.api.get_json(
            kind.collection(self.namespace), {"labelSelector": self.selector}
        )
        for obj in listed.get("items") or []:
            self.handle(kind, "ADDED", obj)
        return str((listed.get("metadata") or {}).get("resourceVersion", ""))

    def follow(self, kind: Kind, stop: threading.Event) -> None:
        """List, then watch from the list's version, until ``stop``; list again on any gap."""
        failures = 0
        while not stop.is_set():
            try:
                version = self.sync(kind)
                failures = 0
                params = {"labelSelector": self.selector, "allowWatchBookmarks": "true"}
                if version:
                    params["resourceVersion"] = version
                for event in self.api.watch(kind.collection(self.namespace), params):
                    if stop.is_set():
                        return
                    event_type, obj = event.get("type", ""), event.get("object") or {}
                    if event_type == "ERROR":
                        break  # 410 Gone (too old a version) and the like: list again
                    if event_type in ("ADDED", "MODIFIED", "DELETED"):
                        self.handle(kind, event_type, obj)
            except (ApiError, ValueError, OSError) as error:
                if isinstance(error, ApiError) and error.code == 404 and kind is TRAINJOBS:
                    logger.info("no TrainJob API (Kubeflow Trainer is not installed)")
                else:
                    logger.warning("%s: %s", kind.plural, error)
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                stop.wait(delay)


def _write(path: Path, content: str) -> None:
    """Write ``content`` whole: a reader sees the old file or the new one, never half."""
    partial = path.with_name(path.name + ".new")
    partial.write_text(content)
    partial.replace(path)


def _trainer_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The pod whose log holds the result: a TrainJob's first node, else the newest pod."""

    def key(pod: dict[str, Any]) -> tuple[int, str]:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        first_node = labels.get("batch.kubernetes.io/job-completion-index", "0") == "0"
        return (
            1 if first_node else 0,
            str((pod.get("metadata") or {}).get("creationTimestamp", "")),
        )

    return max(pods, key=key) if pods else None


def _trainer_container(pod: dict[str, Any]) -> tuple[str | None, int | None]:
    """The trainer's container in ``pod`` and its exit code, if it has ended."""
    names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
    container = next((name for name in TRAINER_CONTAINERS if name in names), None)
    if container is None:
        container = names[0] if names else None
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            terminated = (status.get("state") or {}).get("terminated") or {}
            code = terminated.get("exitCode")
            return container, int(code) if isinstance(code, int) else None
    return container, None


def in_cluster_server() -> str:
    """The API server's URL inside a pod (Kubernetes sets these in every container)."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python3 job_watcher.py --selector ... --jobs-dir ...``."""
    parser = argparse.ArgumentParser(description="Record the end of an application's Jobs.")
    parser.add_argument("--selector", required=True, help="label selector of the Jobs")
    parser.add_argument("--jobs-dir", required=True, type=Path, help="the charm's job folders")
    parser.add_argument("--namespace", help="default: the service account's")
    parser.add_argument("--trainjobs", action="store_true", help="follow TrainJobs too")
    parser.add_argument("--notify-command", default="[]", help="a JSON list; job=ID is added")
    parser.add_argument("--api-server", help="default: the in-cluster API server")
    parser.add_argument("--service-account", type=Path, default=Path(SERVICE_ACCOUNT))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    account = args.service_account
    namespace = args.namespace or (account / "namespace").read_text().strip()
    api = Api(args.api_server or in_cluster_server(), account / "token", account / "ca.crt")
    watcher = Watcher(
        api, namespace, args.selector, args.jobs_dir, json.loads(args.notify_command)
    )
    stop = threading.Event()
    kinds = [JOBS, TRAINJOBS] if args.trainjobs else [JOBS]
    threads = [
        threading.Thread(target=watcher.follow, args=(kind, stop), daemon=True) for kind in kinds
    ]
    for thread in threads:
        thread.start()
    try:
        while all(thread.is_alive() for thread in threads):
            time.sleep(1)
    except KeyboardInterrupt:
        stop.set()
    return 1  # a follower ended: Pebble restarts the service


if __name__ == "__main__":
    sys.exit(main())
