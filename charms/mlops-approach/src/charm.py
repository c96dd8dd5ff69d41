#!/usr/bin/env python3
"""The approach switch: the stack's mode and its policy, pushed to every related service."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import ops

from mlops_charms import charm_tracing, databags, grafana_dashboard, loop_observability
from mlops_charms.approach import (
    APPROACH_ENDPOINT,
    MODES,
    ApproachPolicy,
    ApproachProviderData,
    ApproachRequirerData,
)
from policy import ApproachConfig, service_plan

logger = logging.getLogger(__name__)

PEER_ENDPOINT = "approach-peers"
DASHBOARD_ENDPOINT = "grafana-dashboard"


@dataclass(frozen=True)
class SwitchParams:
    """The ``switch`` action's parameters."""

    approach: str

    def __post_init__(self):
        if self.approach not in MODES:
            raise ValueError(f"approach must be one of {', '.join(MODES)}")


@dataclass(frozen=True)
class Published:
    """The policy in force, as the leader recorded it in the peer application databag."""

    mode: str
    revision: int
    policy: ApproachPolicy


@dataclass(frozen=True)
class Acknowledgement:
    """One related service's answer to the policy in force."""

    app: str
    service: str | None
    applied_revision: int | None
    problem: str | None
    waiting: bool = False  # the problem resolves by itself


class ApproachCharm(ops.CharmBase):
    """Publishes the mode and its policy; counts the services that applied it."""

    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.tracing = charm_tracing.trace_charm(self)
        for event in (
            self.on.config_changed,
            self.on.upgrade_charm,
            self.on.leader_elected,
            self.on[PEER_ENDPOINT].relation_created,
            self.on[PEER_ENDPOINT].relation_changed,
            self.on[APPROACH_ENDPOINT].relation_joined,
            self.on[APPROACH_ENDPOINT].relation_changed,
            self.on[DASHBOARD_ENDPOINT].relation_joined,
        ):
            framework.observe(event, self._reconcile)
        framework.observe(self.on.collect_unit_status, self._on_collect_status)
        framework.observe(self.on.switch_action, self._on_switch)
        framework.observe(self.on.show_plan_action, self._on_show_plan)

    # --- goal state -------------------------------------------------------------------------

    def _config_problem(self) -> str | None:
        try:
            self.load_config(ApproachConfig)
        except ValueError as error:
            return str(error).splitlines()[0]
        return None

    def _peers(self) -> ops.Relation | None:
        return self.model.get_relation(PEER_ENDPOINT)

    def _override(self, config: ApproachConfig) -> str | None:
        """The mode ``switch`` set, while ``approach`` is still what it was then."""
        peers = self._peers()
        raw = peers.data[self.app].get("override") if peers else None
        if not raw:
            return None
        override = json.loads(raw)
        return override["mode"] if override.get("config") == config.approach else None

    def _mode(self, config: ApproachConfig) -> str:
        return self._override(config) or config.approach

    def _published(self) -> Published | None:
        peers = self._peers()
        if peers is None:
            return None
        raw = peers.data[self.app].get("published")
        if not raw:
            return None
        state = json.loads(raw)
        return Published(
            state["mode"], state["revision"], ApproachPolicy.model_validate(state["policy"])
        )

    # --- reconcile --------------------------------------------------------------------------

    def _reconcile(self, _event: ops.EventBase) -> None:
        """Leader: bump the revision when the effective policy changed; publish it everywhere."""
        if not self.unit.is_leader() or self._config_problem():
            return
        grafana_dashboard.publish(self, DASHBOARD_ENDPOINT, loop_observability.DASHBOARDS)
        peers = self._peers()
        if peers is None:
            return
        config = self.load_config(ApproachConfig)
        if peers.data[self.app].get("override") and self._override(config) is None:
            # `approach` was configured since the switch: juju config wins from now on.
            peers.data[self.app]["override"] = ""
        mode = self._mode(config)
        policy = config.policy(mode)
        published = self._published()
        if published is None or (published.mode, published.policy) != (mode, policy):
            revision = published.revision + 1 if published else 1
            published = Published(mode, revision, policy)
            peers.data[self.app]["published"] = json.dumps(
                {
                    "mode": mode,
                    "revision": revision,
                    "policy": policy.model_dump(mode="json", exclude_none=True),
                },
                sort_keys=True,
            )
            logger.info("approach %s: policy revision %d", mode, revision)
        data = ApproachProviderData(
            mode=published.mode,  # type: ignore[arg-type]
            revision=published.revision,
            policy=published.policy,
        )
        for relation in self.model.relations[APPROACH_ENDPOINT]:
            databags.save_app_data(relation, self.app, data)

    def _acknowledgements(self) -> list[Acknowledgement]:
        answers = []
        for relation in self.model.relations[APPROACH_ENDPOINT]:
            if relation.app is None:
                continue
            data, problem = databags.load_remote_app_data(relation, ApproachRequirerData)
            if data is None:
                answers.append(Acknowledgement(relation.app.name, None, None, problem))
                continue
            answers.append(
                Acknowledgement(
                    relation.app.name,
                    data.service,
                    data.applied_revision,
                    data.reason,
                    waiting=bool(data.waiting),
                )
            )
        return sorted(answers, key=lambda answer: answer.app)

    # --- status -----------------------------------------------------------------------------

    def _on_collect_status(self, event: ops.CollectStatusEvent) -> None:
        problem = self._config_problem()
        if problem:
            event.add_status(ops.BlockedStatus(problem))
            return
        published = self._published()
        if published is None:
            event.add_status(ops.WaitingStatus("waiting for the leader to publish the policy"))
            return
        head = f"{published.mode} (rev {published.revision})"
        answers = self._acknowledgements()
        if not answers:
            event.add_status(ops.ActiveStatus(f"{head}: no service related"))
            return
        applied = [a for a in answers if a.applied_revision == published.revision]
        head = f"{head}: applied by {len(applied)}/{len(answers)}"
        lagging = [a for a in answers if a.applied_revision != published.revision]
        if not lagging:
            event.add_status(ops.ActiveStatus(head))
            return
        blocked = [a for a in lagging if a.problem and not a.waiting]
        if blocked:
            first = blocked[0]
            event.add_status(ops.BlockedStatus(f"{head}; {first.app}: {first.problem}"))
            return
        waiting = [a for a in lagging if a.problem]
        if waiting:
            first = waiting[0]
            event.add_status(ops.WaitingStatus(f"{head}; {first.app}: {first.problem}"))
            return
        behind = ", ".join(f"{a.app} at rev {a.applied_revision or 0}" for a in lagging)
        event.add_status(ops.WaitingStatus(f"{head}; waiting for {behind}"))

    # --- actions ----------------------------------------------------------------------------

    def _on_switch(self, event: ops.ActionEvent) -> None:
        params = event.load_params(SwitchParams, errors="fail")
        problem = self._config_problem()
        if problem:
            event.fail(f"cannot switch while blocked: {problem}")
            return
        if not self.unit.is_leader():
            event.fail("run switch on the leader unit")
            return
        peers = self._peers()
        if peers is None:
            event.fail("the peer relation is not up yet: try again in a moment")
            return
        config = self.load_config(ApproachConfig)
        if params.approach == config.approach:
            # Back to what the config says: the override is no longer needed.
            peers.data[self.app]["override"] = ""
        else:
            override = {"mode": params.approach, "config": config.approach}
            peers.data[self.app]["override"] = json.dumps(override, sort_keys=True)
        self._reconcile(event)
        results = self._plan()
        if params.approach != config.approach:
            results["note"] = (
                f"config still says approach={config.approach}; a later "
                f"`juju config {self.app.name} approach=…` wins over this switch"
            )
        event.set_results(results)

    def _on_show_plan(self, event: ops.ActionEvent) -> None:
        problem = self._config_problem()
        if problem:
            event.fail(f"no plan while blocked: {problem}")
            return
        if self._published() is None:
            event.fail("no policy published yet: the leader has not run")
            return
        event.set_results(self._plan())

    def _plan(self) -> dict:
        published = self._published()
        assert published is not None  # the callers checked
        services = [
            {
                "app": answer.app,
                "service": answer.service or "unknown",
                "applied-revision": answer.applied_revision or 0,
                "plan": service_plan(answer.service, published.mode, published.policy),
                **({"problem": answer.problem} if answer.problem else {}),
            }
            for answer in self._acknowledgements()
        ]
        return {
            "mode": published.mode,
            "revision": published.revision,
            "policy": published.policy.model_dump_json(exclude_none=True),
            "services": json.dumps(services),
        }


if __name__ == "__main__":  # pragma: nocover
    ops.main(ApproachCharm)
