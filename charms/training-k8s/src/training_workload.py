"""The training workload in Kubernetes: where the rock has the trainer, and the job watcher.

Nothing here knows about Juju. The substrate-neutral core (action parameters, the command's
arguments, the environment split into settings and credentials) is
``mlops_charms.training``, shared with the machine charm; this module places it in the rock
(``ROCK``, the Job's scratch ``WORKDIR``) and builds the Pebble layer of the job watcher
(``job_watcher.py``, which the training rock carries).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_charms import training, workload
from mlops_charms.client_ca import ClientCA
from mlops_charms.jobs import NOTICE_KEY

if TYPE_CHECKING:
    from ops.pebble import LayerDict

WATCHER_SERVICE = "job-watcher"
WORKDIR = "/var/lib/mlops-training"  # kubernetes_jobs.WORKDIR: the Job's scratch volume
CA_DIR = "/etc/mlops-training/ca"  # TrainingRun.ca_dir: where a Job mounts the CA files
# A TrainJob mounts nothing: mlops-workload writes the CA files there (ClientCA.inline).
INLINE_CA_DIR = f"{WORKDIR}/ca"


@dataclass(frozen=True)
class Binaries:
    """Where the rock (rocks/training) has the programs; the tests point these elsewhere."""

    python: str = "/opt/mlops/bin/python3"
    watcher: str = "/opt/training/job_watcher.py"
    mlops_workload: str = "/opt/mlops/bin/mlops-workload"
    # The watcher's API server and service account; None: the pod's own (in-cluster).
    api_server: str | None = None
    service_account: str | None = None


ROCK = Binaries()


def command(name: str, arguments: list[str]) -> list[str]:
    """The trainer's command line in the rock: ``mlops-workload training <name> ...``."""
    return training.command(ROCK.mlops_workload, name, arguments)


def ca_dir(backend: str) -> str:
    """Where a run of ``backend`` (Job or TrainJob) finds the providers' CA files."""
    return INLINE_CA_DIR if backend == "TrainJob" else CA_DIR


def environment(
    access: training.RunAccess, params: training.RunParams, *, folder: str = CA_DIR
) -> tuple[dict[str, str], dict[str, str]]:
    """The trainer's environment: ``(settings, credentials)``, CA paths under ``folder``."""
    settings, credentials = training.run_environment(access, params, workdir=WORKDIR)
    ca = run_ca(access.registry, access.tracking, folder=folder)
    return {**settings, **ca.environment}, credentials


def run_ca(
    registry: training.RegistryAccess,
    tracking: training.TrackingAccess | None,
    *,
    folder: str = CA_DIR,
) -> ClientCA:
    """The providers' CAs as a run sees them: files in ``folder``, and their paths."""
    return training.run_ca(registry, tracking, folder=folder)


# --- the job watcher ----------------------------------------------------------------------------


def watcher_layer(
    *, jobs_dir: str, namespace: str, selector: str, trainjobs: bool, enabled: bool
) -> LayerDict:
    """The Pebble layer of the job watcher (on the leader only: ``enabled``)."""
    words = [
        ROCK.python,
        ROCK.watcher,
        "--namespace",
        namespace,
        "--selector",
        selector,
        "--jobs-dir",
        jobs_dir,
        "--notify-command",
        json.dumps(workload.JUJU_PEBBLE.notify_command(NOTICE_KEY)),
    ]
    words += ["--trainjobs"] if trainjobs else []
    words += ["--api-server", ROCK.api_server] if ROCK.api_server else []
    words += ["--service-account", ROCK.service_account] if ROCK.service_account else []
    service: dict[str, Any] = {
        "override": "replace",
        "summary": "records the end of the application's training Jobs",
        "command": shlex.join(words),
        "startup": "enabled" if enabled else "disabled",
        # Restarted by Pebble, with its backoff, should it ever exit.
        "on-failure": "restart",
    }
    return {"summary": "training jobs", "services": {WATCHER_SERVICE: service}}  # type: ignore[typeddict-item]
