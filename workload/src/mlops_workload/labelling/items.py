"""A dataset version's items as Label Studio tasks.

An item is a file of the version's data (its path is the item id): text files become the
task's ``text``, images a URL Label Studio serves from its local-files root. Earlier label
exports (``labels/``) are not items.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

LABELS_DIR = "labels"
TEXT_SUFFIXES = (".txt", ".md", ".text")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def item_paths(root: Path, data_key: str) -> tuple[list[str], list[str]]:
    """(items, skipped): the relative paths that are items of this kind, and the others."""
    suffixes = IMAGE_SUFFIXES if data_key == "image" else TEXT_SUFFIXES
    items, skipped = [], []
    for directory, _dirs, names in os.walk(root):
        for name in names:
            relative = (Path(directory) / name).relative_to(root).as_posix()
            if relative.split("/", 1)[0] == LABELS_DIR:
                continue
            (items if name.lower().endswith(suffixes) else skipped).append(relative)
    return sorted(items), sorted(skipped)


def task(root: Path, item: str, data_key: str, version: str, media_root: Path | None) -> dict:
    """The task for one item: its content (or media URL) and where it came from."""
    path = root / item
    if data_key == "image":
        if media_root is None:
            raise ValueError("image items need a media root")
        relative = path.resolve().relative_to(media_root.resolve()).as_posix()
        value = "/data/local-files/?" + urllib.parse.urlencode({"d": relative})
    else:
        value = path.read_text(encoding="utf-8", errors="replace")
    return {"data": {data_key: value, "item": item, "dataset_version": version}}
