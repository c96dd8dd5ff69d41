"""Object storage as the registry sees it: the DVC remote's objects, S3 sources.

Credentials come from the environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
or ``MLOPS_SOURCE_*`` for a source bucket), never from the command line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

from mlops_workload.workspace import RegistryError


def _filesystem(endpoint_url: str | None, key: str | None = None, secret: str | None = None):
    import s3fs  # heavy: only when storage is used

    client_kwargs: dict[str, Any] = {}
    if endpoint_url:
        client_kwargs["endpoint_url"] = endpoint_url
    return s3fs.S3FileSystem(
        key=key,
        secret=secret,
        client_kwargs=client_kwargs,
        config_kwargs={"connect_timeout": 5, "retries": {"max_attempts": 2}},
        skip_instance_cache=True,
    )


def _bucket_path(url: str) -> str:
    if not url.startswith("s3://"):
        raise RegistryError(f"not an S3 URL: {url}")
    path = url.removeprefix("s3://").strip("/")
    if not path:
        raise RegistryError(f"S3 URL names no bucket: {url}")
    return path


def remote_objects(url: str, endpoint_url: str | None) -> dict[str, int]:
    """Return {DVC object hash: size} for every object in a DVC 3 remote."""
    root = f"{_bucket_path(url)}/files/md5"
    fs = _filesystem(endpoint_url)
    try:
        found = cast("dict[str, dict[str, Any]]", fs.find(root, detail=True))
    except Exception as exc:  # botocore errors are not OSErrors
        raise RegistryError(f"cannot list the DVC remote {url}: {exc}") from exc
    objects: dict[str, int] = {}
    for path, info in found.items():
        relative = path[len(root) + 1 :]
        objects[relative.replace("/", "")] = int(info.get("size") or 0)
    return objects


def upload_objects(
    url: str,
    endpoint_url: str | None,
    objects: list[tuple[Path, str]],
    last: list[tuple[Path, str]],
    *,
    require: str,
) -> bool:
    """Upload cached DVC objects ``(local path, hash)`` to a DVC 3 remote, ``last`` after.

    Returns False, uploading nothing, when the object ``require`` is not in the remote
    (the caller then falls back to a full ``dvc push``).
    """
    root = f"{_bucket_path(url)}/files/md5"

    def key(digest: str) -> str:
        return f"{root}/{digest[:2]}/{digest[2:]}"

    fs = _filesystem(endpoint_url)
    try:
        if not fs.exists(key(require)):
            return False
        for batch in (objects, last):
            if batch:
                fs.put([str(path) for path, _ in batch], [key(digest) for _, digest in batch])
    except Exception as exc:  # botocore errors are not OSErrors
        raise RegistryError(f"cannot upload the data to the DVC remote: {exc}") from exc
    return True


def download_prefix(url: str, endpoint_url: str | None, destination: Path) -> None:
    """Copy every object under an S3 prefix into a local directory."""
    prefix = _bucket_path(url)
    fs = _filesystem(
        endpoint_url,
        key=os.environ.get("MLOPS_SOURCE_ACCESS_KEY_ID"),
        secret=os.environ.get("MLOPS_SOURCE_SECRET_ACCESS_KEY"),
    )
    try:
        listing = cast("dict[str, dict[str, Any]]", fs.find(prefix, detail=True))
        keys = [path for path, info in listing.items() if info.get("type") == "file"]
        if not keys:
            raise RegistryError(f"no objects under {url}")
        for key in keys:
            relative = key[len(prefix) :].lstrip("/")
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(key, str(target))
    except RegistryError:
        raise
    except Exception as exc:  # botocore errors are not OSErrors
        raise RegistryError(f"cannot read the source {url}: {exc}") from exc
