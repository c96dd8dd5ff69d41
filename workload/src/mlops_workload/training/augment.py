"""Augmentation: seeded, deterministic transforms of a version's labelled items, as a new version.

The transforms are a JSON object: a pipeline of steps per item kind and how many augmented
copies each labelled item gets, for example::

    {"copies": 2,
     "image": [{"op": "rotate", "degrees": 10}, {"op": "crop", "min_scale": 0.85},
               {"op": "color_jitter", "brightness": 0.2, "contrast": 0.2}],
     "text": [{"op": "swap_words", "n": 1}, {"op": "delete_words", "rate": 0.1}]}

Every step has a probability ``p`` (default 1). Image steps (Pillow and numpy): ``hflip``,
``vflip``, ``rotate`` (``degrees``, ``fill``), ``crop`` (``min_scale``, ``max_scale``: the
side kept, resized back), ``color_jitter`` (``brightness``, ``contrast``, ``saturation``).
Text steps keep the label (EDA's random swap and deletion): ``swap_words`` (``n`` swaps),
``delete_words`` (each word with probability ``rate``, never all).

Each copy draws from its own generator, seeded by the seed, the item's path and the copy's
number, so a rerun with the same seed writes byte-identical items whatever the order or the
machine. Copies sit beside their item (``images/7.png`` → ``images/7.aug-<seed>-<copy>.png``)
and are labelled in the same labels file, one line each, with ``augmented_from``; items that
are themselves augmentations are not augmented again. The new version's parent is the source
version, and its metadata records the transforms and the seed. A version whose labelled items
all have their copies already (a re-labelled export of an augmented version) makes no new
version: an error, or with ``allow_unchanged`` a result that says so (``"unchanged": true``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mlops_workload import dataset
from mlops_workload.labelling.operations import slug
from mlops_workload.training import data
from mlops_workload.training.data import RegistryAccess, TrainingError
from mlops_workload.workspace import RegistryError

MAX_COPIES = 20
# op: {param: (low, high, default)}; ``p`` is every step's.
IMAGE_OPS: dict[str, dict[str, tuple[float, float, float]]] = {
    "hflip": {},
    "vflip": {},
    "rotate": {"degrees": (0, 180, 10), "fill": (0, 255, 0)},
    "crop": {"min_scale": (0.1, 1, 0.8), "max_scale": (0.1, 1, 1)},
    "color_jitter": {"brightness": (0, 1, 0), "contrast": (0, 1, 0), "saturation": (0, 1, 0)},
}
TEXT_OPS: dict[str, dict[str, tuple[float, float, float]]] = {
    "swap_words": {"n": (1, 100, 1)},
    "delete_words": {"rate": (0, 1, 0.1)},
}
INTEGER_PARAMS = {"n", "fill"}
SAVED_AS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}  # anything else becomes a PNG


@dataclass(frozen=True)
class Transforms:
    """Validated transforms: a pipeline per item kind and the copies per item."""

    image: tuple[dict[str, Any], ...]
    text: tuple[dict[str, Any], ...]
    copies: int

    def as_dict(self) -> dict[str, Any]:
        return {"copies": self.copies, "image": list(self.image), "text": list(self.text)}


def _step(raw: Any, ops: dict[str, dict[str, tuple[float, float, float]]], kind: str) -> dict:
    if not isinstance(raw, dict) or raw.get("op") not in ops:
        raise TrainingError(f'--transforms: each {kind} step is {{"op": one of {", ".join(ops)}}}')
    op = raw["op"]
    allowed = {**ops[op], "p": (0, 1, 1)}
    unknown = sorted(set(raw) - {"op", *allowed})
    if unknown:
        raise TrainingError(f"--transforms: {op} has no param {', '.join(unknown)}")
    step: dict[str, Any] = {"op": op}
    for name, (low, high, default) in allowed.items():
        value = raw.get(name, default)
        integer = name in INTEGER_PARAMS
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (integer and not isinstance(value, int))
        ):
            raise TrainingError(f"--transforms: {op}'s {name} must be a number")
        if not low <= value <= high:
            raise TrainingError(f"--transforms: {op}'s {name} must be from {low:g} to {high:g}")
        step[name] = int(value) if integer else float(value)
    if op == "crop" and step["min_scale"] > step["max_scale"]:
        raise TrainingError("--transforms: crop's min_scale is above its max_scale")
    return step


def parse_transforms(raw: Any) -> Transforms:
    """Check a transforms object (parsed JSON) and fill in the steps' defaults."""
    if not isinstance(raw, dict):
        raise TrainingError('--transforms must be a JSON object: {"image": [...], "text": [...]}')
    unknown = sorted(set(raw) - {"image", "text", "copies"})
    if unknown:
        raise TrainingError(f"--transforms: unknown key {', '.join(unknown)}")
    copies = raw.get("copies", 1)
    if isinstance(copies, bool) or not isinstance(copies, int) or not 1 <= copies <= MAX_COPIES:
        raise TrainingError(f"--transforms: copies must be an integer from 1 to {MAX_COPIES}")
    pipelines = {}
    for kind, ops in (("image", IMAGE_OPS), ("text", TEXT_OPS)):
        steps = raw.get(kind, [])
        if not isinstance(steps, list):
            raise TrainingError(f"--transforms: {kind} must be a list of steps")
        pipelines[kind] = tuple(_step(step, ops, kind) for step in steps)
    if not pipelines["image"] and not pipelines["text"]:
        raise TrainingError("--transforms names no image or text step")
    return Transforms(pipelines["image"], pipelines["text"], copies)


def item_rng(seed: int, item: str, copy: int) -> Any:
    """The generator of one copy of one item: the same for the same seed, item and copy."""
    import numpy as np

    digest = hashlib.sha256(f"{item}\0{copy}".encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "big")])


def _rotate(image: Any, step: dict[str, Any], rng: Any) -> Any:
    from PIL import Image

    angle = float(rng.uniform(-step["degrees"], step["degrees"]))
    bands = len(image.getbands())
    fill = step["fill"] if bands == 1 else (step["fill"],) * bands
    return image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=fill)


def _crop(image: Any, step: dict[str, Any], rng: Any) -> Any:
    from PIL import Image

    scale = float(rng.uniform(step["min_scale"], step["max_scale"]))
    width, height = image.size
    kept_w, kept_h = max(1, round(width * scale)), max(1, round(height * scale))
    left = int(rng.integers(0, width - kept_w + 1))
    top = int(rng.integers(0, height - kept_h + 1))
    box = (left, top, left + kept_w, top + kept_h)
    return image.crop(box).resize((width, height), Image.Resampling.BILINEAR)


def _jitter(image: Any, step: dict[str, Any], rng: Any) -> Any:
    from PIL import ImageEnhance

    enhancers = (
        ("brightness", ImageEnhance.Brightness),
        ("contrast", ImageEnhance.Contrast),
        ("saturation", ImageEnhance.Color),
    )
    for name, enhancer in enhancers:
        factor = float(rng.uniform(1 - step[name], 1 + step[name]))
        if step[name] and not (name == "saturation" and image.mode == "L"):
            image = enhancer(image).enhance(factor)
    return image


def augment_image(content: bytes, suffix: str, steps: tuple[dict, ...], rng: Any) -> bytes:
    """One augmented copy of an image, encoded as ``suffix`` says (PNG or JPEG)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(content)) as opened:
            image = opened.convert(opened.mode if opened.mode in ("L", "RGB", "RGBA") else "RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise TrainingError(f"cannot read an image to augment: {error}") from None
    for step in steps:
        if float(rng.random()) >= step["p"]:
            continue
        op = step["op"]
        if op == "hflip":
            image = ImageOps.mirror(image)
        elif op == "vflip":
            image = ImageOps.flip(image)
        elif op == "rotate":
            image = _rotate(image, step, rng)
        elif op == "crop":
            image = _crop(image, step, rng)
        else:
            image = _jitter(image, step, rng)
    fmt = SAVED_AS.get(suffix.lower(), "PNG")
    if fmt == "JPEG" and image.mode == "RGBA":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def augment_text(content: bytes, steps: tuple[dict, ...], rng: Any) -> bytes:
    """One augmented copy of a text: words swapped or deleted, whitespace made single."""
    text = content.decode("utf-8", errors="replace")
    words = text.split()
    for step in steps:
        if float(rng.random()) >= step["p"] or not words:
            continue
        if step["op"] == "swap_words":
            for _ in range(step["n"]):
                i, j = (int(k) for k in rng.integers(0, len(words), size=2))
                words[i], words[j] = words[j], words[i]
        else:
            kept = [w for w in words if float(rng.random()) >= step["rate"]]
            words = kept or [words[int(rng.integers(0, len(words)))]]
    ending = "\n" if text.endswith("\n") else ""
    return (" ".join(words) + ending).encode("utf-8")


def copy_path(item: str, seed: int, copy: int) -> str:
    """Where an augmented copy of ``item`` goes: beside it, named by seed and copy."""
    path = PurePosixPath(item)
    suffix = path.suffix
    if data.kind_of(item) == "image" and suffix.lower() not in SAVED_AS:
        suffix = ".png"
    return str(path.with_name(f"{path.stem}.aug-{seed}-{copy}{suffix}"))


def _augment_labels(
    root: Path, labels: Path, transforms: Transforms, seed: int, added: dict[str, str]
) -> list[str]:
    """Write the copies of one labels file's items under ``root``; return their label lines."""
    lines = []
    for record in data.read_records(labels):
        item, label = record.get("item"), record.get("label")
        if "augmented_from" in record or not data.is_safe_item(item):
            continue
        if not isinstance(label, str) or not label or not (root / str(item)).is_file():
            continue
        kind = data.kind_of(str(item))
        steps = transforms.image if kind == "image" else transforms.text if kind == "text" else ()
        if not steps:
            continue
        content = (root / str(item)).read_bytes()
        for copy in range(transforms.copies):
            target = copy_path(str(item), seed, copy)
            if (root / target).exists() or target in added:
                continue  # the version already holds this copy
            rng = item_rng(seed, str(item), copy)
            if kind == "image":
                new = augment_image(content, PurePosixPath(target).suffix, steps, rng)
            else:
                new = augment_text(content, steps, rng)
            (root / target).write_bytes(new)
            added[target] = hashlib.sha256(new).hexdigest()
            copy_record = {"item": target, "label": label, "augmented_from": item, "seed": seed}
            lines.append(json.dumps(copy_record, sort_keys=True, separators=(",", ":")))
    return sorted(lines)


def items_digest(added: dict[str, str]) -> str:
    """One hash of the augmented items' paths and contents."""
    listing = "".join(f"{path}\0{digest}\n" for path, digest in sorted(added.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


def augment(
    access: RegistryAccess,
    version: str,
    transforms: Transforms,
    seed: int,
    *,
    message: str = "",
    project: str | None = None,
    approach: str | None = None,
    allow_unchanged: bool = False,
) -> dict[str, Any]:
    """Write the augmented copies of ``version``'s labelled items as the next version."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TrainingError("--seed must be a non-negative integer")
    with access.locked():
        fetched = data.fetch_locked(access, version)
        files = data.label_files(fetched.path)
        if project is not None:
            files = {k: v for k, v in files.items() if k == slug(project)}
        if not files:
            which = f" of project {project!r}" if project else ""
            raise TrainingError(f"{version} has no labels{which}: nothing to augment")
        staging = access.workdir / "staging" / f"augment-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(fetched.path, staging)
        try:
            added: dict[str, str] = {}
            for path in files.values():
                labels = staging / path.relative_to(fetched.path)
                lines = _augment_labels(staging, labels, transforms, seed, added)
                if lines:
                    text = labels.read_text(encoding="utf-8")
                    if text and not text.endswith("\n"):
                        text += "\n"
                    labels.write_text(text + "".join(f"{line}\n" for line in lines), "utf-8")
            if not added and allow_unchanged:
                return {"version": None, "unchanged": True, "from": version, "items_added": 0}
            if not added:
                raise TrainingError(
                    f"nothing to augment: {version} has no labelled item the transforms apply to"
                    " that is not augmented already"
                )
            digest = items_digest(added)
            details = {
                "augmentation": {
                    "from": version,
                    "transforms": transforms.as_dict(),
                    "seed": seed,
                    "items_added": len(added),
                    "items_digest": digest,
                }
            }
            created = dataset.create_version(
                access.workspace,
                str(staging),
                source_kind="augmentation",
                message=message or f"augmentation of {version} (seed {seed})",
                approach=approach,
                parent=version,
                source_uri=version,
                details=details,
            )
        except RegistryError as error:
            raise TrainingError(str(error)) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return {**created, "items_added": len(added), "items_digest": digest}
