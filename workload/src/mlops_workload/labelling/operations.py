"""What the labelling actions do: import a version, export labels, report consistency, re-label.

A project remembers the dataset version it was fed from in its description (one
``mlops-labelling: {json}`` line), so an export knows which version its labels belong to.
Re-labelling (re-queued inconsistent tasks, items sent back by error analysis) goes to a
sibling project, ``<project> re-label``, with the same label config; its export writes
``labels/<project>-re-label.jsonl`` on the newest version that still holds those items. The
agreement gate (the data-centric approach's) refuses an export whose alpha is too low.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from mlops_workload.labelling import consistency, items, presets
from mlops_workload.labelling.client import LabellingError, LabelStudio
from mlops_workload.labelling.consistency import Annotation, TaskAnnotations
from mlops_workload.labelling.registry_io import (
    create_labelled_version,
    fetch_version,
    latest_with_items_of,
)
from mlops_workload.workspace import Workspace

METADATA_PREFIX = "mlops-labelling: "
RELABEL_SUFFIX = " re-label"
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def slug(title: str) -> str:
    """A file-name-safe form of a project title."""
    return _SLUG.sub("-", title).strip("-.") or "project"


def project_metadata(project: dict) -> dict[str, Any]:
    """What the project's description records about its dataset version ({} if nothing)."""
    for line in (project.get("description") or "").splitlines():
        if line.startswith(METADATA_PREFIX):
            try:
                found = json.loads(line[len(METADATA_PREFIX) :])
            except json.JSONDecodeError:
                return {}
            return found if isinstance(found, dict) else {}
    return {}


def _description(version: str, metadata: dict[str, Any]) -> str:
    return f"Items of dataset version {version}.\n{METADATA_PREFIX}{json.dumps(metadata)}"


def _require_project(ls: LabelStudio, title: str) -> dict:
    project = ls.project_by_title(title)
    if project is None:
        raise LabellingError(f"unknown project {title!r}")
    return project


def import_version(
    ls: LabelStudio,
    ws: Workspace,
    media_root: Path,
    *,
    project_title: str,
    version: str,
    label_config: str,
    overlap: int,
) -> dict[str, Any]:
    """Create or update ``project_title`` so that it holds a task per item of ``version``."""
    data_key = presets.data_key(label_config)
    project = ls.project_by_title(project_title)
    held = project_metadata(project).get("version") if project else None
    if held and held != version:
        # Tasks are keyed by item path: another version's content under the same paths
        # would be exported with the labels given to the old content.
        raise LabellingError(
            f"project {project_title!r} labels {held}: import {version} into a new project"
        )
    version_dir = media_root / slug(project_title) / version
    fetch_version(ws, version, version_dir)
    paths, skipped = items.item_paths(version_dir, data_key)
    if not paths:
        raise LabellingError(f"{version} has no {data_key} items ({len(skipped)} other files)")
    metadata = {"version": version, "data_key": data_key}
    fields = {
        "description": _description(version, metadata),
        "label_config": label_config,
        "maximum_annotations": overlap,
        "overlap_cohort_percentage": 100,
    }
    if project is None:
        project = ls.create_project({"title": project_title, **fields})
        existing: set[str] = set()
    else:
        existing = {t["data"].get("item") for t in ls.export_tasks(project["id"])}
        ls.update_project(project["id"], fields)
    if data_key == "image":
        ls.ensure_local_storage(project["id"], str(version_dir), f"dataset {version}")
    new_tasks = [
        items.task(version_dir, path, data_key, version, media_root)
        for path in paths
        if path not in existing
    ]
    ls.import_tasks(project["id"], new_tasks)
    return {
        "project": project_title,
        "project_id": project["id"],
        "version": version,
        "items": len(paths),
        "tasks_created": len(new_tasks),
        "tasks_total": len(existing | set(paths)),
        "skipped_files": len(skipped),
        "overlap": overlap,
    }


def reduce_annotation(
    annotation: dict, users: dict[int, str], *, span_labelling: bool = False
) -> Annotation:
    """One Label Studio annotation as a nominal value (or unsure, or skipped)."""
    user_id = annotation.get("completed_by")
    annotator = users.get(user_id, str(user_id)) if isinstance(user_id, int) else str(user_id)
    if annotation.get("was_cancelled"):
        return Annotation(annotator, None, None, skipped=True)
    choices: list[str] = []
    spans: list[dict] = []
    for result in annotation.get("result") or []:
        value = result.get("value") or {}
        if result.get("type") == "choices":
            choices.extend(value.get("choices") or [])
        elif result.get("type") == "labels":
            spans.extend(
                {
                    "start": value.get("start"),
                    "end": value.get("end"),
                    "label": label,
                    "text": value.get("text"),
                }
                for label in value.get("labels") or []
            )
    if choices:
        if presets.UNSURE in choices:
            return Annotation(annotator, None, presets.UNSURE, unsure=True)
        shown: Any = choices[0] if len(choices) == 1 else sorted(choices)
        return Annotation(annotator, consistency.canonical(sorted(choices)), shown)
    if spans or span_labelling:
        # For span labelling, a submission with no span ("nothing to mark") is an answer.
        spans.sort(key=lambda s: (s["start"], s["end"], s["label"]))
        key = [(s["start"], s["end"], s["label"]) for s in spans]
        return Annotation(annotator, consistency.canonical(key), spans)
    return Annotation(annotator, None, None, skipped=True)


def project_annotations(ls: LabelStudio, project: dict) -> list[TaskAnnotations]:
    """Every task of the project with its answers."""
    users = ls.users()
    span_labelling = "<Labels" in (project.get("label_config") or "")
    tasks = []
    for task in ls.export_tasks(project["id"]):
        answers = [
            reduce_annotation(a, users, span_labelling=span_labelling)
            for a in task.get("annotations") or []
        ]
        tasks.append(TaskAnnotations(task["id"], task["data"].get("item", ""), answers))
    return tasks


def consensus(task: TaskAnnotations) -> Any:
    """The value most annotators gave, as given; None without a strict majority leader."""
    ranked = Counter(task.values).most_common()
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    winner = ranked[0][0]
    return next(a.shown for a in task.annotations if a.value == winner)


def labels_jsonl(tasks: list[TaskAnnotations]) -> str:
    """The exported labels: one JSON line per annotated task, sorted by item."""
    lines = []
    for task in sorted(tasks, key=lambda t: t.item):
        if not task.annotations:
            continue
        answers = sorted(task.annotations, key=lambda a: a.annotator)
        record = {
            "item": task.item,
            "label": consensus(task),
            "agreement": consistency.observed_agreement(task.values),
            "annotations": [
                {
                    "annotator": a.annotator,
                    "label": consistency.SKIPPED
                    if a.skipped
                    else (presets.UNSURE if a.unsure else a.shown),
                }
                for a in answers
            ],
        }
        lines.append(json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    return "".join(f"{line}\n" for line in lines)


def newest_answers(tasks: list[TaskAnnotations]) -> list[TaskAnnotations]:
    """One task per answered item, the newest: an item may be queued by several batches."""
    newest = {t.item: t for t in sorted(tasks, key=lambda t: t.task_id) if t.annotations}
    return list(newest.values())


def answer_counts(tasks: list[TaskAnnotations]) -> dict[str, int]:
    """How many answers the tasks hold, skips included, and how many are skips.

    Label Studio counts the same (``total_annotations_number`` + ``skipped_annotations_number``
    and ``skipped_annotations_number``), so the charm can tell when they change.
    """
    answers = [a for t in tasks for a in t.annotations]
    return {"annotations": len(answers), "skipped_annotations": sum(a.skipped for a in answers)}


def agreement(
    tasks: list[TaskAnnotations], threshold: float | None, *, force: bool
) -> dict[str, Any]:
    """The project's agreement, checked against the gate's ``threshold`` (None: no gate).

    Raises ``LabellingError`` (one line: alpha, the threshold, the tasks to fix) when the gate
    refuses and ``force`` is not given.
    """
    refusal = None if threshold is None else consistency.gate_refusal(tasks, threshold)
    if refusal and not force:
        raise LabellingError(refusal)
    alpha = consistency.krippendorff_alpha_nominal([t.values for t in tasks])
    return {
        "krippendorff_alpha": None if alpha is None else round(alpha, 4),
        "compared_tasks": sum(1 for t in tasks if len(t.values) >= 2),
        "agreement_threshold": threshold,
        "forced": refusal is not None,
    }


def is_relabel_project(ls: LabelStudio, project: dict) -> bool:
    """Whether ``project`` is ``<project> re-label``, re-labelling an existing project's items."""
    title = project["title"]
    source = title.removesuffix(RELABEL_SUFFIX)
    return source != title and ls.project_by_title(source) is not None


def export_annotations(
    ls: LabelStudio,
    ws: Workspace,
    *,
    project_title: str,
    message: str = "",
    agreement_threshold: float | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Cut a new dataset version: the labelled version's files plus the project's labels.

    A project's labels go to ``labels/<project>.jsonl`` on the version it was imported from,
    which must be the newest. A re-label project's (``labels/<project>-re-label.jsonl``, one
    line per re-labelled item, which training reads as corrections of ``<project>``'s labels)
    go on the newest version, which must still hold the items unchanged: the project's
    version, or labelling exports and augmentations on top of it.

    With ``agreement_threshold``, the export is refused below it (``force``: exported anyway,
    and the result and the version's metadata say it was forced).
    """
    project = _require_project(ls, project_title)
    version = project_metadata(project).get("version")
    if not version:
        raise LabellingError(f"project {project_title!r} was not imported from a dataset version")
    tasks = project_annotations(ls, project)
    annotated = [t for t in tasks if t.annotations]
    if not annotated:
        raise LabellingError(f"project {project_title!r} has no annotations")
    measured = agreement(tasks, agreement_threshold, force=force)
    relabelling = is_relabel_project(ls, project)
    labels_path = f"{items.LABELS_DIR}/{slug(project_title)}.jsonl"
    parent = latest_with_items_of(ws, version) if relabelling else version
    labelled = newest_answers(tasks) if relabelling else tasks
    with tempfile.TemporaryDirectory(prefix="mlops-labelling-export-") as staging:
        data = Path(staging) / "data"
        fetch_version(ws, parent, data)
        (data / items.LABELS_DIR).mkdir(exist_ok=True)
        (data / labels_path).write_text(labels_jsonl(labelled), encoding="utf-8")
        subject = message or f"labels of project {project_title} on {parent}"
        details = {"project": project_title, **measured}
        created = create_labelled_version(ws, data, parent, subject, details=details)
    result = {
        "version": created["version"],
        "parent": created.get("parent"),
        "project": project_title,
        "labels_path": labels_path,
        "tasks_exported": len(annotated),
        **answer_counts(tasks),
        **measured,
        "commit": created.get("commit"),
    }
    if relabelling:
        result["relabelled_items"] = len(labelled)
    return result


def _relabel_project(ls: LabelStudio, project: dict, overlap: int | None) -> dict:
    """The project's re-label sibling, made if missing; ``overlap``: annotators per task."""
    title = f"{project['title']}{RELABEL_SUFFIX}"
    found = ls.project_by_title(title)
    if found is None:
        return ls.create_project(
            {
                "title": title,
                "description": project.get("description") or "",
                "label_config": project["label_config"],
                "maximum_annotations": overlap or project.get("maximum_annotations") or 1,
                "overlap_cohort_percentage": 100,
            }
        )
    if overlap is not None and found.get("maximum_annotations") != overlap:
        return ls.update_project(
            found["id"], {"maximum_annotations": overlap, "overlap_cohort_percentage": 100}
        )
    return found


def queue_for_relabel(
    ls: LabelStudio,
    project: dict,
    item_ids: list[str],
    reason: str,
    batch: str,
    overlap: int | None = None,
) -> dict[str, Any]:
    """Copy the tasks of ``item_ids`` into the project's re-label sibling, once per batch."""
    by_item = {t["data"].get("item"): t["data"] for t in ls.export_tasks(project["id"])}
    target = _relabel_project(ls, project, overlap)
    queued = {
        (t["data"].get("item"), t["data"].get("relabel_batch"))
        for t in ls.export_tasks(target["id"])
    }
    missing = sorted(i for i in item_ids if i not in by_item)
    new_tasks = [
        {"data": {**by_item[item], "relabel_reason": reason, "relabel_batch": batch}}
        for item in dict.fromkeys(item_ids)
        if item in by_item and (item, batch) not in queued
    ]
    ls.import_tasks(target["id"], new_tasks)
    return {
        "relabel_project": target["title"],
        "queued": len(new_tasks),
        "already_queued": len([i for i in item_ids if (i, batch) in queued]),
        "missing": missing,
    }


def consistency_report(
    ls: LabelStudio,
    *,
    project_title: str,
    threshold: float,
    requeue: bool = False,
    overlap: int | None = None,
) -> dict[str, Any]:
    """Agreement per task and overall; optionally re-queue the flagged tasks."""
    project = _require_project(ls, project_title)
    tasks = project_annotations(ls, project)
    if not any(t.annotations for t in tasks):
        raise LabellingError(f"project {project_title!r} has no annotations")
    result: dict[str, Any] = {
        "project": project_title,
        **consistency.report(tasks, threshold),
        **answer_counts(tasks),
    }
    if requeue:
        flagged = [e["item"] for e in result["inconsistent"] + result["ambiguous"]]
        result["requeue"] = queue_for_relabel(
            ls, project, flagged, "inconsistent or ambiguous", f"consistency@{threshold}", overlap
        )
    return result


def relabel(
    ls: LabelStudio,
    *,
    project_title: str,
    item_ids: list[str],
    reason: str,
    batch: str,
    overlap: int | None = None,
) -> dict[str, Any]:
    """Queue items sent back (for example by error analysis) for another labelling pass."""
    project = _require_project(ls, project_title)
    return {
        "project": project_title,
        **queue_for_relabel(ls, project, item_ids, reason, batch, overlap),
    }
