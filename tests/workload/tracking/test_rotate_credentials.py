"""rotate-credentials on tracking-k8s against the real MLflow, run by a real Pebble.

The unit is deployed with the hooks of ``test_hook_sequences`` (its ``Life``), a consumer
relates and logs a run; then the action rotates the admin and the consumer. What must hold:
MLflow refuses the old passwords (401 to the real client) and takes the new ones, the
consumer reading its secret's new revision (what it does on ``secret-changed``) logs and reads
its runs at once, the admin password reaches ``secrets.env``, and nothing restarted: no Pebble
change, in the action or in the hooks after it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest
from mlflow.exceptions import MlflowException
from ops import testing

from mlops_charms.mlflow import ADMIN_USERNAME, MLflowAPI
from mlops_charms.rest import RESTError
from tests.workload.pebble_backed import shared_folder
from tests.workload.tracking import test_hook_sequences
from tests.workload.tracking.test_hook_sequences import (
    Consumer,
    Life,
    first_state,
    print_service_logs,
    relate_consumer,
    tracking_unit,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:JujuVersion.from_environ:DeprecationWarning"),
]

NOT_AUTHENTICATED = "You are not authenticated"
cluster_dns = test_hook_sequences.cluster_dns  # the fixture: the service's name resolves here


@pytest.fixture(scope="module")
def life(cluster_dns: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Life]:
    """A leader on its embedded stores, with a consumer that logged a first run."""
    with shared_folder("tracking-rotate-") as base:
        unit = tracking_unit(base)
        try:
            deployed = Life(unit, first_state(unit), tmp_path_factory.mktemp("rotate"))
            deployed.deploy()
            deployed.trainer = relate_consumer(deployed)
            deployed.log_run(deployed.trainer, "before-rotation")
            yield deployed
        finally:
            print_service_logs(unit)
            unit.stop()


def admin_api(life: Life, password: str) -> MLflowAPI:
    return MLflowAPI(f"http://127.0.0.1:{life.port}", ADMIN_USERNAME, password)


def admin_password(life: Life) -> str:
    results, _ = life.unit.run_action("get-admin-credentials", life.state)
    return str(results["password"])


def trainer_relation(life: Life) -> testing.Relation:
    (relation,) = life.state.relations
    assert isinstance(relation, testing.Relation)
    return relation


def rotate(life: Life, **params) -> dict:
    """The action on the live unit; its results. It must change nothing in Pebble."""
    before = life.container.last_change_id()
    results, life.state = life.unit.run_action("rotate-credentials", life.state, **params)
    assert not isinstance(results, testing.ActionFailed), results.message
    results = json.loads(json.dumps(results))  # the context reuses its results' dict
    changes = life.container.changes_since(before)
    assert not changes, f"the rotation restarted: {[change.kind for change in changes]}"
    return results


def test_rotation_refuses_the_old_passwords_and_the_consumer_follows(life: Life):
    assert life.trainer is not None
    old_trainer = life.trainer
    old_admin = admin_password(life)
    relation = trainer_relation(life)

    results = rotate(life)

    assert set(results["consumers"]) == {"trainer"}
    assert results["admin"]["revision"] == "2"
    assert results["restarted"] == "nothing"
    shown = json.dumps(results)
    new_admin = admin_password(life)
    new_trainer = life.consumer(relation)  # the secret's new revision, as on secret-changed
    for password in (old_admin, new_admin, old_trainer.password, new_trainer.password):
        assert password not in shown
    assert new_admin != old_admin and new_trainer.password != old_trainer.password

    # The admin: the old password is refused, the new one works, secrets.env has it.
    with pytest.raises(RESTError, match="401"):
        admin_api(life, old_admin).get_user(ADMIN_USERNAME)
    admin = admin_api(life, new_admin).get_user(ADMIN_USERNAME)
    assert admin is not None and admin["is_admin"]
    secrets_env = (life.data_dir / "secrets" / "secrets.env").read_text()
    assert f"export MLFLOW_AUTH_ADMIN_PASSWORD={new_admin}\n" in secrets_env

    # The consumer: refused with what it had, served with its secret's new revision.
    with life.client(old_trainer) as client, pytest.raises(MlflowException) as refused:
        client.get_experiment_by_name(old_trainer.experiment)
    assert NOT_AUTHENTICATED in str(refused.value)
    life.trainer = new_trainer
    life.log_run(new_trainer, "after-rotation")
    life.check("rotated", new_trainer)  # every run so far, read with the new password

    # The hooks after it keep MLflow as it is: the files already match.
    life.quiet(life.ctx.on.update_status(), "update-status after the rotation")
    life.quiet(life.ctx.on.config_changed(), "config-changed after the rotation")
    assert admin_api(life, new_admin).is_healthy()


def test_unknown_consumer_fails_and_changes_no_password(life: Life):
    admin = admin_password(life)
    trainer = life.trainer
    assert trainer is not None

    failure, life.state = life.unit.run_action("rotate-credentials", life.state, consumer="nobody")

    assert isinstance(failure, testing.ActionFailed)
    assert failure.message == "no consumer 'nobody': known consumers: trainer"
    assert admin_password(life) == admin
    assert admin_api(life, admin).get_user(ADMIN_USERNAME) is not None
    with life.client(trainer) as client:
        assert client.get_experiment_by_name(trainer.experiment) is not None


def test_consumer_only_rotation_keeps_the_admin(life: Life):
    admin = admin_password(life)
    relation = trainer_relation(life)
    before: Consumer = life.consumer(relation)

    results = rotate(life, target="consumers", consumer="trainer")

    assert "admin" not in results and results["consumers"]["trainer"]["revision"] == "3"
    assert admin_password(life) == admin
    after = life.consumer(relation)
    with life.client(dataclasses.replace(before)) as client, pytest.raises(MlflowException):
        client.get_experiment_by_name(before.experiment)
    life.trainer = after
    life.check("consumer rotated", after)
