"""The ``mlops_dataset`` interface: a DVC data registry offered to the stack.

Provider (data-versioning) application databag:
    registry_url           the registry's git URL (smart HTTP, basic auth)
    remote_url             the DVC remote, ``s3://dvc``: the registry's own S3 endpoint,
                           whatever holds the objects (also in the repository's DVC config)
    remote_endpoint        that S3 endpoint, the same for readers and writers
    access                 ``read`` or ``write``: what the credentials allow
    credentials_secret_id  a Juju secret granted to the requirer: ``username``, ``password``
                           (git) and ``access-key``, ``secret-key`` (its own S3 key pair)
    latest_version         the newest valid version, ``vN``
    pinned_version         the version consumers are told to use, ``vN`` (absent: latest)
    ca                     the CA that signed the registry's certificate, PEM, when it
                           serves HTTPS (``certificates`` related): verify both URLs with it

Requirer application databag:
    access                 ``read`` (default) or ``write`` (labelling exports versions)

Every field is optional on the wire and JSON-encoded (``Relation.save``/``load``). Reading
never raises: a bad databag becomes a one-line problem for the caller's status.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import pydantic

from mlops_charms.ca import CACertificates

VERSION_PATTERN = re.compile(r"^v[1-9][0-9]*$")
SECRET_FIELDS = ("username", "password", "access-key", "secret-key")


def _version(value: str) -> str:
    if not VERSION_PATTERN.match(value):
        raise ValueError("must be a version name such as v3")
    return value


# A dataset version's name (``v3``) in the interfaces' models.
VersionName = Annotated[str, pydantic.AfterValidator(_version)]


class DatasetProviderData(pydantic.BaseModel):
    """What the data-versioning charm publishes to each consumer."""

    model_config = pydantic.ConfigDict(extra="ignore")

    registry_url: str | None = None
    remote_url: str | None = None
    remote_endpoint: str | None = None
    access: Literal["read", "write"] | None = None
    credentials_secret_id: str | None = None
    latest_version: VersionName | None = None
    pinned_version: VersionName | None = None
    ca: CACertificates | None = None

    @pydantic.field_validator("remote_url")
    @classmethod
    def _is_s3(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("s3://"):
            raise ValueError("must be an s3:// URL")
        return value

    @property
    def version_to_use(self) -> str | None:
        """The version a consumer should use: the pinned one, else the latest."""
        return self.pinned_version or self.latest_version


class DatasetRequirerData(pydantic.BaseModel):
    """What a dataset consumer asks for."""

    model_config = pydantic.ConfigDict(extra="ignore")

    access: Literal["read", "write"] | None = None
