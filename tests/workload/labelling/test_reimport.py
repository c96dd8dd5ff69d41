"""import-version into a project that already labels a version (no Label Studio needed).

A project's tasks are keyed by item path, so importing another version's content under the
same paths would pass labels given to the old content off as labels of the new one. The
workload refuses; the same version again only adds the items the project lacks.

Label Studio is a fake holding projects and tasks as its REST API returns them; the registry's
``fetch_version`` writes the version's files where the real one would.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from mlops_workload import cli
from mlops_workload.labelling import cli as labelling_cli
from mlops_workload.labelling import operations, presets
from mlops_workload.labelling.client import LabellingError
from mlops_workload.workspace import Workspace

CONFIG = presets.render("text-classification", ["positive", "negative"])
VERSIONS = {
    "v1": {"texts/a.txt": "good", "texts/b.txt": "bad"},
    "v2": {"texts/a.txt": "now quite different", "texts/b.txt": "bad", "texts/c.txt": "new"},
}


class FakeLabelStudio:
    """The calls ``import_version`` makes, answered as Label Studio's API answers them."""

    def __init__(self) -> None:
        self.projects: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, list[dict[str, Any]]] = {}
        self.changes: list[str] = []

    def project_by_title(self, title: str) -> dict | None:
        return next((dict(p) for p in self.projects.values() if p["title"] == title), None)

    def create_project(self, fields: dict) -> dict:
        project_id = len(self.projects) + 1
        self.projects[project_id] = {"id": project_id, **fields}
        self.tasks[project_id] = []
        self.changes.append(f"create {fields['title']}")
        return dict(self.projects[project_id])

    def update_project(self, project_id: int, fields: dict) -> dict:
        self.projects[project_id].update(fields)
        self.changes.append(f"update {project_id}")
        return dict(self.projects[project_id])

    def import_tasks(self, project_id: int, tasks: list[dict]) -> None:
        for task in tasks:
            self.tasks[project_id].append({"id": len(self.tasks[project_id]) + 1, **task})
        if tasks:
            self.changes.append(f"import {len(tasks)} into {project_id}")

    def export_tasks(self, project_id: int) -> list[dict]:
        return [dict(task, annotations=[]) for task in self.tasks[project_id]]

    def ensure_local_storage(self, project_id: int, path: str, title: str) -> None:
        raise AssertionError("text items need no local storage")


@pytest.fixture
def label_studio() -> FakeLabelStudio:
    return FakeLabelStudio()


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The versions fetched from the registry, whose files land where the real fetch puts them."""
    versions: list[str] = []

    def fetch_version(_ws: Workspace, version: str, destination: Path) -> dict:
        versions.append(version)
        for name, content in VERSIONS[version].items():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            (destination / name).write_text(content)
        return {"version": version}

    monkeypatch.setattr(operations, "fetch_version", fetch_version)
    return versions


def _import(label_studio: FakeLabelStudio, tmp_path: Path, version: str) -> dict:
    return operations.import_version(
        label_studio,  # type: ignore[arg-type]  # a fake of the client
        Workspace(tmp_path / "workspace", "http://registry.invalid/registry.git"),
        tmp_path / "media-root",
        project_title="reviews",
        version=version,
        label_config=CONFIG,
        overlap=2,
    )


def test_another_version_into_a_project_that_labels_one_is_refused(
    label_studio: FakeLabelStudio, fetched: list[str], tmp_path: Path
):
    _import(label_studio, tmp_path, "v1")
    before = json.dumps([label_studio.projects, label_studio.tasks], sort_keys=True)
    label_studio.changes.clear()

    with pytest.raises(LabellingError) as refusal:
        _import(label_studio, tmp_path, "v2")

    assert str(refusal.value) == "project 'reviews' labels v1: import v2 into a new project"
    assert fetched == ["v1"]  # v2 was not even downloaded
    assert label_studio.changes == []
    assert json.dumps([label_studio.projects, label_studio.tasks], sort_keys=True) == before
    assert not (tmp_path / "media-root" / "reviews" / "v2").exists()


def test_the_same_version_again_adds_only_the_items_the_project_lacks(
    label_studio: FakeLabelStudio, fetched: list[str], tmp_path: Path
):
    _import(label_studio, tmp_path, "v1")
    label_studio.tasks[1].pop()  # an item deleted by hand in Label Studio

    result = _import(label_studio, tmp_path, "v1")

    assert fetched == ["v1", "v1"]
    assert (result["tasks_created"], result["tasks_total"]) == (1, 2)
    assert sorted(t["data"]["item"] for t in label_studio.tasks[1]) == [
        "texts/a.txt",
        "texts/b.txt",
    ]


def test_another_version_goes_into_a_new_project(
    label_studio: FakeLabelStudio, fetched: list[str], tmp_path: Path
):
    _import(label_studio, tmp_path, "v1")

    result = operations.import_version(
        label_studio,  # type: ignore[arg-type]
        Workspace(tmp_path / "workspace", "http://registry.invalid/registry.git"),
        tmp_path / "media-root",
        project_title="reviews v2",
        version="v2",
        label_config=CONFIG,
        overlap=2,
    )

    assert (result["project_id"], result["version"], result["tasks_created"]) == (2, "v2", 3)
    assert operations.project_metadata(label_studio.projects[2])["version"] == "v2"
    assert operations.project_metadata(label_studio.projects[1])["version"] == "v1"


def test_a_project_made_by_hand_takes_a_version(
    label_studio: FakeLabelStudio, fetched: list[str], tmp_path: Path
):
    label_studio.create_project({"title": "reviews", "description": "made in the UI"})

    result = _import(label_studio, tmp_path, "v2")

    assert result["tasks_created"] == 3
    assert operations.project_metadata(label_studio.projects[1])["version"] == "v2"


def test_the_cli_refuses_in_one_line_as_the_charm_reports_it(
    label_studio: FakeLabelStudio,
    fetched: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    _import(label_studio, tmp_path, "v1")
    monkeypatch.setattr(
        labelling_cli, "LabelStudio", lambda _url, _token, ca_file=None: label_studio
    )
    for name, value in {
        "LABEL_STUDIO_URL": "http://127.0.0.1:8080",
        "LABEL_STUDIO_API_KEY": "token",
        "MLOPS_REGISTRY_WORKSPACE": str(tmp_path / "workspace"),
        "MLOPS_REGISTRY_URL": "http://registry.invalid/registry.git",
        "MLOPS_LABELLING_MEDIA_ROOT": str(tmp_path / "media-root"),
    }.items():
        monkeypatch.setenv(name, value)
    argv = ["labelling", "import-version", "--project", "reviews", "--version", "v2"]
    argv += ["--preset", "text-classification", "--labels", "positive,negative"]
    stdout, stderr = io.StringIO(), io.StringIO()

    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = cli.main(argv)

    assert code == 1
    assert stdout.getvalue() == ""
    assert stderr.getvalue() == (
        "error: project 'reviews' labels v1: import v2 into a new project\n"
    )
