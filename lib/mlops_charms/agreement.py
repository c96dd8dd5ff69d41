"""What the charm remembers of each project's agreement between annotators.

A consistency report and an export both measure a project's agreement (Krippendorff's alpha)
on the answers they read, and say how many they read (``annotations``, skips included, and
``skipped_annotations``). The charm keeps each project's last measure in a file on the unit's
storage. At ``update-status`` the data-centric leader compares those counts with Label
Studio's (one request, ``label_studio.project_counts``) and reports again on a project whose
answers changed; the status names the projects the agreement gate would refuse.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import ops

from mlops_charms.host_files import HostFiles
from mlops_charms.jobs import Job
from mlops_charms.label_studio import ProjectCounts

# The jobs whose results carry a measure of agreement.
MEASURING = ("consistency-report", "export-annotations")
NAMED_IN_STATUS = 3


@dataclass(frozen=True)
class Measure:
    """A project's agreement as a job measured it, and the answers it counted."""

    annotations: int
    skipped_annotations: int
    job: str
    krippendorff_alpha: float | None = None
    compared_tasks: int | None = None  # tasks with two answers or more
    error: str | None = None  # the report failed: no measure until the answers change

    def refused_by(self, threshold: float) -> bool:
        """Whether the agreement gate at ``threshold`` would refuse an export now."""
        if self.error is not None or self.compared_tasks is None:
            return False
        if self.compared_tasks == 0:
            return True
        return self.krippendorff_alpha is not None and self.krippendorff_alpha < threshold

    def counts_differ(self, counts: ProjectCounts) -> bool:
        return (self.annotations, self.skipped_annotations) != (
            counts.annotations,
            counts.skipped_annotations,
        )


def report_params(counts: ProjectCounts) -> dict[str, str]:
    """The parameters of a report started because ``counts`` changed (list-jobs shows them)."""
    return {
        "project": counts.title,
        "annotations": str(counts.annotations),
        "skipped-annotations": str(counts.skipped_annotations),
        "started-by": "update-status",
    }


def measure_of(job: Job) -> Measure | None:
    """The measure an ended job took, or None: it took none (or one of an unknown form).

    A report the charm started that failed is a measure too, with its error: it is not
    started again until the answers change (a failed job is reported once).
    """
    if job.kind not in MEASURING or not job.params.get("project"):
        return None
    try:
        if job.state == "succeeded" and job.result is not None:
            alpha = job.result.get("krippendorff_alpha")
            return Measure(
                annotations=int(job.result["annotations"]),
                skipped_annotations=int(job.result["skipped_annotations"]),
                job=job.id,
                krippendorff_alpha=None if alpha is None else float(alpha),
                compared_tasks=int(job.result["compared_tasks"]),
            )
        if job.state == "failed" and "annotations" in job.params:
            return Measure(
                annotations=int(job.params["annotations"]),
                skipped_annotations=int(job.params.get("skipped-annotations", 0)),
                job=job.id,
                error=job.error or "failed",
            )
    except (KeyError, TypeError, ValueError):
        return None
    return None


def next_to_report(
    projects: list[ProjectCounts], measures: dict[str, Measure]
) -> ProjectCounts | None:
    """The first imported project whose answers changed since its last measure, if any."""
    for counts in projects:
        if not counts.imported or counts.annotations == 0:
            continue
        known = measures.get(counts.title)
        if known is None or known.counts_differ(counts):
            return counts
    return None


def gate_clause(measures: dict[str, Measure], threshold: float) -> str | None:
    """One short status clause naming the projects below the gate, or None."""
    below = sorted(title for title, measure in measures.items() if measure.refused_by(threshold))
    if not below:
        return None
    named = ", ".join(below[:NAMED_IN_STATUS])
    if len(below) > NAMED_IN_STATUS:
        named += f" +{len(below) - NAMED_IN_STATUS}"
    return f"agreement below {threshold}: {named}"


def shown(measures: dict[str, Measure]) -> list[dict]:
    """The measures as list-jobs shows them, by project title."""
    return [
        {"project": title, **{k: v for k, v in dataclasses.asdict(m).items() if v is not None}}
        for title, m in sorted(measures.items())
    ]


class AgreementRecord:
    """The measures kept in one JSON file on the unit's storage, by project title.

    ``files``: the workload container (Kubernetes) or the machine's own files.
    """

    def __init__(self, files: ops.Container | HostFiles, path: str):
        self.files = files
        self.path = path

    def load(self) -> dict[str, Measure]:
        """The measures kept; a file missing or unreadable keeps none."""
        try:
            raw = json.loads(self.files.pull(self.path).read())
        except (ops.pebble.PathError, json.JSONDecodeError):
            return {}
        measures = {}
        for title, fields in raw.items() if isinstance(raw, dict) else ():
            try:
                measure = Measure(**fields)
            except TypeError:
                continue  # written by another version of the charm: measured again
            if _well_typed(measure):
                measures[str(title)] = measure
        return measures

    def save(self, measures: dict[str, Measure]) -> None:
        content = {title: dataclasses.asdict(m) for title, m in sorted(measures.items())}
        self.files.push(self.path, json.dumps(content, indent=1) + "\n", make_dirs=True)

    def keep(self, job: Job) -> None:
        """Keep the measure ``job`` took, if it took one."""
        measure = measure_of(job)
        if measure is None:
            return
        measures = self.load()
        measures[job.params["project"]] = measure
        self.save(measures)

    def forget_all_but(self, titles: set[str]) -> None:
        """Forget the projects that no longer exist."""
        measures = self.load()
        kept = {title: m for title, m in measures.items() if title in titles}
        if kept != measures:
            self.save(kept)


def _well_typed(measure: Measure) -> bool:
    numbers = (measure.annotations, measure.skipped_annotations)
    return (
        all(isinstance(n, int) for n in numbers)
        and isinstance(measure.job, str)
        and isinstance(measure.krippendorff_alpha, int | float | None)
        and isinstance(measure.compared_tasks, int | None)
        and isinstance(measure.error, str | None)
    )
