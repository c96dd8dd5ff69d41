"""A Juju model for tests: several real charms, their workloads real, Juju's transport simulated.

Each application is one leader unit of a real charm run by ``ops.testing``; a charm with
containers has each on a real Pebble daemon (``PebbleBackedCharm``), so its workload runs for
real and keeps what every hook did. What Juju itself would do between them is all this module
does, and nothing else:

- the first hooks of a unit, in Juju's order (install, storage-attached, leader-elected,
  config-changed, start, pebble-ready);
- an integration: relation-created on both sides, then relation-joined and relation-changed;
- after every hook, what the charm wrote in its application and unit databags is what the
  other side reads, and a change fires relation-changed there;
- a secret granted on a relation becomes readable by the other application; a new revision of
  its content fires secret-changed there;
- a custom Pebble notice recorded in a container fires pebble-custom-notice on that unit;
- update-status when a test asks for it; config changes and actions as ``juju`` would run them.

Events are queued and delivered one at a time, in the order Juju would (``settle`` runs them
until nothing is left). Every hook run is recorded with its duration (``hooks``).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import ops
import yaml
from ops import pebble, testing

from tests.workload.pebble_backed import PebbleBackedCharm, wait_until

MODEL_UUID = "a1b2c3d4-0000-4000-8000-00000000cafe"
REMOTE_UNIT = 0  # every application here has one unit, its leader


@dataclasses.dataclass(frozen=True)
class HookRun:
    app: str
    event: str
    seconds: float


@dataclasses.dataclass(frozen=True)
class Integration:
    """A relation between two applications: the same id on both sides."""

    id: int
    apps: tuple[str, str]
    endpoints: tuple[str, str]

    def other(self, app: str) -> str:
        return self.apps[1] if self.apps[0] == app else self.apps[0]

    def endpoint(self, app: str) -> str:
        return self.endpoints[self.apps.index(app)]


class PlainCharm:
    """A charm without containers (an integrator), with ``PebbleBackedCharm``'s interface."""

    def __init__(self, charm_class: type[ops.CharmBase], charm_root: Path):
        raw = yaml.safe_load((charm_root / "charmcraft.yaml").read_text())
        meta = {k: v for k, v in raw.items() if k not in ("config", "actions")}
        self.context = testing.Context(
            charm_class, meta=meta, config=raw.get("config"), actions=raw.get("actions")
        )
        self.containers: dict[str, Any] = {}
        self.storage: dict[str, Path] = {}

    def storages(self) -> set[testing.Storage]:
        return set()

    def run(self, event: Any, state: testing.State) -> testing.State:
        return self.context.run(event, state)

    def run_action(
        self, name: str, state: testing.State, **params: Any
    ) -> tuple[Any, testing.State]:
        try:
            out = self.context.run(self.context.on.action(name, params=params), state)
        except testing.ActionFailed as failure:
            return failure, cast("testing.State", failure.state)
        return self.context.action_results, out

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclasses.dataclass
class Application:
    name: str
    unit: PebbleBackedCharm | PlainCharm
    meta: dict[str, Any]
    state: testing.State
    seen_notices: set[tuple[str, str]] = dataclasses.field(default_factory=set)

    @property
    def context(self) -> testing.Context:
        return self.unit.context

    def interface(self, endpoint: str) -> str:
        for role in ("provides", "requires", "peers"):
            if endpoint in (self.meta.get(role) or {}):
                return self.meta[role][endpoint]["interface"]
        raise AssertionError(f"{self.name} has no endpoint {endpoint}")

    def relation(self, relation_id: int) -> testing.Relation:
        return cast("testing.Relation", self.state.get_relation(relation_id))


class JujuModel:
    """The applications of one model and the relations between them."""

    def __init__(self, name: str = "mlops"):
        self.name = name
        self.apps: dict[str, Application] = {}
        self.integrations: list[Integration] = []
        self.hooks: list[HookRun] = []
        self._queue: collections.deque[tuple[str, str, Any]] = collections.deque()
        self._next_relation_id = 100

    # --- deploying ------------------------------------------------------------------------------

    def add(
        self,
        name: str,
        unit: PebbleBackedCharm | PlainCharm,
        charm_root: Path,
        *,
        config: Mapping[str, Any] | None = None,
        resources: Mapping[str, Path] | None = None,
    ) -> Application:
        """An application of one leader unit; its containers' Pebble daemons are started."""
        meta = yaml.safe_load((charm_root / "charmcraft.yaml").read_text())
        unit.context.app_name = name
        unit.start()
        state = testing.State(
            leader=True,
            model=testing.Model(name=self.name, uuid=MODEL_UUID),
            config=dict(config or {}),
            containers={testing.Container(c, can_connect=True) for c in unit.containers},
            storages=unit.storages(),
            relations={testing.PeerRelation(endpoint) for endpoint in meta.get("peers") or {}},
            resources={testing.Resource(name=k, path=v) for k, v in (resources or {}).items()},
        )
        app = Application(name, unit, meta, state)
        self.apps[name] = app
        return app

    def deploy(self, name: str) -> None:
        """The unit's first hooks, in Juju's order."""
        app = self.apps[name]
        ctx = app.context
        self._run(name, "install", lambda: ctx.on.install())
        for storage in app.state.storages:
            self._run(name, "storage-attached", lambda s=storage: ctx.on.storage_attached(s))
        self._run(name, "leader-elected", lambda: ctx.on.leader_elected())
        self._run(name, "config-changed", lambda: ctx.on.config_changed())
        self._run(name, "start", lambda: ctx.on.start())
        for container in app.unit.containers:
            self._run(
                name,
                f"{container}-pebble-ready",
                lambda c=container: ctx.on.pebble_ready(app.state.get_container(c)),
            )
        self.settle()

    def stop(self) -> None:
        for app in self.apps.values():
            app.unit.stop()

    # --- what Juju does between applications ---------------------------------------------------

    def integrate(self, first: str, second: str) -> Integration:
        """``juju integrate first second`` (``app:endpoint`` each), its hooks settled."""
        (app_a, endpoint_a), (app_b, endpoint_b) = first.split(":"), second.split(":")
        integration = Integration(self._next_relation_id, (app_a, app_b), (endpoint_a, endpoint_b))
        self._next_relation_id += 1
        interface = self.apps[app_a].interface(endpoint_a)
        assert interface == self.apps[app_b].interface(endpoint_b), f"{first} !~ {second}"
        for app, endpoint in ((app_a, endpoint_a), (app_b, endpoint_b)):
            relation = testing.Relation(
                endpoint,
                interface=interface,
                id=integration.id,
                remote_app_name=integration.other(app),
            )
            state = self.apps[app].state
            self.apps[app].state = dataclasses.replace(
                state, relations={*state.relations, relation}
            )
        self.integrations.append(integration)
        for app in integration.apps:
            self._run(
                app,
                f"{integration.endpoint(app)}-relation-created",
                self._event(app, "created", integration.id),
            )
        for app in integration.apps:
            # This relation-changed reads the databags as they are now: a change queued
            # before it is delivered with it (Juju coalesces them the same way).
            self._dequeue(app, "relation-changed", integration.id)
            for kind in ("joined", "changed"):
                self._run(
                    app,
                    f"{integration.endpoint(app)}-relation-{kind}",
                    self._event(app, kind, integration.id),
                )
        self.settle()
        return integration

    def _event(self, app: str, kind: str, relation_id: int) -> Callable[[], Any]:
        def make() -> Any:
            application = self.apps[app]
            relation = application.relation(relation_id)
            on = application.context.on
            if kind == "created":
                return on.relation_created(relation)
            factory = on.relation_joined if kind == "joined" else on.relation_changed
            return factory(relation, remote_unit=REMOTE_UNIT)

        return make

    def _propagate(self, name: str) -> None:
        """What ``name``'s last hook wrote, as the other applications now see it."""
        app = self.apps[name]
        for integration in self.integrations:
            if name not in integration.apps:
                continue
            other = self.apps[integration.other(name)]
            mine, theirs = app.relation(integration.id), other.relation(integration.id)
            units = {REMOTE_UNIT: dict(mine.local_unit_data)}
            if theirs.remote_app_data != mine.local_app_data or theirs.remote_units_data != units:
                updated = dataclasses.replace(
                    theirs, remote_app_data=dict(mine.local_app_data), remote_units_data=units
                )
                other.state = dataclasses.replace(
                    other.state, relations=(other.state.relations - {theirs}) | {updated}
                )
                self._enqueue(other.name, "relation-changed", integration.id)
        for secret in app.state.secrets:
            if secret.owner is None:
                continue
            content = dict(secret.latest_content or secret.tracked_content)
            for grantees in secret.remote_grants.values():
                for grantee in grantees:
                    self._share(self.apps[grantee], secret.id, content)

    def _share(self, app: Application, secret_id: str, content: dict[str, str]) -> None:
        held = [s for s in app.state.secrets if s.id == secret_id]
        if not held:
            shared = testing.Secret(tracked_content=content, latest_content=content, id=secret_id)
            app.state = dataclasses.replace(app.state, secrets={*app.state.secrets, shared})
        elif dict(held[0].latest_content or {}) != content:
            updated = dataclasses.replace(held[0], latest_content=content)
            app.state = dataclasses.replace(
                app.state, secrets=(app.state.secrets - {held[0]}) | {updated}
            )
            self._enqueue(app.name, "secret-changed", secret_id)

    def _enqueue(self, app: str, kind: str, target: Any) -> None:
        if (app, kind, target) not in self._queue:
            self._queue.append((app, kind, target))

    def _dequeue(self, app: str, kind: str, target: Any) -> None:
        if (app, kind, target) in self._queue:
            self._queue.remove((app, kind, target))

    def settle(self) -> None:
        """Deliver queued events until none is left (each hook may queue more)."""
        while self._queue:
            name, kind, target = self._queue.popleft()
            app = self.apps[name]
            if kind == "relation-changed":
                endpoint = app.relation(target).endpoint
                self._run(
                    name, f"{endpoint}-relation-changed", self._event(name, "changed", target)
                )
            elif kind == "secret-changed":
                (secret,) = [s for s in app.state.secrets if s.id == target]
                self._run(
                    name, "secret-changed", lambda s=secret, a=app: a.context.on.secret_changed(s)
                )

    def _run(self, name: str, label: str, event: Callable[[], Any]) -> None:
        app = self.apps[name]
        started = time.monotonic()
        app.state = app.unit.run(event(), app.state)
        self.hooks.append(HookRun(name, label, time.monotonic() - started))
        self._propagate(name)

    # --- what a person or the clock does ------------------------------------------------------

    def config(self, name: str, **values: Any) -> None:
        """``juju config name key=value…``, its hooks settled."""
        app = self.apps[name]
        app.state = dataclasses.replace(app.state, config={**app.state.config, **values})
        self._run(name, "config-changed", lambda: app.context.on.config_changed())
        self.settle()

    def update_status(self, *names: str) -> None:
        for name in names or tuple(self.apps):
            self._run(
                name, "update-status", lambda n=name: self.apps[n].context.on.update_status()
            )
        self.settle()

    def action(self, name: str, action: str, **params: Any) -> dict[str, Any]:
        """``juju run name/0 action key=value…``: its results; a failure fails the test."""
        results = self.try_action(name, action, **params)
        assert not isinstance(results, testing.ActionFailed), f"{action}: {results.message}"
        return results

    def try_action(self, name: str, action: str, **params: Any) -> Any:
        """The action's results, or its ``ActionFailed``."""
        app = self.apps[name]
        started = time.monotonic()
        results, app.state = app.unit.run_action(action, app.state, **params)
        self.hooks.append(HookRun(name, f"{action}-action", time.monotonic() - started))
        self._propagate(name)
        self.settle()
        return results

    # --- Pebble notices ---------------------------------------------------------------------

    def _unseen(self, app: Application) -> dict[tuple[str, str], set[tuple[str, str]]]:
        """Per (container, key), the custom notices' occurrences not delivered yet."""
        unit = app.unit
        if not isinstance(unit, PebbleBackedCharm):
            return {}
        unseen: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for name, container in unit.containers.items():
            if container.daemon is None:
                continue
            for notice in container.client.get_notices(
                types=[pebble.NoticeType.CUSTOM], users=pebble.NoticesUsers.ALL
            ):
                occurrence = (notice.id, notice.last_repeated.isoformat())
                if occurrence not in app.seen_notices:
                    unseen.setdefault((name, notice.key), set()).add(occurrence)
        return unseen

    def deliver_notices(self) -> int:
        """pebble-custom-notice wherever a notice recurred since it was last delivered.

        One event per container and key however many occurrences: Juju too may coalesce
        them, and a charm acts on everything it finds then. Returns the events delivered.
        """
        delivered = 0
        for name, app in self.apps.items():
            for (container, key), occurrences in self._unseen(app).items():
                app.seen_notices |= occurrences

                def make(c: str = container, k: str = key, a: Application = app) -> Any:
                    unit = cast("PebbleBackedCharm", a.unit)
                    event, a.state = unit.notice_event(a.state, c, k)
                    return event

                self._run(name, f"{container}-pebble-custom-notice {key}", make)
                delivered += 1
        self.settle()
        return delivered

    def run_until(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Deliver notices as the workloads record them until ``predicate`` holds."""

        def delivered_and_done() -> Any:
            self.deliver_notices()
            return predicate()

        return wait_until(delivered_and_done, timeout, what)

    # --- reading ------------------------------------------------------------------------------

    def status(self, name: str) -> ops.StatusBase:
        return cast("ops.StatusBase", self.apps[name].state.unit_status)

    def app_data(self, name: str, endpoint: str) -> dict[str, str]:
        """What ``name`` wrote in its application databag on its relation ``endpoint``."""
        (relation,) = [r for r in self.apps[name].state.relations if r.endpoint == endpoint]
        return dict(relation.local_app_data)

    def hook_seconds(self) -> Iterator[tuple[str, float]]:
        for run in self.hooks:
            yield f"{run.app} {run.event}", run.seconds
