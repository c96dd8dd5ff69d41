"""One data-centric iteration and a switch to model-centric, driven through the charms' actions.

What a person does is an action (or a REST call to Label Studio, where annotators work);
everything else — a version reaching training, a Job starting, error analysis after training,
the relabel batch reaching labelling, the pin on a switch — the charms do by themselves on the
events Juju gives them. The steps return what they saw; the test asserts it, the demo prints it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import urllib.request
from typing import Any

from ops import testing

from mlops_charms import jobs
from mlops_charms.host_files import HostFiles
from tests.workload.labelling.harness import rest_call
from tests.workload.loop.stack import Stack
from tests.workload.registry.harness import chown_tree
from tests.workload.training.harness import reviews

PROJECT = "reviews"
RELABEL_PROJECT = f"{PROJECT} re-label"
LABELS = ("positive", "negative")
ANNOTATORS = ("ann@example.com", "bob@example.com")
JOB_TIMEOUT = 600.0

# The approach's policy for the demo and the test: two annotators a task, an export needs
# alpha >= 0.8, error analysis sends 8 items back; model-centric sweeps C.
APPROACH_CONFIG: dict[str, Any] = {
    "approach": "data-centric",
    "model-spec": "text-tfidf-logreg",
    "annotator-overlap": 2,
    "agreement-threshold": 0.8,
    "relabel-top-k": 8,
    "sweep": "{C: [0.1, 1.0, 10.0]}",
    "selection-metric": "accuracy",
}


def truth(item: str) -> str:
    return "positive" if "/pos-" in item else "negative"


def other(label: str) -> str:
    return "negative" if label == "positive" else "positive"


# Items both annotators get wrong (what agreement cannot see; error analysis should) and items
# the second annotator answers differently (what agreement sees).
WRONG = ("texts/pos-03.txt", "texts/pos-17.txt", "texts/neg-05.txt", "texts/neg-21.txt")
DISAGREE = tuple(
    f"texts/{kind}-{i:02d}.txt" for kind in ("pos", "neg") for i in (1, 6, 11, 24, 28)
)


@dataclasses.dataclass
class StepTiming:
    """Where the time of one version's trip went, export to run logged (seconds)."""

    version: str
    export_to_version: float  # the export action: the labelling job, the push, the new tag
    version_to_job: float  # the registry's notice, relation data, training's hook, the Job
    job_to_logged: float  # the pod's life: trainer start, training, logging, the end seen
    trainer_seconds: float  # the trainer's own timings (fetch, fit, log) inside the pod

    @property
    def overhead(self) -> float:
        return (
            self.export_to_version
            + self.version_to_job
            + self.job_to_logged
            - self.trainer_seconds
        )


class Loop:
    """The person's side of the loop, and what they look at."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.model = stack.model
        self.users: dict[str, int] = {}
        self.timings: list[StepTiming] = []
        self.trained: dict[str, jobs.Job] = {}

    # --- Label Studio, where the annotators work ----------------------------------------------

    def api(self, method: str, path: str, body: Any = None) -> Any:
        token = self.stack.secret_content("labelling-k8s", "label-studio-server")["admin-token"]
        return rest_call(self.stack.label_studio_url, token, method, path, body)

    def project(self, title: str) -> dict[str, Any] | None:
        projects = self.api("GET", "/api/projects?page_size=100")["results"]
        return next((p for p in projects if p["title"] == title), None)

    def tasks(self, title: str, *, missing_ok: bool = False) -> list[dict[str, Any]]:
        project = self.project(title)
        if project is None:
            assert missing_ok, f"no project {title!r} in Label Studio"
            return []
        return self.api(
            "GET", f"/api/projects/{project['id']}/export?exportType=JSON&download_all_tasks=true"
        )

    def annotators(self) -> None:
        for email in ANNOTATORS:
            user = self.api(
                "POST", "/api/users/", {"email": email, "username": email.split("@")[0]}
            )
            self.users[email] = user["id"]

    def annotate(self, title: str, answers: dict[str, tuple[str, str]]) -> int:
        """Each task's two annotations, ``answers[item]`` = (first's label, second's)."""
        posted = 0
        for task in self.tasks(title):
            item = task["data"]["item"]
            for email, label in zip(ANNOTATORS, answers[item], strict=True):
                self.api(
                    "POST",
                    f"/api/tasks/{task['id']}/annotations",
                    {"completed_by": self.users[email], "result": _choice(label)},
                )
                posted += 1
        return posted

    def correct(self, title: str, items: set[str]) -> int:
        """The second annotator revises their answer on ``items`` to agree with the first."""
        fixed = 0
        for task in self.tasks(title):
            if task["data"]["item"] not in items:
                continue
            by_user = {a["completed_by"]: a for a in task["annotations"]}
            first = by_user[self.users[ANNOTATORS[0]]]["result"]
            second = by_user[self.users[ANNOTATORS[1]]]
            self.api("PATCH", f"/api/annotations/{second['id']}", {"result": first})
            fixed += 1
        return fixed

    def export_and_train(self, project: str) -> str:
        """export-annotations of ``project``; then training by itself on the new version.

        Returns the version; records where the time went (``timings``) and the train job.
        """
        started = time.monotonic()
        exported = self.model.action("labelling-k8s", "export-annotations", project=project)
        version = exported["version"]
        versioned = time.monotonic()
        self.model.run_until(
            lambda: any(j.params.get("version") == version for j in self.training_jobs("train")),
            60,
            f"training to start on {version}",
        )
        job_started = time.monotonic()
        trained = self.wait_for_training("train", version, f"training on {version}")
        assert trained.state == "succeeded", f"training on {version}: {trained.error}"
        timings = (trained.result or {}).get("timings") or {}
        self.timings.append(
            StepTiming(
                version=version,
                export_to_version=versioned - started,
                version_to_job=job_started - versioned,
                job_to_logged=time.monotonic() - job_started,
                trainer_seconds=float(timings.get("total_s", 0.0)),
            )
        )
        self.trained[version] = trained
        return version

    # --- the registry -------------------------------------------------------------------------

    def cut_version(self, files: dict[str, str], name: str) -> dict[str, Any]:
        """create-version from a folder on the registry's storage."""
        storage = self.model.apps["data-versioning-k8s"].unit.storage["registry-data"]
        source = storage / "uploads" / name
        for relative, text in files.items():
            (source / relative).parent.mkdir(parents=True, exist_ok=True)
            (source / relative).write_text(text)
        chown_tree(source)
        results = self.model.action("data-versioning-k8s", "create-version", source=str(source))
        self.model.deliver_notices()  # the registry's own tags-pushed notice
        return results

    def published(self, consumer: str) -> dict[str, Any]:
        """What the registry publishes to ``consumer`` on mlops-dataset."""
        state = self.model.apps["data-versioning-k8s"].state
        for relation in state.relations:
            if (
                isinstance(relation, testing.Relation)
                and relation.endpoint == "mlops-dataset"
                and relation.remote_app_name == consumer
            ):
                return {k: json.loads(v) for k, v in relation.local_app_data.items()}
        raise AssertionError(f"no mlops-dataset relation with {consumer}")

    # --- training's jobs -----------------------------------------------------------------------

    def training_records(self) -> jobs.JobRecords:
        """training-k8s's job records on its storage (lib/mlops_charms/jobs.py's folders)."""
        storage = self.model.apps["training-k8s"].unit.storage["training-data"]
        return jobs.JobRecords(HostFiles(), str(storage / "jobs"))

    def training_jobs(self, kind: str | None = None) -> list[jobs.Job]:
        return [j for j in self.training_records().list() if kind is None or j.kind == kind]

    def wait_for_training(self, kind: str, version: str, what: str) -> jobs.Job:
        """Until training-k8s has acted on the end of its ``kind`` job on ``version``."""
        records = self.training_records()

        def reported() -> jobs.Job | None:
            pending = {job.id for job in records.unreported()}
            for job in records.list():
                if (job.kind, job.params.get("version")) == (kind, version):
                    if job.ended and job.id not in pending:
                        return job
            return None

        return self.model.run_until(reported, JOB_TIMEOUT, what)

    # --- tracking -----------------------------------------------------------------------------

    def mlflow(self, path: str, body: Any = None) -> Any:
        credentials = self.model.action("tracking-k8s", "get-admin-credentials")
        token = base64.b64encode(f"{credentials['username']}:{credentials['password']}".encode())
        request = urllib.request.Request(
            f"{self.stack.mlflow_url}/api/2.0/mlflow/{path}",
            data=None if body is None else json.dumps(body).encode(),
            method="GET" if body is None else "POST",
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Basic {token.decode()}",
            },
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def runs(self) -> list[dict[str, Any]]:
        experiments = self.mlflow("experiments/search", {"max_results": 100})["experiments"]
        ids = [e["experiment_id"] for e in experiments]
        found = self.mlflow("runs/search", {"experiment_ids": ids, "max_results": 500})
        return found.get("runs", [])


@dataclasses.dataclass
class Iteration:
    """What one data-centric iteration did, step by step."""

    raw_version: str = ""
    raw_training: jobs.Job | None = None
    tasks_created: int = 0
    overlap: int = 0
    annotations: int = 0
    refusal: str = ""
    corrected: int = 0
    versions: list[str] = dataclasses.field(default_factory=list)
    trained: dict[str, jobs.Job] = dataclasses.field(default_factory=dict)
    analysed: dict[str, jobs.Job] = dataclasses.field(default_factory=dict)
    relabel_items: list[str] = dataclasses.field(default_factory=list)
    relabel_tasks: set[str] = dataclasses.field(default_factory=set)


def data_centric_iteration(loop: Loop) -> Iteration:
    """v1 → labelled (gate refused, fixed) → v2 → training, error analysis → relabel → v3."""
    model = loop.model
    seen = Iteration()
    texts = reviews()
    seen.raw_version = loop.cut_version(texts, "raw")["version"]
    # Training sees every new version: the raw one it skips (nothing labelled to learn from).
    seen.raw_training = loop.wait_for_training("train", seen.raw_version, "training on v1")
    imported = model.action(
        "labelling-k8s",
        "import-version",
        version=seen.raw_version,
        project=PROJECT,
        preset="text-classification",
        labels=",".join(LABELS),
    )
    seen.tasks_created = int(imported["tasks-created"])
    seen.overlap = (loop.project(PROJECT) or {}).get("maximum_annotations", 0)
    loop.annotators()
    seen.annotations = loop.annotate(PROJECT, first_answers())
    refused = model.try_action("labelling-k8s", "export-annotations", project=PROJECT)
    assert isinstance(refused, testing.ActionFailed), f"the gate let the export through: {refused}"
    seen.refusal = refused.message
    seen.corrected = loop.correct(PROJECT, set(DISAGREE))
    exported = loop.export_and_train(PROJECT)
    analysed = loop.wait_for_training("error-analysis", exported, f"error analysis on {exported}")
    seen.analysed[exported] = analysed
    seen.relabel_items = list(
        ((analysed.result or {}).get("relabel_batch") or {}).get("items", [])
    )
    model.run_until(
        lambda: len(loop.tasks(RELABEL_PROJECT, missing_ok=True)) >= len(seen.relabel_items),
        120,
        "the relabel tasks in labelling",
    )
    seen.relabel_tasks = {t["data"]["item"] for t in loop.tasks(RELABEL_PROJECT)}
    loop.annotate(RELABEL_PROJECT, {i: (truth(i), truth(i)) for i in seen.relabel_tasks})
    relabelled = loop.export_and_train(RELABEL_PROJECT)
    seen.analysed[relabelled] = loop.wait_for_training(
        "error-analysis", relabelled, f"error analysis on {relabelled}"
    )
    seen.versions = [t.version for t in loop.timings]
    seen.trained = dict(loop.trained)
    return seen


@dataclasses.dataclass
class Switch:
    """What the switch to model-centric did."""

    revision: str
    pinned: str
    sweep: jobs.Job
    champion: dict[str, Any]
    later_version: str = ""
    later_published: dict[str, Any] = dataclasses.field(default_factory=dict)
    jobs_started_after: int = 0


def switch_to_model_centric(loop: Loop) -> Switch:
    """The ``switch`` to model-centric: the latest version pinned and swept; a new one ignored."""
    model = loop.model
    switched = model.action("mlops-approach", "switch", approach="model-centric")
    pinned = loop.published("training-k8s").get("pinned_version", "")
    sweep = loop.wait_for_training("sweep", pinned, f"the sweep on the pinned {pinned}")
    promoted = (sweep.result or {}).get("promoted") or {}
    champion = loop.mlflow(f"registered-models/alias?name={promoted.get('model')}&alias=champion")[
        "model_version"
    ]
    jobs_before = len(loop.stack.cluster.list(loop.model.name, "jobs"))
    extra = {f"texts/new-{i}.txt": "great value works perfect\n" for i in range(3)}
    later = loop.cut_version({**reviews(), **extra}, "more")["version"]
    model.update_status()
    return Switch(
        revision=str(switched.get("revision")),
        pinned=pinned,
        sweep=sweep,
        champion=champion,
        later_version=later,
        later_published=loop.published("training-k8s"),
        jobs_started_after=len(loop.stack.cluster.list(loop.model.name, "jobs")) - jobs_before,
    )


def _choice(label: str) -> list[dict[str, Any]]:
    return [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}
    ]


def first_answers() -> dict[str, tuple[str, str]]:
    """The planted answers of the first pass."""
    answers = {}
    for item in reviews():
        first = other(truth(item)) if item in WRONG else truth(item)
        answers[item] = (first, other(first) if item in DISAGREE else first)
    return answers


def run_tag(run: dict[str, Any], key: str) -> str | None:
    return next((t["value"] for t in run["data"].get("tags", []) if t["key"] == key), None)


def print_timings(loop: Loop, total: float) -> None:
    """Where the time went, per version: the loop's overhead beyond the trainer's own work."""
    print(f"\nthe loop, {total:.0f} s in all; per version (seconds):")
    print("version  export->version  version->Job  Job->logged  trainer  overhead  share")
    for t in loop.timings:
        whole = t.export_to_version + t.version_to_job + t.job_to_logged
        print(
            f"{t.version:7}  {t.export_to_version:15.1f}  {t.version_to_job:12.1f}  "
            f"{t.job_to_logged:11.1f}  {t.trainer_seconds:7.1f}  {t.overhead:8.1f}  "
            f"{t.overhead / whole:5.0%}"
        )
    hooks = loop.model.hooks
    print(f"{len(hooks)} hooks, {sum(h.seconds for h in hooks):.0f} s in hooks")
