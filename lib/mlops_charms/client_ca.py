"""The CAs a consumer's jobs verify the stack's HTTPS servers with: files, and client variables.

A provider serving HTTPS publishes its CA (``ca`` of ``mlops_dataset``, ``mlops_tracking``). A
consumer writes each CA as a file where its job reads its other files, and points each client
at that file through the variable it honours, so that every client verifies one server with
that server's CA only:

- the registry (``mlops_dataset``): git over HTTPS (``GIT_SSL_CAINFO``), and botocore, under
  DVC's S3 remote and under the workload's own s3fs calls to it (``AWS_CA_BUNDLE``, with
  uploads the registry's S3 reads over HTTPS: ``S3_UPLOAD_SETTINGS``);
- tracking (``mlops_tracking``): the MLflow client (``MLFLOW_TRACKING_SERVER_CERT_PATH``), its
  artifacts included (the server proxies them).

Without a CA nothing is added: plain HTTP, or a server the system's CAs already trust.
The files are public (no key); the variables are plain settings, not credentials.

A pod that mounts no file (a Kubeflow TrainJob) gets the files as variables instead
(``ClientCA.inline``), and ``mlops-workload`` writes them before it runs
(``mlops_workload.inline_files``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

REGISTRY_CA_FILE = "registry-ca.pem"
TRACKING_CA_FILE = "tracking-ca.pem"
REGISTRY_CA_VARIABLES = ("GIT_SSL_CAINFO", "AWS_CA_BUNDLE")
TRACKING_CA_VARIABLES = ("MLFLOW_TRACKING_SERVER_CERT_PATH",)
# Over HTTPS botocore (1.36+) sends an upload's checksum in an aws-chunked body without a
# length, which S3 servers such as rclone's (the registry's) refuse (MissingContentLength):
# checksums only where S3 requires one. Every boto3 uploader of the stack sets it.
S3_UPLOAD_SETTINGS = {"AWS_REQUEST_CHECKSUM_CALCULATION": "when_required"}
# Read by mlops-workload at its start (mlops_workload.inline_files.VARIABLE): each path -> the
# variable holding the file's content.
INLINE_FILES_VARIABLE = "MLOPS_INLINE_FILES"


@dataclass(frozen=True)
class ClientCA:
    """The CA files of a job (name -> PEM) and the variables naming them under ``folder``."""

    folder: str
    files: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)

    def paths(self) -> dict[str, str]:
        """Each file's full path -> its PEM: what the substrate writes (mode 0644)."""
        return {f"{self.folder}/{name}": pem for name, pem in self.files.items()}

    def inline(self) -> tuple[dict[str, str], dict[str, str]]:
        """The files as variables, for a pod that mounts none: ``(settings, variables)``.

        ``variables``: each variable -> the file (name) whose content it holds;
        ``settings``: ``INLINE_FILES_VARIABLE``, each file's path -> its variable, from which
        ``mlops-workload`` writes the files where ``environment`` points before it runs.
        """
        variables = {
            "MLOPS_INLINE_" + re.sub("[^A-Z0-9]", "_", name.upper()): name
            for name in sorted(self.files)
        }
        paths = {f"{self.folder}/{name}": variable for variable, name in variables.items()}
        return {INLINE_FILES_VARIABLE: json.dumps(paths, sort_keys=True)}, variables


def client_ca(
    folder: str, *, registry: str | None = None, tracking: str | None = None
) -> ClientCA:
    """The CA files under ``folder`` and the variables that point git, DVC and MLflow at them.

    ``registry``, ``tracking``: each provider's CA (PEM, as its databag model validated it),
    or None when that server is plain HTTP or unrelated.
    """
    files: dict[str, str] = {}
    environment: dict[str, str] = {}
    for pem, name, variables in (
        (registry, REGISTRY_CA_FILE, REGISTRY_CA_VARIABLES),
        (tracking, TRACKING_CA_FILE, TRACKING_CA_VARIABLES),
    ):
        if pem:
            files[name] = pem
            environment.update(dict.fromkeys(variables, f"{folder}/{name}"))
    if registry:
        environment.update(S3_UPLOAD_SETTINGS)
    return ClientCA(folder, files, environment)
