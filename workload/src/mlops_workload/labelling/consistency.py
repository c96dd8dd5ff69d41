"""Label consistency: how far annotators agree, per task and overall.

Each annotation is reduced to one nominal value: the chosen class (several choices joined),
or for span labelling the whole set of spans (start, end, label) — two annotators agree on a
task only if they marked the same spans with the same labels.

- Per task: *observed agreement*, the share of annotator pairs that gave the same value
  (1.0 = all agree). Easy to read, and defined for any number of annotators.
- Overall: *Krippendorff's alpha* for nominal data. Unlike per-task averages or Cohen's kappa
  it corrects for agreement expected by chance from the label distribution, accepts any
  number of annotators per task, and tolerates missing annotations (tasks labelled by
  different annotators, or by one only: those tasks are simply not pairable).

A task is *inconsistent* when its observed agreement is below the threshold, and *ambiguous*
when an annotator chose ``unsure`` or skipped it, or when its top value leads the runner-up
by at most one vote among three or more annotators (a near-tie). Unsure answers and skips are
not values: they say nothing about which class is right, so they take no part in agreement.

The *agreement gate* (the data-centric approach's) lets an export through only when alpha
reaches a threshold; it names the tasks to fix when it does not.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from mlops_workload.labelling.presets import UNSURE

SKIPPED = "(skipped)"
NAMED_IN_A_LINE = 5  # tasks a one-line refusal names; the consistency report lists them all


@dataclass(frozen=True)
class Annotation:
    """One annotator's answer for a task: a nominal value, unsure, or a skip."""

    annotator: str
    value: str | None  # None: skipped or unsure
    shown: Any  # what the annotator gave, for the report
    unsure: bool = False
    skipped: bool = False


@dataclass
class TaskAnnotations:
    """A task and every answer it got."""

    task_id: int
    item: str
    annotations: list[Annotation] = field(default_factory=list)

    @property
    def values(self) -> list[str]:
        return [a.value for a in self.annotations if a.value is not None]


def observed_agreement(values: list[str]) -> float | None:
    """Share of pairs of values that are equal; None with fewer than two values."""
    m = len(values)
    if m < 2:
        return None
    counts = Counter(values)
    return sum(n * (n - 1) for n in counts.values()) / (m * (m - 1))


def krippendorff_alpha_nominal(units: list[list[str]]) -> float | None:
    """Krippendorff's alpha for nominal values; each unit lists the values it received.

    Units with fewer than two values are not pairable and are left out. Returns None when
    alpha is undefined: no pairable unit, or a single value used throughout (no variation).
    """
    coincidences: defaultdict[tuple[str, str], float] = defaultdict(float)
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for a, b in combinations(values, 2):
            coincidences[(a, b)] += 1 / (m - 1)
            coincidences[(b, a)] += 1 / (m - 1)
    totals: defaultdict[str, float] = defaultdict(float)
    for (c, _k), weight in coincidences.items():
        totals[c] += weight
    n = sum(totals.values())
    if n <= 1:
        return None
    disagreement_observed = sum(w for (c, k), w in coincidences.items() if c != k)
    disagreement_expected = sum(
        totals[c] * totals[k] for c in totals for k in totals if c != k
    ) / (n - 1)
    if disagreement_expected == 0:
        return None
    return 1 - disagreement_observed / disagreement_expected


def is_near_tie(values: list[str]) -> bool:
    """Three or more values whose leader is at most one vote ahead of the runner-up."""
    if len(values) < 3:
        return False
    ranked = Counter(values).most_common()
    return len(ranked) > 1 and ranked[0][1] - ranked[1][1] <= 1


def _entry(task: TaskAnnotations, agreement: float | None, reasons: list[str]) -> dict:
    labels = [
        {
            "annotator": a.annotator,
            "label": SKIPPED if a.skipped else (UNSURE if a.unsure else a.shown),
        }
        for a in sorted(task.annotations, key=lambda a: a.annotator)
    ]
    return {
        "task": task.task_id,
        "item": task.item,
        "agreement": None if agreement is None else round(agreement, 4),
        "labels": labels,
        "reasons": reasons,
    }


def report(tasks: list[TaskAnnotations], threshold: float) -> dict:
    """The consistency report of a project's tasks."""
    inconsistent, ambiguous = [], []
    agreements = []
    for task in sorted(tasks, key=lambda t: t.item):
        agreement = observed_agreement(task.values)
        if agreement is not None:
            agreements.append(agreement)
            if agreement < threshold:
                inconsistent.append(_entry(task, agreement, ["annotators disagree"]))
        reasons = []
        if any(a.unsure for a in task.annotations):
            reasons.append("marked unsure")
        if any(a.skipped for a in task.annotations):
            reasons.append("skipped")
        if is_near_tie(task.values):
            reasons.append("near-tie")
        if reasons:
            ambiguous.append(_entry(task, agreement, reasons))
    alpha = krippendorff_alpha_nominal([t.values for t in tasks])
    return {
        "tasks": len(tasks),
        "annotated_tasks": sum(1 for t in tasks if t.annotations),
        "compared_tasks": len(agreements),
        "threshold": threshold,
        "krippendorff_alpha": None if alpha is None else round(alpha, 4),
        "mean_observed_agreement": round(sum(agreements) / len(agreements), 4)
        if agreements
        else None,
        "inconsistent": inconsistent,
        "ambiguous": ambiguous,
    }


def gate_refusal(tasks: list[TaskAnnotations], threshold: float) -> str | None:
    """Why the agreement gate refuses an export of ``tasks`` (one line), or None: it passes.

    It refuses while no task has two answers to compare (agreement cannot be measured), and
    when Krippendorff's alpha is below ``threshold``. Alpha undefined on compared tasks means
    every annotator gave the same label everywhere: nothing disagrees, so it passes.
    """
    compared = [t for t in tasks if len(t.values) >= 2]
    if not compared:
        waiting = sorted(t.item for t in tasks if len(t.values) == 1)
        return (
            f"agreement cannot be measured against the threshold {threshold}: no task has "
            f"two annotations yet; have a second annotator label {_named(waiting)}, "
            "or export with force=true"
        )
    alpha = krippendorff_alpha_nominal([t.values for t in tasks])
    if alpha is None or alpha >= threshold:
        return None
    disagreeing = sorted(
        (observed_agreement(t.values) or 0.0, t.item)
        for t in compared
        if observed_agreement(t.values) != 1.0
    )
    return (
        f"Krippendorff's alpha {round(alpha, 4)} is below the agreement threshold {threshold}: "
        f"annotators disagree on {_named([item for _agreement, item in disagreeing])} "
        "(consistency-report lists every task); fix them, or export with force=true"
    )


def _named(items: list[str]) -> str:
    """The first few items, and how many more: a bounded list for a one-line message."""
    shown = ", ".join(items[:NAMED_IN_A_LINE]) or "no task"
    more = len(items) - NAMED_IN_A_LINE
    return f"{shown} and {more} more" if more > 0 else shown


def canonical(value: Any) -> str:
    """A stable text form of a value, so equal answers compare equal."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
