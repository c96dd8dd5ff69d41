"""The data registry as labelling uses it: read a version's files, cut a labelled version.

Reading and writing go through the registry package (``Workspace``, ``create_version``), so a
labelled version obeys the same rules as every other one: it appears only once its data is
in the DVC remote and its tag is pushed.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Any

from mlops_workload import dataset
from mlops_workload.workspace import DATA_PATH, RegistryError, Workspace

# Versions made from their parent's files without changing an item: labels or copies added.
ITEM_PRESERVING = ("labelling-export", "augmentation")


def authenticate_git(username: str | None, password: str | None) -> None:
    """Send HTTP basic auth on every git request of this process and its children.

    The credentials travel in git's environment-borne config, not in the remote URL, so
    they are never written to the workspace's ``.git/config``.
    """
    if not username or not password:
        return
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    index = int(os.environ.get("GIT_CONFIG_COUNT", "0"))
    os.environ[f"GIT_CONFIG_KEY_{index}"] = "http.extraHeader"
    os.environ[f"GIT_CONFIG_VALUE_{index}"] = f"Authorization: Basic {token}"
    os.environ["GIT_CONFIG_COUNT"] = str(index + 1)


def find_version(ws: Workspace, version: str) -> dict[str, Any]:
    """The version's metadata from the registry (the workspace must be synced)."""
    for found in dataset.list_versions(ws):
        if found["version"] == version:
            return found
    raise RegistryError(f"unknown version {version}: the registry has no such tag")


def copy_version_data(ws: Workspace, version: str, destination: Path) -> None:
    """Copy the files of ``version`` into ``destination`` (the caller holds the synced ``ws``)."""
    try:
        ws.git("checkout", version, "--", f"{DATA_PATH}.dvc", what=f"cannot read {version}")
        ws.dvc(
            "pull",
            "--quiet",
            "--force",
            f"{DATA_PATH}.dvc",
            what=f"cannot download {version} from the DVC remote",
        )
        if destination.exists():
            shutil.rmtree(destination)
        shutil.copytree(ws.path / DATA_PATH, destination)
    finally:
        ws.discard_local_changes()


def fetch_version(ws: Workspace, version: str, destination: Path) -> dict[str, Any]:
    """Copy the files of ``version`` into ``destination``; return the version's metadata."""
    with ws.locked():
        ws.sync()
        metadata = find_version(ws, version)
        copy_version_data(ws, version, destination)
    return metadata


def latest_version(ws: Workspace) -> str | None:
    """The newest version's name (the workspace must be synced)."""
    versions = dataset.list_versions(ws)
    return versions[-1]["version"] if versions else None


def latest_with_items_of(ws: Workspace, version: str) -> str:
    """The newest version, provided it still holds the items of ``version`` unchanged.

    That is ``version`` itself, or a labelling export or an augmentation of it, or of one of
    those: an export adds a labels file to its parent's files, an augmentation adds augmented
    copies beside them; neither changes an item.
    """
    with ws.locked():
        ws.sync()
        versions = dataset.list_versions(ws)
    by_name = {found["version"]: found for found in versions}
    if version not in by_name:
        raise RegistryError(f"unknown version {version}: the registry has no such tag")
    latest = versions[-1]["version"]
    current = by_name[latest]
    # Parents come before their children: the walk ends within len(versions) steps.
    for _ in versions:
        if current["version"] == version:
            return latest
        parent = by_name.get(current.get("parent") or "")
        if current["source"] not in ITEM_PRESERVING or parent is None:
            break
        current = parent
    raise RegistryError(
        f"{latest} may hold other items than {version} (it is not {version} with labels or "
        f"augmented copies added): import {latest} into a new project and label it there"
    )


def create_labelled_version(
    ws: Workspace,
    source: Path,
    parent: str,
    message: str,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Cut the next version from ``source``; it must follow ``parent`` directly.

    The registry records the newest version as a new version's parent, so a version cut
    after ``parent`` would make the labels look derived from data they were not made on.
    ``details`` go into the version's metadata (the project, its agreement).
    """
    with ws.locked():
        ws.sync()
        latest = latest_version(ws)
    if latest != parent:
        raise RegistryError(
            f"{latest} is newer than the labelled {parent}: import {latest} and label it, "
            f"so the new version's parent is the data its labels belong to"
        )
    return dataset.create_version(
        ws, str(source), source_kind="labelling-export", message=message, details=details
    )
