"""A dataset version as training reads it: fetched once into the work folder, items and labels.

The work folder (``MLOPS_TRAINING_WORKDIR``) holds a clone of the registry (``registry/``, whose
DVC cache survives between runs) and each fetched version's files (``versions/vN/``), reused
while the version's content hash — the DVC ``.dir`` hash of ``data`` — is the one recorded
beside it. Jobs sharing a work folder take turns (a blocking lock), rather than failing.

Items and labels are read in the layout labelling exports: item files under ``data/``
(``texts/*.txt``, ``images/*.png``…) and ``labels/<project>.jsonl``, one JSON object per line
with at least ``item`` (the item's path under ``data/``) and ``label``; or, for tabular specs,
a CSV table with a label column.

Labelling re-labels a project ``P``'s items (error analysis sent them back) in its sibling
project ``P re-label``, whose export adds ``labels/<P>-re-label.jsonl`` beside
``labels/<P>.jsonl``. That file corrects ``P``: its records replace ``P``'s for the same items
(an item re-labelled without a single label is then skipped as ambiguous), augmented copies of
a corrected item take its new label, and choosing the project treats it as part of ``P``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_workload import dataset
from mlops_workload.labelling import items as item_kinds
from mlops_workload.labelling import registry_io
from mlops_workload.labelling.operations import RELABEL_SUFFIX, slug
from mlops_workload.workspace import DATA_PATH, RegistryError, Workspace

LABELS_DIR = item_kinds.LABELS_DIR
KIND_SUFFIXES = {"image": item_kinds.IMAGE_SUFFIXES, "text": item_kinds.TEXT_SUFFIXES}


class TrainingError(Exception):
    """A training operation failed; the message is one line saying why."""


class NoLabelsError(TrainingError):
    """The version has no labels at all: nothing to train on yet."""


@dataclass(frozen=True)
class RegistryAccess:
    """Where the registry is and the work folder this job keeps its clone and versions in."""

    url: str
    workdir: Path
    endpoint_url: str | None = None

    @property
    def workspace(self) -> Workspace:
        return Workspace(self.workdir / "registry", self.url, self.endpoint_url)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the work folder: one fetch or new version at a time, the others wait."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / ".training.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class FetchedVersion:
    """A version's files on local disk and what identifies them."""

    name: str
    path: Path  # the version's ``data`` folder
    digest: str  # the DVC .dir hash of ``data``: the version's content hash
    commit: str
    registry_url: str
    reused: bool  # the files were already in the work folder


@dataclass(frozen=True)
class Examples:
    """A version's labelled examples of one kind, in item order."""

    kind: str  # image, text or tabular
    items: list[str]  # item ids: paths under data/, or ``table.csv#row`` for tables
    labels: list[str]
    source: str  # the labels file or the table they were read from
    project: str | None  # the labelling project (the labels file's name), None for tables
    skipped: dict[str, int] = field(default_factory=dict)
    table: Any = None  # tabular specs: the features, a pandas DataFrame


def fetch_locked(access: RegistryAccess, version: str) -> FetchedVersion:
    """Fetch ``version`` into the work folder (the caller holds ``access.locked()``)."""
    ws = access.workspace
    versions = access.workdir / "versions"
    target = versions / version
    # The content hash of the files in ``target``, written once they are complete.
    marker = versions / f".{version}.digest"
    try:
        with ws.locked():
            ws.sync()
            metadata = registry_io.find_version(ws, version)
            digest = dataset.dir_hash(ws.show(version, f"{DATA_PATH}.dvc"))
            if digest is None:
                raise TrainingError(f"{version} tracks no {DATA_PATH}/ folder with DVC")
            reused = target.is_dir() and marker.is_file() and marker.read_text() == digest
            if not reused:
                marker.unlink(missing_ok=True)
                registry_io.copy_version_data(ws, version, target)
                marker.write_text(digest)
    except RegistryError as error:
        raise TrainingError(str(error)) from None
    return FetchedVersion(
        name=version,
        path=target,
        digest=digest,
        commit=metadata["commit"],
        registry_url=access.url,
        reused=reused,
    )


def fetch(access: RegistryAccess, version: str) -> FetchedVersion:
    """Fetch ``version`` (git fetch, checkout of its tag, ``dvc pull``) or reuse its files."""
    with access.locked():
        return fetch_locked(access, version)


def label_files(root: Path) -> dict[str, Path]:
    """{project: labels file} of a version's data folder."""
    folder = root / LABELS_DIR
    if not folder.is_dir():
        return {}
    return {path.stem: path for path in sorted(folder.glob("*.jsonl")) if path.is_file()}


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a labels file, one a line (blank lines skipped)."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise TrainingError(f"{path.name} line {number} is not JSON") from None
        if not isinstance(record, dict):
            raise TrainingError(f"{path.name} line {number} is not a JSON object")
        records.append(record)
    return records


def is_safe_item(item: object) -> bool:
    """An item id that names a file inside the version (no absolute path, no ``..``)."""
    return (
        isinstance(item, str)
        and bool(item)
        and not item.startswith("/")
        and ".." not in item.split("/")
    )


def kind_of(item: str) -> str | None:
    """``image`` or ``text`` by the item's suffix, None for other files."""
    lowered = item.lower()
    return next((kind for kind, ends in KIND_SUFFIXES.items() if lowered.endswith(ends)), None)


def _relabel_name(name: str) -> str:
    """The labels file name of project ``name``'s re-label sibling (labelling's naming)."""
    return slug(name + RELABEL_SUFFIX)


def project_files(files: dict[str, Path], name: str) -> list[Path]:
    """Project ``name``'s labels file, then the re-label files that correct it, in order."""
    paths = [files[name]]
    name = _relabel_name(name)
    while name in files:
        paths.append(files[name])
        name = _relabel_name(name)
    return paths


def corrected_records(paths: list[Path]) -> list[dict[str, Any]]:
    """The records of a project's labels file with its re-label files' records over them.

    A later file's record of an item replaces the earlier one; an augmented copy of a corrected
    item (``augmented_from``), not itself corrected, takes the item's new label.
    """
    merged: dict[str, dict[str, Any]] = {}
    unnamed: list[dict[str, Any]] = []  # no item id: skipped by the reader, counted there
    corrected: dict[str, Any] = {}
    for index, path in enumerate(paths):
        for record in read_records(path):
            item = record.get("item")
            if not isinstance(item, str):
                unnamed.append(record)
                continue
            merged[item] = record
            if index:
                corrected[item] = record.get("label")
    for item, record in merged.items():
        source = record.get("augmented_from")
        if item not in corrected and isinstance(source, str) and source in corrected:
            merged[item] = {**record, "label": corrected[source]}
    return [*merged.values(), *unnamed]


def _choose_labels(
    root: Path, version: str, kind: str, project: str | None
) -> tuple[str, list[Path]]:
    files = label_files(root)
    if not files:
        raise NoLabelsError(f"{version} has no labels ({LABELS_DIR}/*.jsonl): label it first")
    if project is not None:
        name = slug(project)
        if name not in files:
            raise TrainingError(
                f"{version} has no labels of project {project!r} (it has {', '.join(files)})"
            )
        return project, project_files(files, name)
    corrections = {_relabel_name(name) for name in files} & files.keys()
    matching = [
        name
        for name in files
        if name not in corrections
        and any(
            kind_of(str(r.get("item", ""))) == kind
            for path in project_files(files, name)
            for r in read_records(path)
        )
    ]
    if len(matching) != 1:
        found = ", ".join(matching) or "none"
        raise TrainingError(
            f"{version} has labels of {kind} items in {len(matching)} projects ({found}): "
            "name one with --project"
        )
    return matching[0], project_files(files, matching[0])


def labelled_items(fetched: FetchedVersion, kind: str, project: str | None = None) -> Examples:
    """The labelled image or text items of a version, from one project's labels files."""
    root = fetched.path
    chosen, paths = _choose_labels(root, fetched.name, kind, project)
    skipped: Counter[str] = Counter()
    by_item: dict[str, str] = {}
    for record in corrected_records(paths):
        item, label = record.get("item"), record.get("label")
        if not is_safe_item(item):
            skipped["bad item id"] += 1
        elif kind_of(str(item)) != kind:
            skipped[f"not a {kind} item"] += 1
        elif not isinstance(label, str) or not label:
            skipped["no single label"] += 1
        elif not (root / str(item)).is_file():
            skipped["item file missing"] += 1
        else:
            by_item[str(item)] = label
    source = ", ".join(f"{LABELS_DIR}/{path.name}" for path in paths)
    if not by_item:
        raise TrainingError(f"{fetched.name} has no labelled {kind} items in {source}")
    ordered = sorted(by_item)
    return Examples(
        kind=kind,
        items=ordered,
        labels=[by_item[item] for item in ordered],
        source=source,
        project=chosen,
        skipped=dict(skipped),
    )


def table_rows(
    fetched: FetchedVersion, table: str | None = None, label_column: str = "label"
) -> Examples:
    """The rows of a CSV table of the version, with its label column as the labels."""
    import pandas as pd

    root = fetched.path
    tables = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*.csv")
        if p.relative_to(root).parts[0] != LABELS_DIR
    )
    if table is None:
        if len(tables) != 1:
            raise TrainingError(
                f"{fetched.name} has {len(tables)} CSV tables: name one with --table"
            )
        table = tables[0]
    elif table not in tables:
        raise TrainingError(f"{fetched.name} has no table {table}")
    try:
        frame = pd.read_csv(root / table)
    except (ValueError, OSError) as error:
        raise TrainingError(f"cannot read {table}: {error}") from None
    if label_column not in frame.columns:
        raise TrainingError(f"{table} has no label column {label_column!r}")
    labelled = frame[frame[label_column].notna()]
    if labelled.empty:
        raise TrainingError(f"{table} has no labelled rows")
    if len(labelled.columns) < 2:
        raise TrainingError(f"{table} has no feature column besides {label_column!r}")
    return Examples(
        kind="tabular",
        items=[f"{table}#{row}" for row in labelled.index],
        labels=[str(value) for value in labelled[label_column]],
        source=table,
        project=None,
        skipped={"no label": len(frame) - len(labelled)} if len(labelled) < len(frame) else {},
        table=labelled.drop(columns=[label_column]).reset_index(drop=True),
    )
