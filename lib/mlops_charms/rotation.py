"""The ``rotate-credentials`` action that tracking, data versioning and labelling share.

What is the same for every service: its parameters (``target``: all, admin or consumers;
``consumer``: one related application), leader only, which consumers a run covers, and its
results, which name each rotated credential's secret and new revision and never hold a
password. Each service's core says how its workload learns a new credential.

The order is the same everywhere: the workload learns the new credential first, then the Juju
secret gets a new revision with it, so a consumer that sees the revision (``secret-changed``)
can use it at once; the old credential stops working when the workload does. If the workload
refuses the change, the secret keeps the old value; if the secret cannot be written, the
workload is given the old credential back. A service changes one credential per call (MLflow)
or all of them in one step (the registry, whose S3 server then restarts once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import ops

TARGETS = ("all", "admin", "consumers")
ADMIN = "admin"


@dataclass(frozen=True)
class RotateCredentialsParams:
    """Parameters of the rotate-credentials action."""

    target: str = "all"
    consumer: str = ""

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}")
        if self.consumer and self.target == "admin":
            raise ValueError("consumer names a consumer: use it with target consumers or all")

    @property
    def admin(self) -> bool:
        """Whether the admin's credentials rotate: not when one consumer is named."""
        return self.target == "admin" or (self.target == "all" and not self.consumer)


class RotationError(Exception):
    """A rotation that cannot be done, or that failed; the message is the action's reason.

    ``rotated``: what was rotated before it failed (rotated it stays).
    """

    def __init__(self, message: str, rotated: Sequence[Rotated] = ()):
        super().__init__(message)
        self.rotated = list(rotated)


@dataclass(frozen=True)
class Rotated:
    """One credential rotated: whose, in which secret, its new revision."""

    name: str  # "admin" or the consumer application's name
    secret_label: str
    secret_id: str
    revision: int

    def result(self) -> dict[str, str]:
        return {
            "secret-label": self.secret_label,
            "secret-id": self.secret_id,
            "revision": str(self.revision),
        }


def leader_or_fail(charm: ops.CharmBase, event: ops.ActionEvent) -> bool:
    """Whether this unit may rotate; on a non-leader, ``event`` fails saying where to run it."""
    if charm.unit.is_leader():
        return True
    event.fail(f"only the leader rotates credentials: run it on {charm.app.name}/leader")
    return False


def consumers(
    relations: Iterable[ops.Relation], params: RotateCredentialsParams
) -> list[ops.Relation]:
    """The consumer relations a run rotates; RotationError when ``consumer`` is none of them."""
    if params.target == "admin":
        return []
    related = [relation for relation in relations if relation.app is not None]
    if not params.consumer:
        return related
    chosen = [relation for relation in related if relation.app.name == params.consumer]  # type: ignore[union-attr]
    if not chosen:
        known = sorted({relation.app.name for relation in related})  # type: ignore[union-attr]
        raise RotationError(
            f"no consumer {params.consumer!r}: known consumers: {', '.join(known) or 'none'}"
        )
    return chosen


def replace_secret_content(
    model: ops.Model, label: str, content: dict[str, str]
) -> tuple[str, int]:
    """Give the application secret ``label`` a new revision with ``content``: (id, revision).

    Juju numbers a secret's revisions one after the other; the new one is committed with the
    hook, so it is the current revision plus one.
    """
    secret = model.get_secret(label=label)
    info = secret.get_info()
    secret.set_content(content)
    return info.id, info.revision + 1


@dataclass(frozen=True)
class Change:
    """One credential to rotate: whose, its secret's label, its content now and to come."""

    name: str  # "admin" or the consumer application's name
    label: str
    current: dict[str, str] = field(repr=False)
    new: dict[str, str] = field(repr=False)


def rotate(
    model: ops.Model,
    changes: Sequence[Change],
    *,
    apply: Callable[[Mapping[str, dict[str, str]]], None],
) -> list[Rotated]:
    """Rotate ``changes`` together: ``apply({label: new})`` to the workload, then the secrets.

    One ``apply`` for all, so a workload that must restart to read credentials restarts once.
    ``apply`` raises RotationError when the workload refuses: no secret is touched then.
    When a secret cannot be written, ``apply`` gives that one and those after it their current
    content back (those before it stay rotated, workload and secret alike) and RotationError
    says which; the ones rotated are its ``rotated``.
    """
    if not changes:
        return []
    apply({change.label: change.new for change in changes})
    rotated: list[Rotated] = []
    for index, change in enumerate(changes):
        try:
            secret_id, revision = replace_secret_content(model, change.label, change.new)
        except ops.ModelError as error:
            apply({later.label: later.current for later in changes[index:]})
            raise RotationError(
                f"{change.name}: the secret {change.label} could not be updated ({error})",
                rotated,
            ) from None
        rotated.append(Rotated(change.name, change.label, secret_id, revision))
    return rotated


def restart_needed(
    before: Mapping[str, str | None],
    after: Mapping[str, str],
    *,
    read_only_to_bootstrap: Iterable[str],
) -> bool:
    """Whether a server must restart to read the files ``after`` (path: content) over ``before``.

    ``before``: what the files held (None: absent). Every change counts but that of a variable
    of ``read_only_to_bootstrap``: one the server reads only to create its admin user (so a
    rotated admin password, set through the server itself, is written without a restart).
    Works for both ``secrets.env`` syntaxes (``export NAME=...``, ``NAME='...'``).
    """
    prefixes = tuple(f"{name}=" for name in read_only_to_bootstrap)

    def read_at_start(text: str | None) -> list[str] | None:
        if text is None:
            return None
        return [
            line
            for line in text.splitlines()
            if not line.removeprefix("export ").startswith(prefixes)
        ]

    return any(
        read_at_start(before.get(path)) != read_at_start(content)
        for path, content in after.items()
    )


def run_action(
    event: ops.ActionEvent,
    rotate_all: Callable[[], list[Rotated]],
    *,
    restarted: Callable[[], Sequence[str]] = tuple,
) -> None:
    """Run ``rotate_all`` and give its results, or fail with its RotationError's reason.

    ``restarted``: after ``rotate_all``, what the rotation restarted (names of services).
    """
    try:
        rotated = rotate_all()
    except RotationError as error:
        if error.rotated:
            event.set_results(results(error.rotated, restarted=restarted()))
        event.fail(str(error))
        return
    event.set_results(results(rotated, restarted=restarted()))


def results(rotated: Sequence[Rotated], *, restarted: Sequence[str] = ()) -> dict:
    """The action's results: each credential's secret and new revision, and what restarted."""
    admin = [item for item in rotated if item.name == ADMIN]
    consumed = {item.name: item.result() for item in rotated if item.name != ADMIN}
    return {
        **({"admin": admin[0].result()} if admin else {}),
        **({"consumers": consumed} if consumed else {}),
        "rotated": str(len(rotated)),
        "restarted": ", ".join(restarted) or "nothing",
    }
