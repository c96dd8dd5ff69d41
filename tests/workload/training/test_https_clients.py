"""A provider's CA as the consumers hand it over: real git, DVC and MLflow verify HTTPS with it.

The servers present certificates a private CA signed (``tests/workload/tls.py``): rclone's S3
(the DVC remote), the registry's git repository over HTTPS (git's dumb HTTP, read-only: the
TLS is git's either way) and MLflow under uvicorn. The clients run with exactly the files and
variables the charms write: ``training.run_ca`` for a training run, the labelling jobs'
``label_studio.workload_environment`` for the DVC push of an export. Without them, each
client refuses its server, so what passes is the CA that was handed over.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlops_charms import label_studio, training
from mlops_charms.client_ca import ClientCA
from tests.workload.processes import free_port, stop_process
from tests.workload.s3_server import S3Server, run_s3_server
from tests.workload.tls import ServerCertificate, server_certificate

VENV_BIN = Path(sys.executable).parent
DATA = "the registry's data, over TLS\n"
REMOTE = "s3://dvc"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@contextlib.contextmanager
def _https_files(root: Path, tls: ServerCertificate) -> Iterator[str]:
    """Static files over HTTPS (what git's dumb HTTP protocol reads)."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root))
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert, tls.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def _mlflow(folder: Path, tls: ServerCertificate) -> Iterator[Callable[[], str]]:
    """MLflow's server, its artifacts proxied, serving HTTPS only: started, then waited for.

    It takes tens of seconds to start: the caller prepares the registry meanwhile.
    """
    port = free_port()
    folder.mkdir()
    command = [
        str(VENV_BIN / "mlflow"),
        "server",
        "--host=127.0.0.1",
        f"--port={port}",
        "--workers=1",
        f"--backend-store-uri=sqlite:///{folder}/mlflow.db",
        f"--artifacts-destination={folder}/artifacts",
        f"--uvicorn-opts=--ssl-keyfile {tls.key} --ssl-certfile {tls.cert}",
    ]
    env = {**_base_env(folder), "MLFLOW_DISABLE_TELEMETRY": "true"}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(cadata=tls.ca_pem)

    def started() -> str:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", context=context, timeout=2):
                    return url
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("mlflow server did not start") from None
                time.sleep(0.5)

    try:
        yield started
    finally:
        stop_process(process, 30)


def _base_env(home: Path) -> dict[str, str]:
    return {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def _run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**env, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _ok(process: subprocess.CompletedProcess) -> None:
    assert process.returncode == 0, process.stderr[-2000:]


def _write(ca: ClientCA) -> None:
    """Write the CA files where the variables point, as the substrate does."""
    for path, pem in ca.paths().items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(pem)


@dataclass(frozen=True)
class Servers:
    base: Path
    tls: ServerCertificate
    s3: S3Server
    registry_url: str  # the bare repository over HTTPS
    tracking_url: str


def _export_with_labelling_env(servers_base: Path, s3: S3Server, bare: Path) -> None:
    """A version made as labelling's export makes one: ``dvc push`` with its job's env."""
    settings = label_studio.ServerSettings(
        data_dir=str(servers_base / "labelling"),
        port=8080,
        admin_password="unused",
        admin_token="unused",
        secret_key="unused",
    )
    access = label_studio.RegistryAccess(
        git_url=str(bare),
        username="labelling",
        password="unused",
        dvc_endpoint=s3.endpoint,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        ca=s3.ca_pem,
    )
    _write(label_studio.registry_ca(settings, access))
    env = {**_base_env(servers_base), **label_studio.workload_environment(settings, access)}
    work = servers_base / "export"
    work.mkdir()
    _ok(_run(["git", "init", "--quiet", "--initial-branch=main"], env, work))
    _ok(_run(["dvc", "init", "--quiet"], env, work))
    # What `dvc remote add --default` and `dvc remote modify` write (each dvc run takes seconds).
    with (work / ".dvc" / "config").open("a") as config:
        config.write("[core]\n    remote = storage\n['remote \"storage\"']\n")
        config.write(f"    url = {REMOTE}\n    endpointurl = {s3.endpoint}\n")
    (work / "data").mkdir()
    (work / "data" / "item.txt").write_text(DATA)
    # Without the CA; refused at once rather than after botocore's retries.
    without_ca = {k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"} | {"AWS_MAX_ATTEMPTS": "1"}
    _ok(_run(["dvc", "add", "--quiet", "data"], env, work))
    refused = _run(["dvc", "push"], without_ca, work)
    assert refused.returncode != 0 and "certificate" in refused.stderr.lower()
    _ok(_run(["dvc", "push"], env, work))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    _ok(_run([*git, "add", "--all"], env, work))
    _ok(_run([*git, "commit", "--quiet", "-m", "v1"], env, work))
    _ok(_run(["git", "tag", "v1"], env, work))  # a version is a tag
    _ok(
        _run(
            ["git", "clone", "--quiet", "--bare", "--no-local", str(work), str(bare)],
            env,
            servers_base,
        )
    )
    _ok(_run(["git", "update-server-info"], env, bare))  # what dumb HTTP reads


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    base = tmp_path_factory.mktemp("https-clients")
    tls = server_certificate(base / "tls")
    with contextlib.ExitStack() as stack:
        mlflow_started = stack.enter_context(_mlflow(base / "mlflow", tls))
        s3 = stack.enter_context(run_s3_server(base / "s3", buckets=("dvc",), tls=tls))
        served = base / "served"
        served.mkdir()
        _export_with_labelling_env(base, s3, served / "registry.git")
        files_url = stack.enter_context(_https_files(served, tls))
        yield Servers(base, tls, s3, f"{files_url}/registry.git", mlflow_started())


def _accesses(servers: Servers) -> tuple[training.RegistryAccess, training.TrackingAccess]:
    """What a training unit reads from its relations with the two HTTPS servers."""
    registry = training.RegistryAccess(
        git_url=servers.registry_url,
        username="training",
        password="unused",
        access_key=servers.s3.access_key,
        secret_key=servers.s3.secret_key,
        dvc_endpoint=servers.s3.endpoint,
        ca=servers.tls.ca_pem,
    )
    tracking = training.TrackingAccess(
        uri=servers.tracking_url, username="", password="", ca=servers.tls.ca_pem
    )
    return registry, tracking


def _run_env(servers: Servers, folder: Path) -> dict[str, str]:
    """A training run's environment as the charm builds it, its CA files written."""
    registry, tracking = _accesses(servers)
    settings, credentials = training.environment(registry, tracking, workdir=str(folder))
    ca = training.run_ca(registry, tracking, folder=str(folder))
    _write(ca)
    return {**_base_env(folder), **settings, **credentials, **ca.environment}


def test_a_run_clones_and_pulls_the_registry_over_https_with_the_ca(servers, tmp_path):
    env = _run_env(servers, tmp_path)
    without_ca = {k: v for k, v in env.items() if k != "GIT_SSL_CAINFO"}
    refused = _run(["git", "clone", servers.registry_url, "refused"], without_ca, tmp_path)
    assert refused.returncode != 0 and "certificate" in refused.stderr.lower()
    _ok(_run(["git", "clone", "--quiet", servers.registry_url, "clone"], env, tmp_path))
    clone = tmp_path / "clone"
    _ok(_run(["dvc", "pull", "--quiet"], env, clone))
    assert (clone / "data" / "item.txt").read_text() == DATA


# One interpreter (MLflow takes seconds to import): refused without the CA, then logged with it.
_LOG_A_RUN = """
import os

import mlflow

cert_path = os.environ.pop("MLFLOW_TRACKING_SERVER_CERT_PATH")
try:
    mlflow.search_experiments()
except Exception as error:
    print("refused:", "CERTIFICATE_VERIFY_FAILED" in str(error))
os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"] = cert_path
mlflow.set_experiment("https")
with mlflow.start_run() as run:
    mlflow.log_metric("accuracy", 0.9)
    mlflow.log_text("over TLS", "note.txt")  # the proxied artifact store, over HTTPS too
print(run.info.run_id)
"""


def test_a_trainjob_pod_writes_its_cas_from_variables_then_pulls_over_https(servers, tmp_path):
    # A TrainJob's pod: no file mounted; each CA is a variable Kubernetes set from the run's
    # Secret, and MLOPS_INLINE_FILES says where mlops-workload writes it before git and DVC run.
    registry, tracking = _accesses(servers)
    work = tmp_path / "work"
    settings, credentials = training.environment(registry, tracking, workdir=str(work))
    ca = training.run_ca(registry, tracking, folder=str(work / "ca"))
    inline, variables = ca.inline()
    from_secret = {variable: ca.files[name] for variable, name in variables.items()}
    env = {
        **_base_env(tmp_path),
        **settings,
        **credentials,
        **ca.environment,
        **inline,
        **from_secret,
    }
    # Until mlops-workload writes them, the CA files are missing and git refuses the server
    # (git's own words for a CA file that is not there).
    refused = _run(["git", "ls-remote", servers.registry_url], env, tmp_path)
    assert refused.returncode != 0 and "ssl ca cert" in refused.stderr.lower(), refused.stderr
    train = [str(VENV_BIN / "mlops-workload"), "training", "train", "--version", "v1"]
    train += ["--spec", "text-tfidf-logreg", "--skip-unlabelled", "--no-register"]
    ran = _run(train, env, tmp_path)
    _ok(ran)
    # The version was cloned and pulled over HTTPS; it has no labels yet (a raw version).
    assert json.loads(ran.stdout)["version"] == "v1", ran.stdout
    for name, pem in ca.files.items():
        assert (work / "ca" / name).read_text() == pem


def test_a_run_logs_to_mlflow_over_https_with_the_ca(servers, tmp_path):
    env = {**_run_env(servers, tmp_path), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    logged = _run([str(VENV_BIN / "python"), "-c", _LOG_A_RUN], env, tmp_path)
    _ok(logged)
    lines = logged.stdout.strip().splitlines()
    assert "refused: True" in lines
    run_id = lines[-1]
    context = ssl.create_default_context(cafile=env["MLFLOW_TRACKING_SERVER_CERT_PATH"])
    url = f"{servers.tracking_url}/api/2.0/mlflow/runs/get?run_id={run_id}"
    with urllib.request.urlopen(url, context=context, timeout=10) as answer:
        run = json.load(answer)["run"]
    assert run["data"]["metrics"][0]["value"] == 0.9
    artifacts = f"{servers.tracking_url}/api/2.0/mlflow/artifacts/list?run_id={run_id}"
    with urllib.request.urlopen(artifacts, context=context, timeout=10) as answer:
        assert [f["path"] for f in json.load(answer)["files"]] == ["note.txt"]


@pytest.mark.parametrize(
    ("inline", "error"),
    [
        ("{not json", "MLOPS_INLINE_FILES is not JSON: Expecting property name enclosed in"),
        ('["a list"]', "MLOPS_INLINE_FILES must map each file's path to a variable"),
        (
            '{"/tmp/x/a.pem": "MISSING"}',
            "MLOPS_INLINE_FILES: MISSING (the content of /tmp/x/a.pem)",
        ),
    ],
)
def test_bad_inline_files_fail_the_command_in_one_line(tmp_path, inline, error):
    env = {**_base_env(tmp_path), "MLOPS_INLINE_FILES": inline}
    failed = _run([str(VENV_BIN / "mlops-workload"), "training", "list-specs"], env, tmp_path)
    assert failed.returncode == 1
    (line,) = failed.stderr.strip().splitlines()
    assert line.startswith(f"error: {error}"), line
