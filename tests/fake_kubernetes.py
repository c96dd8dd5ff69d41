"""A Kubernetes API server for tests: real HTTP, the objects in memory.

It answers the calls the training charm (through lightkube) and its job watcher (through
``urllib``) make, the way the real API server does: JSON objects with ``metadata.uid``,
``resourceVersion`` and ``creationTimestamp``; ``404``, ``403`` and ``409`` as ``Status``
objects; equality label selectors; ``watch=true`` as a chunked stream of ``{"type",
"object"}`` lines from a resource version, ended after ``timeoutSeconds``; server-side apply;
deletion with a propagation policy (``Background`` deletes a Job's pods, ``Orphan`` and no
policy leave them, as the real garbage collector does for Jobs); pod logs. A created object is
checked with strict field validation: ``validators`` give, per collection, a function that
returns the problems of a body (the API server's ``unknown field`` errors).

What a test plays that a cluster would do by itself: a Job's pod (``run_pod``) and its end
(``finish``), a CRD being installed (``crds``), the application losing its trust
(``forbidden``). Or a ``Kubelet`` runs each new Job's pod for real, as a process here.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

NAMESPACED = re.compile(
    r"^/(?P<api>api/v1|apis/[^/]+/[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>log))?$"
)
CLUSTER = re.compile(r"^/(?P<api>apis/[^/]+/[^/]+)/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$")
KINDS = {
    "jobs": "Job",
    "pods": "Pod",
    "secrets": "Secret",
    "statefulsets": "StatefulSet",
    "trainjobs": "TrainJob",
    "customresourcedefinitions": "CustomResourceDefinition",
}
TRAINJOB_API = "apis/trainer.kubeflow.org/v1alpha1"
TRAINJOB_CRD = "trainjobs.trainer.kubeflow.org"

Validator = Callable[[dict[str, Any]], list[str]]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any] | None
    content_type: str
    authorization: str = ""


@dataclass
class FakeKubernetes:
    """The API server's state; ``serve()`` runs it on a free loopback port."""

    validators: dict[str, Validator] = field(default_factory=dict)
    crds: set[str] = field(default_factory=set)
    forbidden: bool = False
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    logs: dict[tuple[str, str], str] = field(default_factory=dict)  # (namespace, pod) -> log
    requests: list[Request] = field(default_factory=list)
    deletions: list[tuple[str, str, str | None]] = field(
        default_factory=list
    )  # plural, name, policy
    url: str = ""
    _version: int = 100
    _events: list[tuple[int, str, str, str, dict[str, Any]]] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _stopping: bool = False
    _compactions: int = 0

    # --- what a test plays ------------------------------------------------------------------

    def add(self, api: str, namespace: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Put ``obj`` in the cluster (as if someone had created it)."""
        with self._changed:
            return self._store(api, namespace, plural, obj, "ADDED")

    def get(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        for (ns, kind, obj_name), obj in self.objects.items():
            if (ns, kind, obj_name) == (namespace, plural, name):
                return obj
        return None

    def list(self, namespace: str, plural: str) -> list[dict[str, Any]]:
        return [
            o
            for (ns, kind, _), o in sorted(self.objects.items())
            if (ns, kind) == (namespace, plural)
        ]

    def run_pod(
        self,
        namespace: str,
        job: str,
        log: str = "",
        *,
        exit_code: int | None = None,
        labels: dict[str, str] | None = None,
        container: str = "trainer",
    ) -> str:
        """A pod of the Job ``job`` (its labels as the Job controller sets them), with ``log``."""
        name = f"{job}-{uuid.uuid4().hex[:5]}"
        status: dict[str, Any] = {"phase": "Running"}
        if exit_code is not None:
            status = {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "containerStatuses": [
                    {"name": container, "state": {"terminated": {"exitCode": exit_code}}}
                ],
            }
        pod_labels = labels or {"batch.kubernetes.io/job-name": job, "job-name": job}
        self.add(
            "api/v1",
            namespace,
            "pods",
            {
                "metadata": {"name": name, "labels": pod_labels},
                "spec": {"containers": [{"name": container, "image": "trainer"}]},
                "status": status,
            },
        )
        self.logs[(namespace, name)] = log
        return name

    def finish(
        self,
        namespace: str,
        plural: str,
        name: str,
        *,
        succeeded: bool,
        reason: str = "BackoffLimitExceeded",
        message: str = "",
    ) -> None:
        """End a Job or TrainJob: its ``Complete`` or ``Failed`` condition becomes true."""
        with self._changed:
            obj = self.get(namespace, plural, name)
            assert obj is not None, f"no {plural}/{name}"
            condition = {"type": "Complete", "status": "True"}
            if not succeeded:
                condition = {
                    "type": "Failed",
                    "status": "True",
                    "reason": reason,
                    "message": message,
                }
            obj.setdefault("status", {})["conditions"] = [condition]
            self._bump(obj, namespace, plural, "MODIFIED")

    def delete(self, namespace: str, plural: str, name: str) -> None:
        """Delete an object as someone else would (a TTL controller, a person)."""
        with self._changed:
            obj = self.objects.pop((namespace, plural, name))
            self._bump(obj, namespace, plural, "DELETED")

    def expire_watch_history(self) -> None:
        """Compaction: open watches end in 410 Gone, as does a watch from any older version."""
        with self._changed:
            self._events.clear()
            self._version += 1000
            self._compactions += 1
            self._changed.notify_all()

    def kubeconfig(self, path: Path, namespace: str) -> Path:
        """A kubeconfig file that points lightkube at this server."""
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "contexts": [
                        {
                            "name": "fake",
                            "context": {"cluster": "fake", "user": "fake", "namespace": namespace},
                        }
                    ],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                }
            )
        )
        return path

    @contextmanager
    def serve(self) -> Iterator[FakeKubernetes]:
        """Run the server on a free loopback port; ``url`` says where."""
        fake = self

        class Handler(_Handler):
            api = fake

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            with self._changed:
                self._stopping = True
                self._changed.notify_all()
            server.shutdown()
            server.server_close()

    # --- the API ----------------------------------------------------------------------------

    def _store(
        self, api: str, namespace: str, plural: str, obj: dict[str, Any], event: str
    ) -> dict[str, Any]:
        metadata = obj.setdefault("metadata", {})
        metadata.setdefault("uid", str(uuid.uuid4()))
        metadata.setdefault("creationTimestamp", f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S.%fZ}")
        metadata["namespace"] = namespace
        obj.setdefault("apiVersion", api.removeprefix("api/").removeprefix("apis/"))
        obj.setdefault("kind", KINDS.get(plural, plural))
        self.objects[(namespace, plural, metadata["name"])] = obj
        self._bump(obj, namespace, plural, event)
        return obj

    def _bump(self, obj: dict[str, Any], namespace: str, plural: str, event: str) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        snapshot = json.loads(json.dumps(obj))
        self._events.append((self._version, namespace, plural, event, snapshot))
        self._changed.notify_all()

    def handle(self, request: Request) -> tuple[int, Any]:
        """One request: ``(status, body)``; a body that is a generator is a watch stream."""
        self.requests.append(request)
        if self.forbidden:
            return _status(
                403,
                "Forbidden",
                f"{request.path} is forbidden: User "
                '"system:serviceaccount:model:app" cannot access it',
            )
        cluster = CLUSTER.match(request.path)
        if cluster and cluster["plural"] == "customresourcedefinitions":
            name = cluster["name"]
            if request.method == "GET" and name in self.crds:
                return 200, {
                    "apiVersion": "apiextensions.k8s.io/v1",
                    "kind": "CustomResourceDefinition",
                    "metadata": {"name": name},
                    "spec": {
                        "group": name.split(".", 1)[1],
                        "scope": "Namespaced",
                        "names": {"plural": name.split(".")[0], "kind": "TrainJob"},
                        "versions": [{"name": "v1alpha1", "served": True, "storage": True}],
                    },
                }
            return _status(404, "NotFound", f'customresourcedefinitions "{name}" not found')
        match = NAMESPACED.match(request.path)
        if match is None:
            return _status(404, "NotFound", "the server could not find the requested resource")
        api, namespace, plural, name = match["api"], match["ns"], match["plural"], match["name"]
        if api == TRAINJOB_API and TRAINJOB_CRD not in self.crds:
            return _status(404, "NotFound", "the server could not find the requested resource")
        with self._changed:
            if match["sub"] == "log":
                return self._log(namespace, name, request.query)
            if name is None:
                return self._collection(request, api, namespace, plural)
            return self._object(request, api, namespace, plural, name)

    def _collection(
        self, request: Request, api: str, namespace: str, plural: str
    ) -> tuple[int, Any]:
        if request.method == "POST":
            body = request.body or {}
            name = (body.get("metadata") or {}).get("name", "")
            if not body.get("apiVersion") or not body.get("kind"):
                return _status(400, "BadRequest", "Object 'Kind' is missing in the body")
            problems = self.validators.get(plural, lambda _: [])(body)
            if problems:
                return _status(
                    422,
                    "Invalid",
                    f"{KINDS.get(plural, plural)} {name!r} is invalid: {'; '.join(problems)}",
                )
            if (namespace, plural, name) in self.objects:
                return _status(409, "AlreadyExists", f'{plural} "{name}" already exists')
            return 201, self._store(api, namespace, plural, body, "ADDED")
        if request.method != "GET":
            return _status(405, "MethodNotAllowed", request.method)
        selector = _selector(request.query.get("labelSelector", ""))
        if request.query.get("watch") in ("true", "1"):
            return 200, self._watch(namespace, plural, selector, request.query)
        items = [o for o in self.list(namespace, plural) if _matches(o, selector)]
        return 200, {
            "kind": f"{KINDS.get(plural, plural)}List",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self._version)},
            "items": items,
        }

    def _object(
        self, request: Request, api: str, namespace: str, plural: str, name: str
    ) -> tuple[int, Any]:
        key = (namespace, plural, name)
        if request.method == "PATCH" and "apply-patch" in request.content_type:
            body = request.body or {}
            existing = self.objects.get(key)
            if existing is None:
                return 201, self._store(api, namespace, plural, body, "ADDED")
            existing.update({k: v for k, v in body.items() if k != "metadata"})
            existing["metadata"].update({k: v for k, v in body["metadata"].items() if v})
            self._bump(existing, namespace, plural, "MODIFIED")
            return 200, existing
        obj = self.objects.get(key)
        if obj is None:
            return _status(404, "NotFound", f'{plural} "{name}" not found')
        if request.method == "GET":
            return 200, obj
        if request.method == "DELETE":
            policy = (request.body or {}).get("propagationPolicy") or request.query.get(
                "propagationPolicy"
            )
            self.deletions.append((plural, name, policy))
            del self.objects[key]
            self._bump(obj, namespace, plural, "DELETED")
            if plural == "jobs" and policy in ("Background", "Foreground"):
                for pod in self.list(namespace, "pods"):
                    if (
                        pod["metadata"].get("labels", {}).get("batch.kubernetes.io/job-name")
                        == name
                    ):
                        del self.objects[(namespace, "pods", pod["metadata"]["name"])]
            return 200, _status(200, "Success", "deleted")[1]
        return _status(405, "MethodNotAllowed", request.method)

    def _log(self, namespace: str, pod: str, query: dict[str, str]) -> tuple[int, Any]:
        if (namespace, "pods", pod) not in self.objects:
            return _status(404, "NotFound", f'pods "{pod}" not found')
        lines = self.logs.get((namespace, pod), "").splitlines(keepends=True)
        tail = int(query.get("tailLines") or 0)
        return 200, "".join(lines[-tail:] if tail else lines)

    def _watch(
        self, namespace: str, plural: str, selector: dict[str, str], query: dict[str, str]
    ) -> Iterator[dict[str, Any]]:
        since = int(query.get("resourceVersion") or self._version)
        timeout = float(query.get("timeoutSeconds") or 30)
        if (self._events and since < self._events[0][0] - 1) or (
            not self._events and since < self._version
        ):
            yield {
                "type": "ERROR",
                "object": _status(410, "Expired", "too old resource version")[1],
            }
            return
        deadline = datetime.now(UTC).timestamp() + timeout
        compactions = self._compactions
        while True:
            with self._changed:
                expired = self._compactions != compactions
                pending = [
                    e for e in self._events if e[0] > since and e[1:3] == (namespace, plural)
                ]
                if not expired and not pending:
                    remaining = deadline - datetime.now(UTC).timestamp()
                    if remaining <= 0 or self._stopping:
                        return
                    self._changed.wait(min(remaining, 0.5))
                    continue
            if expired:
                yield {
                    "type": "ERROR",
                    "object": _status(410, "Expired", "too old resource version")[1],
                }
                return
            for version, _ns, _plural, event, obj in pending:
                since = version
                if _matches(obj, selector):
                    yield {"type": event, "object": obj}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: FakeKubernetes

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw.strip() else None
        query = dict(urllib.parse.parse_qsl(parsed.query))
        request = Request(
            self.command,
            parsed.path,
            query,
            body,
            self.headers.get("Content-Type", ""),
            self.headers.get("Authorization", ""),
        )
        status, answer = self.api.handle(request)
        if isinstance(answer, (dict, str)):
            data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header(
                "Content-Type", "text/plain" if isinstance(answer, str) else "application/json"
            )
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in answer:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve  # noqa: N815 - http.server's names


def _status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
    return code, {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _selector(text: str) -> dict[str, str]:
    pairs = (part.split("=", 1) for part in text.split(",") if part)
    return {key.rstrip("="): value for key, value in pairs}


def _matches(obj: dict[str, Any], selector: dict[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in selector.items())


@dataclass
class Kubelet:
    """A node of the fake cluster: it runs each new Job's pod as a process of this machine.

    The pod's container command runs with the environment its spec gives (``value`` and
    ``secretKeyRef`` from the cluster's Secrets), its stdout and stderr are the pod's log, and
    its exit code ends the pod and the Job as the Job controller would, the pod failure policy
    included (no retries: one pod per Job). What a node has that this machine has not is
    substituted: the image's programs (``programs``, image path to local path) and each
    ``emptyDir`` volume (a fresh folder under ``scratch``; a variable naming the mount path
    names that folder instead).
    """

    cluster: FakeKubernetes
    namespace: str
    programs: Mapping[str, str]
    scratch: Path
    environment: Mapping[str, str] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)  # Job names, in the order they ran
    _stopping: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    @contextmanager
    def running(self) -> Iterator[Kubelet]:
        poller = threading.Thread(target=self._poll, daemon=True)
        poller.start()
        try:
            yield self
        finally:
            self._stopping.set()
            poller.join(timeout=5)
            for thread in self._threads:
                thread.join(timeout=60)

    def _poll(self) -> None:
        while not self._stopping.wait(0.1):
            for job in self.cluster.list(self.namespace, "jobs"):
                name = job["metadata"]["name"]
                if name not in self.started and not job.get("status", {}).get("conditions"):
                    self.started.append(name)
                    thread = threading.Thread(target=self._run, args=(job,), daemon=True)
                    self._threads.append(thread)
                    thread.start()

    def _run(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        pod_spec = job["spec"]["template"]["spec"]
        (container,) = pod_spec["containers"]
        pod = self.cluster.run_pod(
            self.namespace,
            name,
            # The Job controller's labels on its pods, and the template's own.
            labels={
                **(job["spec"]["template"].get("metadata") or {}).get("labels", {}),
                "batch.kubernetes.io/job-name": name,
                "job-name": name,
            },
            container=container["name"],
        )
        volumes = {}
        for mount in container.get("volumeMounts") or []:
            folder = self.scratch / pod / mount["name"]
            folder.mkdir(parents=True)
            volumes[mount["mountPath"]] = str(folder)
        command = [self.programs.get(word, word) for word in container["command"]]
        # A container's environment: its image's (``environment``) and its spec's, no more.
        environment = dict(self.environment)
        for variable in container.get("env") or []:
            value = variable.get("value")
            if value is None:
                value = self._secret_value(variable["valueFrom"]["secretKeyRef"])
            for path, folder in volumes.items():
                if value == path or value.startswith(path + "/"):
                    value = folder + value[len(path) :]
            environment[variable["name"]] = value
        process = subprocess.run(
            command,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        self._end(job, pod, container["name"], process.returncode, process.stdout)

    def _secret_value(self, reference: Mapping[str, str]) -> str:
        secret = self.cluster.get(self.namespace, "secrets", reference["name"])
        assert secret is not None, f"the pod's Secret {reference['name']} does not exist"
        if reference["key"] in (secret.get("stringData") or {}):
            return secret["stringData"][reference["key"]]
        return base64.b64decode(secret["data"][reference["key"]]).decode()

    def _end(self, job: dict[str, Any], pod: str, container: str, code: int, log: str) -> None:
        with self.cluster._changed:
            obj = self.cluster.get(self.namespace, "pods", pod)
            assert obj is not None
            obj["status"] = {
                "phase": "Succeeded" if code == 0 else "Failed",
                "containerStatuses": [
                    {"name": container, "state": {"terminated": {"exitCode": code}}}
                ],
            }
            self.cluster.logs[(self.namespace, pod)] = log
            self.cluster._bump(obj, self.namespace, "pods", "MODIFIED")
        reason = "BackoffLimitExceeded"
        for rule in (job["spec"].get("podFailurePolicy") or {}).get("rules", []):
            on_codes = rule.get("onExitCodes") or {}
            if rule.get("action") == "FailJob" and code in on_codes.get("values", []):
                reason = "PodFailurePolicy"
        self.cluster.finish(
            self.namespace, "jobs", job["metadata"]["name"], succeeded=code == 0, reason=reason
        )
