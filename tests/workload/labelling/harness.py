"""A real Label Studio for the workload tests: Pebble runs the labelling charm's own layer.

An ``ops.testing`` run of the charm (leader, storage mounted on a temporary folder) produces
the layer and pushes the secret file; a real Pebble runs that layer. Only the programs' paths
differ from the rock's: the layer's rock paths are replaced by this machine's.

Label Studio comes from its own virtual environment (``LABEL_STUDIO_VENV``, default
/opt/venv-labelling: label-studio 1.23.2 and uWSGI, whose dependencies clash with DVC's);
``mlops-workload`` comes from this interpreter's environment, as in the rock where both are
installed side by side. Labelling commands run through ``pebble exec`` as the charm runs them.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ops.pebble import LayerDict

from tests.charm_testing import load_charm_module
from tests.tls_provider import TestCA, issued_in
from tests.workload.processes import (
    ExecResult,
    PebbleDaemon,
    free_port,
    missing,
    run_exec,
    run_pebble,
)

CHARM_SRC = Path(__file__).resolve().parents[3] / "charms" / "labelling-k8s" / "src"
if str(CHARM_SRC) not in sys.path:
    sys.path.insert(0, str(CHARM_SRC))

import label_studio_layer  # noqa: E402
from mlops_charms import label_studio  # noqa: E402
from mlops_charms.tls import ServerTLS  # noqa: E402

VENV_BIN = Path(sys.executable).parent


def binaries() -> label_studio.Binaries:
    """Label Studio's programs in its venv; skips when it is not installed."""
    venv = Path(os.environ.get("LABEL_STUDIO_VENV", "/opt/venv-labelling"))
    apps = sorted(venv.glob("lib/python3*/site-packages/label_studio"))
    wanted = {
        "label-studio": venv / "bin" / "label-studio",
        "uwsgi": venv / "bin" / "uwsgi",
        "mlops-workload": VENV_BIN / "mlops-workload",
    }
    for name, path in wanted.items():
        if not path.exists():
            missing(f"{name} is not installed at {path} (see the labelling test requirements)")
    if not apps:
        missing(f"label_studio is not installed in {venv}")
    return label_studio.Binaries(
        label_studio=str(wanted["label-studio"]),
        uwsgi=str(wanted["uwsgi"]),
        app_dir=str(apps[0]),
        mlops_workload=str(wanted["mlops-workload"]),
    )


def rest_call(url: str, token: str, method: str, path: str, body: Any = None) -> Any:
    """One call of Label Studio's REST API with an API token; its JSON answer (or None)."""
    request = urllib.request.Request(
        f"{url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", "Authorization": f"Token {token}"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


@dataclass
class RunningLabelStudio:
    """Label Studio as started by Pebble, and how to talk to it."""

    settings: label_studio.ServerSettings
    daemon: PebbleDaemon
    first_start_seconds: float

    @property
    def url(self) -> str:
        return self.settings.local_url

    def api(self, method: str, path: str, body=None, token: str | None = None) -> Any:
        return rest_call(self.url, token or self.settings.admin_token, method, path, body)

    def get_bytes(self, path: str) -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"{self.url}{path}", headers={"Authorization": f"Token {self.settings.admin_token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, b""

    def labelling(
        self, registry: label_studio.RegistryAccess | None, command: str, *args: str
    ) -> ExecResult:
        """Run ``mlops-workload labelling <command>`` through Pebble exec, as the charm does."""
        return run_exec(
            self.daemon.client,
            label_studio.labelling_command(self.settings, command, *args),
            environment=label_studio.workload_environment(self.settings, registry),
            working_dir=self.settings.data_dir,
            timeout=600,
        )

    def service_rss_kib(self) -> int:
        """Resident memory of the server's processes (uWSGI master and workers), KiB."""
        marker = f"{self.settings.bind_address}:{self.settings.port}".encode()
        total = 0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if marker not in (proc / "cmdline").read_bytes():
                    continue
                status = (proc / "status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total


def start(daemon: PebbleDaemon, layer: LayerDict) -> float:
    """Hand ``layer`` to the real Pebble; return seconds until the ready check is up."""
    started = time.monotonic()
    daemon.client.add_layer("label-studio", layer, combine=True)
    daemon.client.replan_services()
    daemon.wait_for_check(label_studio_layer.READY_CHECK, timeout=240)
    return time.monotonic() - started


CHARM_ROOT = CHARM_SRC.parent


def charm_layer(
    data_dir: Path,
    port: int,
    relations=(),
    secrets=(),
    metrics_port: int | None = None,
    ca: TestCA | None = None,
) -> tuple[LayerDict, dict[str, str], ServerTLS | None]:
    """The layer an ops.testing run of the charm plans, the admin secret it created, its TLS.

    ``ca``: the charm is related to it over ``certificates``, sends its request, and plans
    again once the CA signed it (the files it pushed are on ``data_dir``).
    """
    import yaml
    from ops import testing

    charm = load_charm_module(CHARM_SRC, "labelling_k8s_charm")
    raw = yaml.safe_load((CHARM_ROOT / "charmcraft.yaml").read_text())
    raw["containers"]["label-studio"]["mounts"][0]["location"] = str(data_dir)
    meta = {
        key: raw[key]
        for key in ("name", "containers", "resources", "storage", "provides", "requires", "peers")
    }
    context = testing.Context(
        charm.LabellingCharm, meta=meta, config=raw["config"], actions=raw["actions"]
    )
    # The leader's migration of a PostgreSQL database runs in the hook, an exec this Pebble
    # only answers: the server's own start (label-studio init, the leader's) migrates it for
    # real. test_hook_sequences runs the hook's migration on a real Pebble.
    migrate = str(PurePosixPath(label_studio.ROCK.label_studio).with_name("python"))
    container = testing.Container(
        "label-studio",
        can_connect=True,
        mounts={"data": testing.Mount(location=str(data_dir), source=data_dir)},
        execs={testing.Exec([migrate], return_code=0)},
    )
    state = testing.State(
        leader=True,
        config={"port": port, "metrics-port": metrics_port or free_port()},
        containers={container},
        storages={testing.Storage("labelling-data")},
        relations=set(relations),
        secrets=set(secrets),
    )
    out = context.run(context.on.config_changed(), state)
    tls = None
    if ca is not None:
        relation = ca.relation()
        out = dataclasses.replace(out, relations={*out.relations, relation})
        out = context.run(context.on.relation_created(out.get_relation(relation.id)), out)
        out, issued = issued_in(ca, out)
        out = context.run(context.on.relation_changed(issued), out)
        secrets_dir = data_dir / "secrets"
        tls = ServerTLS(
            certificate=(secrets_dir / "label-studio.crt").read_text(),
            private_key=(secrets_dir / "label-studio.key").read_text(),
            ca=(secrets_dir / "label-studio-ca.pem").read_text(),
        )
    (secret,) = [s for s in out.secrets if s.label == "label-studio-server"]
    layer = out.get_container("label-studio").layers["label-studio"].to_dict()
    return layer, dict(secret.tracked_content), tls


def localize(layer: LayerDict, local: label_studio.Binaries) -> LayerDict:
    """The layer with the rock's program paths replaced by this machine's."""
    rock = label_studio.Binaries()
    text = json.dumps(layer)
    for name in ("label_studio", "uwsgi", "app_dir", "mlops_workload"):
        text = text.replace(getattr(rock, name), getattr(local, name))
    return json.loads(text)


@functools.cache
def migrated_database() -> Path:
    """Label Studio's SQLite database with every migration applied and no user in it.

    What a first start makes (~50 s of CPU here) before it creates the admin: made once per
    test session, so that tests which are not about the first start copy it instead.
    """
    local = binaries()
    folder = Path(tempfile.mkdtemp(prefix="label-studio-migrated-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    python = str(Path(local.label_studio).with_name("python"))
    environment = {
        "PATH": os.environ["PATH"],
        "LABEL_STUDIO_BASE_DATA_DIR": str(folder),
        "DJANGO_SETTINGS_MODULE": "core.settings.label_studio",
        "SECRET_KEY": "only-to-migrate",
        "LATEST_VERSION_CHECK": "false",
        "SENTRY_DSN": "",
        "COLLECT_ANALYTICS": "false",
    }
    subprocess.run(
        [python, "manage.py", "migrate", "--noinput"],
        cwd=local.app_dir,
        env=environment,
        check=True,
        capture_output=True,
    )
    return folder / "label_studio.sqlite3"


@contextlib.contextmanager
def run_label_studio(
    base: Path, relations=(), secrets=(), *, migrated: bool = True, ca: TestCA | None = None
) -> Iterator[RunningLabelStudio]:
    """Label Studio under a real Pebble, from the charm's layer; stopped on exit.

    ``relations`` and ``secrets`` go into the charm's state (the database relation, say).
    ``migrated``: start from the migrated database (SQLite only): the server still runs
    ``label-studio init``, which creates the admin. The first start itself (migrations) is
    measured by benchmarks/labelling_workload.py and run by the hook sequences.
    ``ca``: the charm is related to it and serves HTTPS with the certificate it signed.
    """
    data_dir = base / "label-studio-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    if migrated and not relations:
        shutil.copyfile(migrated_database(), data_dir / "label_studio.sqlite3")
    local = binaries()
    port, metrics_port = free_port(), free_port()
    layer, secret, tls = charm_layer(data_dir, port, relations, secrets, metrics_port, ca)
    # The same settings the charm used, to reach the server and exec as the charm does.
    settings = label_studio.ServerSettings(
        data_dir=str(data_dir),
        port=port,
        metrics_port=metrics_port,
        admin_password=secret["admin-password"],
        admin_token=secret["admin-token"],
        secret_key=secret["secret-key"],
        binaries=local,
        tls=tls,
    )
    with run_pebble(base) as daemon:
        seconds = start(daemon, localize(layer, local))
        yield RunningLabelStudio(settings, daemon, seconds)
