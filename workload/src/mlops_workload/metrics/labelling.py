"""Label Studio's exporter: up, its projects', tasks' and answers' counts, the agreement (alpha).

The counts come from Label Studio's API with the admin's token (``LABEL_STUDIO_USER_TOKEN``,
the server's own secrets environment); only numbers leave, never a title or an answer. The
agreement is the charm's record of each project's last measure (``agreement.json``, written
by ``mlops_charms.agreement``): the lowest alpha over the projects, and how many the export gate
at ``--gate-threshold`` would refuse.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from mlops_workload.metrics import common
from mlops_workload.metrics.exposition import Family, gauge

PAGE_SIZE = 100
MAX_PAGES = 20  # 2,000 projects: beyond that the counts are of the newest ones
_COUNTS = (
    ("task_number", "mlops_labelling_tasks", "Tasks in Label Studio."),
    ("total_annotations_number", "mlops_labelling_annotations", "Answers (skips excluded)."),
    ("skipped_annotations_number", "mlops_labelling_skipped_annotations", "Skipped answers."),
)


@dataclass(frozen=True)
class LabellingSources:
    """Where the labelling exporter reads."""

    data_dir: str
    jobs_dir: str
    url: str
    token: str
    agreement_file: str
    gate_threshold_file: str | None = None
    # The CA of Label Studio's certificate when it serves HTTPS (the URL is then https://).
    ca_file: str | None = None


def counts(url: str, token: str, ca_file: str | None = None) -> list[Family]:
    """The projects, tasks and answers Label Studio counts (one request per 100 projects)."""
    headers = {"Authorization": f"Token {token}"}
    fields = ",".join(["id", *(field for field, _, _ in _COUNTS)])
    totals = dict.fromkeys((field for field, _, _ in _COUNTS), 0)
    projects = 0
    try:
        for page in range(1, MAX_PAGES + 1):
            query = urllib.parse.urlencode(
                {"page": page, "page_size": PAGE_SIZE, "include": fields}
            )
            page_text = common.read_page(
                f"{url}/api/projects?{query}", headers=headers, cafile=ca_file
            )
            answer = json.loads(page_text)
            results = answer.get("results") or []
            projects = int(answer.get("count") or 0)
            for project in results:
                for field in totals:
                    totals[field] += int(project.get(field) or 0)
            if not answer.get("next") or len(results) < PAGE_SIZE:
                break
    except (OSError, ValueError, TypeError, AttributeError):
        return [gauge("mlops_labelling_api_up", "Whether Label Studio's API answers.", 0)]
    return [
        gauge("mlops_labelling_api_up", "Whether Label Studio's API answers.", 1),
        gauge("mlops_labelling_projects", "Projects in Label Studio.", projects),
        *(gauge(name, help_text, totals[field]) for field, name, help_text in _COUNTS),
    ]


def gate_threshold(path: str | None) -> float | None:
    """The export gate's threshold the charm left in ``path``; None: no gate."""
    try:
        return float(Path(path).read_text()) if path else None
    except (OSError, ValueError):
        return None  # no gate (an empty file), or never written


def agreement(path: str, threshold: float | None) -> list[Family]:
    """The lowest alpha measured over the projects, how many the gate would refuse, the gate."""
    try:
        measures = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        measures = {}
    alphas = []
    below = 0
    for measure in measures.values() if isinstance(measures, dict) else ():
        if not isinstance(measure, dict) or measure.get("error") is not None:
            continue
        alpha, compared = measure.get("krippendorff_alpha"), measure.get("compared_tasks")
        if isinstance(alpha, int | float):
            alphas.append(float(alpha))
        # As the gate decides (mlops_charms.agreement.Measure.refused_by).
        if threshold is not None and isinstance(compared, int):
            below += compared == 0 or (isinstance(alpha, int | float) and alpha < threshold)
    families = [
        gauge(
            "mlops_labelling_agreement_measured_projects",
            "Projects with a measure of agreement (Krippendorff's alpha).",
            len(alphas),
        ),
        gauge(
            "mlops_labelling_agreement_alpha_min",
            "The lowest agreement (Krippendorff's alpha) of the projects' last measures.",
            min(alphas) if alphas else None,
        ),
    ]
    if threshold is not None:
        families += [
            gauge(
                "mlops_labelling_agreement_gate_threshold",
                "The export gate: the lowest agreement an export passes.",
                threshold,
            ),
            gauge(
                "mlops_labelling_projects_below_gate",
                "Projects whose last measure the export gate would refuse.",
                below,
            ),
        ]
    return families


def collectors(sources: LabellingSources) -> list:
    """What each scrape of Label Studio's exporter runs."""
    jobs = common.JobsCollector(sources.jobs_dir)
    return [
        lambda: [
            gauge(
                "mlops_labelling_up",
                "Whether Label Studio answers its health URL.",
                common.answers(f"{sources.url}/health", cafile=sources.ca_file),
            )
        ],
        lambda: counts(sources.url, sources.token, sources.ca_file),
        lambda: agreement(sources.agreement_file, gate_threshold(sources.gate_threshold_file)),
        lambda: common.storage(sources.data_dir),
        jobs.collect,
    ]
