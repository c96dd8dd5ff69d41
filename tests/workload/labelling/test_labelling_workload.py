"""Labelling for real: Label Studio under Pebble next to the real data registry.

The registry (Pebble: Apache + git http-backend, rclone S3) holds ``v1``, a small dataset this
module makes. Label Studio runs from the labelling charm's layer under another Pebble; every
labelling command runs through ``pebble exec`` with the registry credentials a labelling
consumer is given. Two annotators label through the REST API with planted disagreements; the
consistency report must find exactly those; the export must become ``v2`` with parent ``v1``
whose labels a plain ``git clone`` + ``dvc pull`` gets back byte for byte.

The data-centric agreement gate (``--agreement-threshold``, as the charm passes it) refuses
those planted disagreements naming the tasks, and exports them with ``--force`` only; a second
project on ``v2`` waits for its second annotator, is refused on its one disagreement, and
exports once that answer is fixed; the re-label project's answers then go on the newest version
(``v3``, which still holds v1's items) as ``labels/reviews-re-label.jsonl``.

Annotators are users the admin creates (``POST /api/users/``); their answers are posted with
the admin's token and ``completed_by`` set to them (``POST /api/tasks/<id>/annotations``,
``?was_cancelled=1`` for a skip) and fixed with ``PATCH /api/annotations/<id>``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.workload.labelling.harness import RunningLabelStudio, label_studio, run_label_studio
from tests.workload.registry.harness import (
    RunningRegistry,
    chown_tree,
    dvc,
    git,
    read_tree,
    start_registry,
)

pytestmark = pytest.mark.slow

TEXTS = {
    "texts/item-0.txt": "Great value, works as described.",
    "texts/item-1.txt": "It is fine I guess, but the box was damaged.",
    "texts/item-2.txt": "Broke after two days.",
    "texts/item-3.txt": "Arrived.",
    "texts/item-4.txt": "Five stars!!! would not buy again",
    "texts/item-5.txt": "Not bad, not good.",
}
IMAGES = {
    "images/cat.png": b"\x89PNG\r\n\x1a\ncat" * 40,
    "images/dog.png": b"\x89PNG\r\n\x1a\ndog",
}
OTHER = {"notes.csv": b"id,source\n1,shop\n"}
# (ann, bob) per item; None = skipped. Planted: 1 and 5 disagree, 3 unsure, 4 skipped.
PLANTED = {
    "texts/item-0.txt": ("positive", "positive"),
    "texts/item-1.txt": ("positive", "negative"),
    "texts/item-2.txt": ("negative", "negative"),
    "texts/item-3.txt": ("unsure", "negative"),
    "texts/item-4.txt": (None, "positive"),
    "texts/item-5.txt": ("negative", "positive"),
}
ANNOTATORS = ("ann@labelling.test", "bob@labelling.test")


@dataclass
class Stack:
    """The registry, Label Studio, and the labelling consumer's registry access."""

    registry: RunningRegistry
    label_studio: RunningLabelStudio
    access: label_studio.RegistryAccess
    v1: dict[str, bytes]

    def labelling(self, command: str, *args: str):
        return self.label_studio.labelling(self.access, command, *args)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with start_registry() as registry:
        source = registry.source_dir("v1")
        v1 = {**{k: v.encode() for k, v in TEXTS.items()}, **IMAGES, **OTHER}
        for relative, content in v1.items():
            (source / relative).parent.mkdir(parents=True, exist_ok=True)
            (source / relative).write_bytes(content)
        chown_tree(source)
        created = registry.workload("create-version", "--source", str(source))
        assert created.exit_code == 0, created.stderr
        access = label_studio.RegistryAccess(
            git_url=registry.labelling.registry_url,
            username=registry.labelling.username,
            password=registry.labelling.password,
            dvc_endpoint=registry.labelling.remote_endpoint,
            s3_access_key=registry.labelling.s3_access_key,
            s3_secret_key=registry.labelling.s3_secret_key,
        )
        with tempfile.TemporaryDirectory(prefix="labelling-test-") as base:
            with run_label_studio(Path(base)) as running:
                print(
                    f"\nLabel Studio start (database migrated beforehand): "
                    f"{running.first_start_seconds:.1f} s, "
                    f"RSS {running.service_rss_kib() / 1024:.0f} MiB"
                )
                yield Stack(registry, running, access, v1)


IMPORT_REVIEWS_V1 = (
    "import-version",
    "--project",
    "reviews",
    "--version",
    "v1",
    "--preset",
    "text-classification",
    "--labels",
    "positive,negative",
    "--overlap",
    "2",
)


@pytest.fixture(scope="module")
def reviews(stack: Stack) -> dict:
    result = stack.labelling(*IMPORT_REVIEWS_V1)
    assert result.exit_code == 0, result.stderr
    return result.json


def project_tasks(stack: Stack, project_id: int) -> list[dict]:
    return stack.label_studio.api(
        "GET", f"/api/projects/{project_id}/export?exportType=JSON&download_all_tasks=true"
    )


def project_by_title(stack: Stack, title: str) -> dict:
    projects = stack.label_studio.api("GET", "/api/projects?page_size=100")["results"]
    return next(p for p in projects if p["title"] == title)


def choice(answer: str) -> list[dict]:
    """An annotation result choosing ``answer`` in the text-classification preset."""
    value = {"choices": [answer]}
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": value}]


def annotate(stack: Stack, task_id: int, user_id: int, answer: str) -> dict:
    """``user_id``'s answer to a task, posted as the admin: the annotation created."""
    body = {"completed_by": user_id, "result": choice(answer)}
    return stack.label_studio.api("POST", f"/api/tasks/{task_id}/annotations", body)


def versions(stack: Stack) -> dict[str, dict]:
    listed = stack.registry.workload("list-versions")
    assert listed.exit_code == 0, listed.stderr
    return {v["version"]: v for v in listed.json["versions"]}


def pulled(stack: Stack, version: str, folder: Path) -> dict[str, bytes]:
    """A version's files as a consumer gets them: ``git clone``, checkout, ``dvc pull``."""
    reader = stack.registry.reader
    git("clone", "--quiet", stack.registry.url_for(reader), str(folder))
    git("checkout", "--quiet", version, cwd=folder)
    result = dvc("pull", "--quiet", cwd=folder, user=reader)
    assert result.returncode == 0, result.stderr
    return read_tree(folder / "data")


@pytest.fixture(scope="module")
def annotated(stack: Stack, reviews: dict) -> dict[str, int]:
    """The two annotators' answers, posted through the REST API; returns their user ids."""
    ids = {}
    for email in ANNOTATORS:
        user = stack.label_studio.api(
            "POST", "/api/users/", {"email": email, "username": email.split("@")[0]}
        )
        ids[email] = user["id"]
    for task in project_tasks(stack, reviews["project_id"]):
        for email, answer in zip(ANNOTATORS, PLANTED[task["data"]["item"]], strict=True):
            if answer is None:
                path = f"/api/tasks/{task['id']}/annotations?was_cancelled=1"
                stack.label_studio.api("POST", path, {"completed_by": ids[email], "result": []})
            else:
                annotate(stack, task["id"], ids[email], answer)
    return ids


def test_import_makes_one_task_per_text_item_with_the_preset(stack: Stack, reviews: dict):
    assert (reviews["items"], reviews["tasks_created"], reviews["skipped_files"]) == (6, 6, 3)
    project = stack.label_studio.api("GET", f"/api/projects/{reviews['project_id']}")
    assert project["maximum_annotations"] == 2
    for choice in ("positive", "negative", "unsure"):
        assert f'<Choice value="{choice}"/>' in project["label_config"]
    texts = {t["data"]["item"]: t["data"]["text"] for t in project_tasks(stack, project["id"])}
    assert texts == TEXTS


def test_importing_the_same_version_again_adds_no_task(stack: Stack, reviews: dict):
    again = stack.labelling(*IMPORT_REVIEWS_V1)
    assert again.exit_code == 0, again.stderr
    assert (again.json["tasks_created"], again.json["tasks_total"]) == (0, 6)


def test_image_items_are_served_to_the_front_end_byte_for_byte(stack: Stack):
    result = stack.labelling(
        "import-version",
        "--project",
        "pictures",
        "--version",
        "v1",
        "--preset",
        "image-classification",
        "--labels",
        "cat,dog",
    )
    assert result.exit_code == 0, result.stderr
    tasks = project_tasks(stack, result.json["project_id"])
    served = {t["data"]["item"]: stack.label_studio.get_bytes(t["data"]["image"]) for t in tasks}
    assert served == {item: (200, content) for item, content in IMAGES.items()}


def test_consistency_report_finds_exactly_the_planted_tasks(stack: Stack, annotated):
    result = stack.labelling("consistency-report", "--project", "reviews", "--threshold", "0.5")
    assert result.exit_code == 0, result.stderr
    report = result.json
    inconsistent = {e["item"]: e["labels"] for e in report["inconsistent"]}
    ambiguous = {e["item"]: e["labels"] for e in report["ambiguous"]}
    assert inconsistent == {
        "texts/item-1.txt": [
            {"annotator": ANNOTATORS[0], "label": "positive"},
            {"annotator": ANNOTATORS[1], "label": "negative"},
        ],
        "texts/item-5.txt": [
            {"annotator": ANNOTATORS[0], "label": "negative"},
            {"annotator": ANNOTATORS[1], "label": "positive"},
        ],
    }
    assert ambiguous == {
        "texts/item-3.txt": [
            {"annotator": ANNOTATORS[0], "label": "unsure"},
            {"annotator": ANNOTATORS[1], "label": "negative"},
        ],
        "texts/item-4.txt": [
            {"annotator": ANNOTATORS[0], "label": "(skipped)"},
            {"annotator": ANNOTATORS[1], "label": "positive"},
        ],
    }
    # Pairable tasks 0, 1, 2, 5: n_pos = 4, n_neg = 4, o_pn = 2 -> 1 - 7 * 4 / 32 = 0.125.
    assert report["krippendorff_alpha"] == pytest.approx(0.125)
    assert report["mean_observed_agreement"] == pytest.approx(0.5)


def test_the_charm_reads_the_answer_counts_the_report_counted_in_one_request(
    stack: Stack, annotated
):
    counts = {c.title: c for c in label_studio.project_counts(stack.label_studio.settings)}
    reviews = counts["reviews"]
    # 6 tasks x 2 answers, one of them a skip: what the report counts too.
    assert (reviews.imported, reviews.annotations, reviews.skipped_annotations) == (True, 12, 1)
    report = stack.labelling("consistency-report", "--project", "reviews")
    assert report.exit_code == 0, report.stderr
    assert (report.json["annotations"], report.json["skipped_annotations"]) == (12, 1)
    assert (report.json["compared_tasks"], report.json["krippendorff_alpha"]) == (4, 0.125)


GATE = ("--agreement-threshold", "0.8")


def test_the_gate_refuses_the_planted_disagreements_naming_their_tasks(stack: Stack, annotated):
    refused = stack.labelling("export-annotations", "--project", "reviews", *GATE)
    assert refused.exit_code == 1, refused.stdout
    (line,) = refused.stderr.strip().splitlines()
    assert line == (
        "error: Krippendorff's alpha 0.125 is below the agreement threshold 0.8: annotators "
        "disagree on texts/item-1.txt, texts/item-5.txt (consistency-report lists every task); "
        "fix them, or export with force=true"
    )
    assert list(versions(stack)) == ["v1"]


def test_requeue_copies_the_flagged_tasks_once_into_the_relabel_project(stack, annotated):
    first = stack.labelling("consistency-report", "--project", "reviews", "--requeue")
    assert first.exit_code == 0, first.stderr
    assert first.json["requeue"]["queued"] == 4
    again = stack.labelling("consistency-report", "--project", "reviews", "--requeue")
    assert (again.json["requeue"]["queued"], again.json["requeue"]["already_queued"]) == (0, 4)
    relabel = next(
        p
        for p in stack.label_studio.api("GET", "/api/projects?page_size=100")["results"]
        if p["title"] == "reviews re-label"
    )
    items = sorted(t["data"]["item"] for t in project_tasks(stack, relabel["id"]))
    assert items == [f"texts/item-{i}.txt" for i in (1, 3, 4, 5)]


def expected_labels() -> bytes:
    """The labels file, written here independently of the code under test."""
    lines = []
    for item, (ann, bob) in sorted(PLANTED.items()):
        answers = [ann or "(skipped)", bob or "(skipped)"]
        values = [a for a in (ann, bob) if a and a != "unsure"]
        agreement = None if len(values) < 2 else float(values[0] == values[1])
        label = values[0] if len(values) == 1 or agreement == 1.0 else None
        record = {
            "item": item,
            "label": label,
            "agreement": agreement,
            "annotations": [
                {"annotator": email, "label": answer}
                for email, answer in zip(ANNOTATORS, answers, strict=True)
            ],
        }
        lines.append(json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n")
    return "".join(lines).encode()


@pytest.fixture(scope="module")
def exported(stack: Stack, annotated) -> dict:
    """The planted disagreements exported through the gate with force."""
    result = stack.labelling("export-annotations", "--project", "reviews", *GATE, "--force")
    assert result.exit_code == 0, result.stderr
    return result.json


def test_export_cuts_a_version_whose_parent_is_v1(stack: Stack, exported: dict):
    assert (exported["version"], exported["parent"]) == ("v2", "v1")
    v2 = versions(stack)["v2"]
    assert (v2["parent"], v2["source"]) == ("v1", "labelling-export")


def test_a_forced_export_goes_below_the_gate_and_says_so(stack: Stack, exported: dict):
    measured = {
        "krippendorff_alpha": 0.125,
        "compared_tasks": 4,
        "agreement_threshold": 0.8,
        "forced": True,
    }
    assert {key: exported[key] for key in measured} == measured
    assert versions(stack)["v2"]["details"] == {"project": "reviews", **measured}


def test_exported_labels_come_back_byte_for_byte_with_dvc_pull(
    stack: Stack, exported: dict, tmp_path: Path
):
    tree = pulled(stack, "v2", tmp_path / "consumer")
    assert tree.pop(exported["labels_path"]) == expected_labels()
    assert tree == stack.v1  # the version's items are the labelled ones, unchanged


def test_failures_say_why_in_one_line(stack: Stack, reviews: dict):
    cases = [
        (
            (
                "import-version",
                "--project",
                "x",
                "--version",
                "v9",
                "--preset",
                "text-classification",
                "--labels",
                "a",
            ),
            "unknown version v9",
        ),
        (("export-annotations", "--project", "nope"), "unknown project 'nope'"),
        (("consistency-report", "--project", "pictures"), "has no annotations"),
    ]
    for args, expected in cases:
        result = stack.labelling(*args)
        assert result.exit_code == 1, result.stdout
        assert expected in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_wrong_registry_password_is_refused(stack: Stack, reviews: dict):
    wrong = label_studio.RegistryAccess(
        git_url=stack.access.git_url,
        username=stack.access.username,
        password="not-the-password",
        dvc_endpoint=stack.access.dvc_endpoint,
        s3_access_key=stack.access.s3_access_key,
        s3_secret_key="not-the-key",
    )
    # A fresh workspace, so nothing cached from the right credentials helps.
    settings = stack.label_studio.settings
    result = stack.label_studio.labelling(
        wrong,
        "import-version",
        "--project",
        "reviews",
        "--version",
        "v1",
        "--workspace",
        f"{settings.data_dir}/other-workspace",
        "--preset",
        "text-classification",
        "--labels",
        "a",
    )
    assert result.exit_code == 1
    assert "cannot clone the registry" in result.stderr


def test_secrets_stay_out_of_the_pebble_plan(stack: Stack):
    settings = stack.label_studio.settings
    plan = stack.label_studio.daemon.client.get_plan().to_yaml()
    for secret in (settings.admin_password, settings.admin_token, settings.secret_key):
        assert secret not in plan
    secrets_env = Path(settings.secrets_env_path)
    assert settings.admin_token in secrets_env.read_text()
    assert secrets_env.stat().st_mode & 0o777 == 0o600


def test_the_admin_token_from_the_secret_file_authenticates(stack: Stack):
    assert stack.label_studio.get_bytes("/api/projects")[0] == 200
    assert stack.label_studio.api("GET", "/api/current-user/whoami")["email"] == (
        label_studio.ADMIN_USERNAME
    )


def test_a_second_export_after_the_registry_moved_on_is_refused(stack: Stack, exported: dict):
    again = stack.labelling("export-annotations", "--project", "reviews")
    assert again.exit_code == 1
    assert "v2 is newer than the labelled v1" in again.stderr
    assert list(versions(stack)) == ["v1", "v2"]


def test_items_sent_back_by_error_analysis_are_queued_once(stack: Stack, reviews: dict):
    items = json.dumps(["texts/item-0.txt", "texts/item-2.txt", "texts/gone.txt"])
    args = ("--project", "reviews", "--items", items, "--reason", "misclassified")
    first = stack.labelling("relabel", *args, "--batch", "run-7")
    assert first.exit_code == 0, first.stderr
    assert (first.json["queued"], first.json["missing"]) == (2, ["texts/gone.txt"])
    again = stack.labelling("relabel", *args, "--batch", "run-7")
    assert (again.json["queued"], again.json["already_queued"]) == (0, 2)
    relabel = next(
        p
        for p in stack.label_studio.api("GET", "/api/projects?page_size=100")["results"]
        if p["title"] == "reviews re-label"
    )
    queued = [
        t["data"] for t in project_tasks(stack, relabel["id"]) if t["data"].get("relabel_batch")
    ]
    from_run = sorted(d["item"] for d in queued if d["relabel_batch"] == "run-7")
    assert from_run == ["texts/item-0.txt", "texts/item-2.txt"]
    assert {d["relabel_reason"] for d in queued if d["relabel_batch"] == "run-7"} == {
        "misclassified"
    }


def _spans(*spans: tuple[int, int, str]) -> list[dict]:
    return [
        {
            "from_name": "label",
            "to_name": "text",
            "type": "labels",
            "value": {"start": start, "end": end, "labels": [label]},
        }
        for start, end, label in spans
    ]


def test_span_labelling_agrees_only_on_identical_spans(stack: Stack, annotated):
    imported = stack.labelling(
        "import-version",
        "--project",
        "entities",
        "--version",
        "v1",
        "--preset",
        "named-entities",
        "--labels",
        "PRODUCT,DEFECT",
        "--overlap",
        "2",
    )
    assert imported.exit_code == 0, imported.stderr
    ann, bob = (annotated[email] for email in ANNOTATORS)
    answers = {
        # The same spans, given in another order: agreement.
        "texts/item-1.txt": (
            _spans((31, 34, "PRODUCT"), (35, 38, "DEFECT")),
            _spans((35, 38, "DEFECT"), (31, 34, "PRODUCT")),
        ),
        # One span's end differs: disagreement.
        "texts/item-2.txt": (_spans((0, 5, "DEFECT")), _spans((0, 6, "DEFECT"))),
        # Both found nothing to mark: agreement.
        "texts/item-3.txt": ([], []),
    }
    for task in project_tasks(stack, imported.json["project_id"]):
        for user, result in zip((ann, bob), answers.get(task["data"]["item"], ()), strict=False):
            stack.label_studio.api(
                "POST",
                f"/api/tasks/{task['id']}/annotations",
                {"completed_by": user, "result": result},
            )
    report = stack.labelling("consistency-report", "--project", "entities")
    assert report.exit_code == 0, report.stderr
    assert [e["item"] for e in report.json["inconsistent"]] == ["texts/item-2.txt"]
    assert report.json["compared_tasks"] == 3
    assert report.json["ambiguous"] == []


# --- the agreement gate on a second project, on v2 -----------------------------------------

# ann's and bob's answers on v2's items: bob disagrees on item-3 until his answer is fixed.
SECOND_ROUND = {
    "texts/item-0.txt": ("positive", "positive"),
    "texts/item-1.txt": ("negative", "negative"),
    "texts/item-2.txt": ("negative", "negative"),
    "texts/item-3.txt": ("positive", "negative"),
    "texts/item-4.txt": ("positive", "positive"),
    "texts/item-5.txt": ("negative", "negative"),
}


@pytest.fixture(scope="module")
def first_annotator(stack: Stack, exported: dict, annotated) -> dict[str, int]:
    """Project "reviews v2" (v2's items, two annotators per task) after ann's answers: task ids."""
    imported = stack.labelling(
        "import-version",
        "--project",
        "reviews v2",
        "--version",
        "v2",
        "--preset",
        "text-classification",
        "--labels",
        "positive,negative",
        "--overlap",
        "2",
    )
    assert imported.exit_code == 0, imported.stderr
    tasks = {t["data"]["item"]: t["id"] for t in project_tasks(stack, imported.json["project_id"])}
    for item, task_id in tasks.items():
        annotate(stack, task_id, annotated[ANNOTATORS[0]], SECOND_ROUND[item][0])
    return tasks


def test_the_gate_waits_for_a_second_annotator(stack: Stack, first_annotator):
    refused = stack.labelling("export-annotations", "--project", "reviews v2", *GATE)
    assert refused.exit_code == 1, refused.stdout
    assert refused.stderr.strip() == (
        "error: agreement cannot be measured against the threshold 0.8: no task has two "
        "annotations yet; have a second annotator label texts/item-0.txt, texts/item-1.txt, "
        "texts/item-2.txt, texts/item-3.txt, texts/item-4.txt and 1 more, "
        "or export with force=true"
    )


@pytest.fixture(scope="module")
def second_annotator(stack: Stack, first_annotator, annotated) -> dict[str, int]:
    """The second annotator's answers on "reviews v2": his annotations' ids by item."""
    return {
        item: annotate(stack, task_id, annotated[ANNOTATORS[1]], SECOND_ROUND[item][1])["id"]
        for item, task_id in first_annotator.items()
    }


def test_the_gate_names_the_one_task_the_annotators_disagree_on(stack, second_annotator):
    refused = stack.labelling("export-annotations", "--project", "reviews v2", *GATE)
    assert refused.exit_code == 1, refused.stdout
    # 5 positive and 7 negative answers, one mixed pair: 1 - 11 * 2 / (2 * 5 * 7) = 0.6857.
    assert "Krippendorff's alpha 0.6857 is below the agreement threshold 0.8" in refused.stderr
    assert "annotators disagree on texts/item-3.txt (" in refused.stderr


@pytest.fixture(scope="module")
def fixed(stack: Stack, second_annotator) -> dict:
    """The second annotator's answer on item-3 fixed; the gated export's result."""
    path = f"/api/annotations/{second_annotator['texts/item-3.txt']}"
    stack.label_studio.api("PATCH", path, {"result": choice("positive")})
    result = stack.labelling("export-annotations", "--project", "reviews v2", *GATE)
    assert result.exit_code == 0, result.stderr
    return result.json


def test_fixed_answers_pass_the_gate_and_the_version_records_their_alpha(stack, fixed):
    assert (fixed["version"], fixed["parent"]) == ("v3", "v2")
    assert (fixed["krippendorff_alpha"], fixed["forced"]) == (1.0, False)
    assert fixed["labels_path"] == "labels/reviews-v2.jsonl"
    assert versions(stack)["v3"]["details"]["krippendorff_alpha"] == 1.0


# --- a re-label project's export ------------------------------------------------------------


@pytest.fixture(scope="module")
def relabelled(stack: Stack, fixed: dict, annotated) -> dict:
    """Two of the items queued in "reviews re-label" answered again, agreeing; the export."""
    relabel = project_by_title(stack, "reviews re-label")
    answers = {"texts/item-1.txt": "negative", "texts/item-5.txt": "positive"}
    for task in project_tasks(stack, relabel["id"]):
        answer = answers.get(task["data"]["item"])
        if answer and task["data"]["relabel_batch"] == "consistency@0.5":
            for email in ANNOTATORS:
                annotate(stack, task["id"], annotated[email], answer)
    result = stack.labelling("export-annotations", "--project", "reviews re-label", *GATE)
    assert result.exit_code == 0, result.stderr
    return result.json


def test_a_relabel_export_goes_on_the_newest_version_holding_the_same_items(relabelled):
    assert (relabelled["version"], relabelled["parent"]) == ("v4", "v3")
    assert (relabelled["labels_path"], relabelled["relabelled_items"]) == (
        "labels/reviews-re-label.jsonl",
        2,
    )


def test_a_relabel_export_adds_only_the_relabelled_items_labels(
    stack: Stack, relabelled: dict, tmp_path: Path
):
    before = pulled(stack, "v3", tmp_path / "v3")
    after = pulled(stack, "v4", tmp_path / "v4")
    records = [json.loads(line) for line in after.pop(relabelled["labels_path"]).splitlines()]
    assert after == before  # the items and every other labels file are untouched
    assert [(r["item"], r["label"], r["agreement"]) for r in records] == [
        ("texts/item-1.txt", "negative", 1.0),
        ("texts/item-5.txt", "positive", 1.0),
    ]
