"""Files a pod gets as variables, written before a command runs.

A Kubeflow TrainJob mounts no file (no field does it in both Trainer 2.1 and 2.2), so the
training charm hands it the providers' CAs as variables from the run's Secret, with
``MLOPS_INLINE_FILES``: each file's path -> the variable holding its content (the charm's
``mlops_charms.client_ca.ClientCA.inline``). The variables that name those paths
(``GIT_SSL_CAINFO``, ``AWS_CA_BUNDLE``, ``MLFLOW_TRACKING_SERVER_CERT_PATH``) then find them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

VARIABLE = "MLOPS_INLINE_FILES"


class InlineFileError(Exception):
    """The variables do not describe files that can be written."""


def write(environ: Mapping[str, str]) -> list[str]:
    """Write each file ``MLOPS_INLINE_FILES`` names (mode 0644: no secret); their paths."""
    spec = environ.get(VARIABLE)
    if not spec:
        return []
    try:
        files = json.loads(spec)
    except json.JSONDecodeError as error:
        raise InlineFileError(f"{VARIABLE} is not JSON: {error.msg}") from None
    if not isinstance(files, dict):
        raise InlineFileError(f"{VARIABLE} must map each file's path to a variable")
    written = []
    for path, variable in sorted(files.items()):
        content = environ.get(str(variable))
        if content is None:
            raise InlineFileError(f"{VARIABLE}: {variable} (the content of {path}) is not set")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        target.chmod(0o644)
        written.append(str(target))
    return written
