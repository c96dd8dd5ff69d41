"""The values every sidecar charm derives from Juju the same way."""

from __future__ import annotations

from dataclasses import dataclass

import ops
from ops import testing

from mlops_charms import sidecar

META = {
    "name": "demo-k8s",
    "containers": {
        "app": {"resource": "app-image", "mounts": [{"storage": "data", "location": "/srv/x"}]}
    },
    "resources": {"app-image": {"type": "oci-image"}},
    "storage": {"data": {"type": "filesystem"}},
}
CONFIG = {"options": {"workers": {"type": "int", "default": 1}}}


@dataclass(frozen=True)
class DemoConfig:
    workers: int = 1

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError("workers: must be at least 1")


class DemoCharm(ops.CharmBase):
    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        framework.observe(self.on.collect_unit_status, self._on_collect_status)

    def _on_collect_status(self, event: ops.CollectStatusEvent):
        problem = sidecar.config_problem(self, DemoConfig)
        if problem:
            event.add_status(ops.BlockedStatus(problem))
            return
        where = sidecar.mount_location(self, "app", "data")
        event.add_status(ops.ActiveStatus(f"{sidecar.service_host(self)} {where}"))


def status(config: dict):
    context = testing.Context(DemoCharm, meta=META, config=CONFIG)
    state = testing.State(config=config, model=testing.Model(name="lab"))
    return context.run(context.on.update_status(), state).unit_status


def test_valid_config_gives_the_service_host_and_the_mount_location():
    assert status({}) == testing.ActiveStatus("demo-k8s.lab.svc.cluster.local /srv/x")


def test_invalid_config_is_a_one_line_problem_naming_the_option():
    assert status({"workers": 0}) == testing.BlockedStatus(
        "invalid config: workers: must be at least 1"
    )


# --- scale-out -------------------------------------------------------------------------------


def scale_out_problem(planned_units: int, **relations: bool | None) -> str | None:
    context = testing.Context(DemoCharm, meta=META, config=CONFIG)
    state = testing.State(planned_units=planned_units)
    with context(context.on.update_status(), state) as manager:
        return sidecar.scale_out_problem(manager.charm, **relations)  # type: ignore[arg-type]


def test_one_unit_needs_neither_database_nor_object_storage():
    assert scale_out_problem(1, has_database=False, has_object_storage=False) is None


def test_scale_out_without_database_is_a_problem_naming_the_relation():
    assert scale_out_problem(2, has_database=False, has_object_storage=True) == (
        "scale-out needs the database relation: SQLite is per unit"
    )


def test_scale_out_with_a_database_but_files_on_the_units_is_a_problem():
    assert scale_out_problem(3, has_database=True, has_object_storage=False) == (
        "scale-out needs s3-credentials: artifacts are per unit"
    )


def test_scale_out_with_database_and_object_storage_is_fine():
    assert scale_out_problem(3, has_database=True, has_object_storage=True) is None


def test_scale_out_of_a_workload_without_files_needs_only_the_database():
    assert scale_out_problem(2, has_database=True) is None
    assert scale_out_problem(2, has_database=False) == (
        "scale-out needs the database relation: SQLite is per unit"
    )
