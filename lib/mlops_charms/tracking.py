"""The ``mlops_tracking`` interface: experiment tracking (MLflow) offered to the stack.

Provider (tracking) application databag:
    tracking_uri           the in-cluster URL of the tracking server
    external_tracking_uri  the URL through ingress, when there is one
    credentials_secret_id  a Juju secret granted to the requirer: ``username``, ``password``
    default_experiment     the experiment the requirer is allowed to log to
    ca                     the CA that signed the server's certificate, PEM, when it serves
                           HTTPS (``certificates`` related): verify both URLs with it

Requirer application databag:
    experiment             the experiment it wants to log to (optional; the provider
                           creates it and grants the requirer's user EDIT on it)

Every field is optional on the wire and JSON-encoded (``Relation.save``/``load``). Reading
never raises: a bad databag becomes a one-line problem for the caller's status.
"""

from __future__ import annotations

import pydantic

from mlops_charms.ca import CACertificates

EXPERIMENT_NAME_MAX = 256


class TrackingProviderData(pydantic.BaseModel):
    """What the tracking charm publishes."""

    model_config = pydantic.ConfigDict(extra="ignore")

    tracking_uri: str | None = None
    external_tracking_uri: str | None = None
    credentials_secret_id: str | None = None
    default_experiment: str | None = None
    ca: CACertificates | None = None


class TrackingRequirerData(pydantic.BaseModel):
    """What a tracking consumer asks for."""

    model_config = pydantic.ConfigDict(extra="ignore")

    experiment: str | None = None

    @pydantic.field_validator("experiment")
    @classmethod
    def _experiment_is_a_usable_name(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.strip() or value != value.strip():
            raise ValueError("must be non-empty without surrounding spaces")
        if len(value) > EXPERIMENT_NAME_MAX:
            raise ValueError(f"must be at most {EXPERIMENT_NAME_MAX} characters")
        return value
