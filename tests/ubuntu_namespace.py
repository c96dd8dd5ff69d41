"""Run a test process where charmhelpers believes it is on Ubuntu 24.04 with systemd.

``charmhelpers.core.host`` (and ``templating``, ``fetch``) refuse to import on Debian (they read
``/etc/os-release``) and ask ``/etc/lsb-release`` and ``/run/systemd/system`` whether the machine
runs systemd. ``reexec_under_ubuntu()`` re-runs the current pytest in a private mount namespace
(tools/pack_charms.py's ``ubuntu_namespace_command``, as ``tox -e pack`` does for charmcraft)
where those say Ubuntu 24.04 and systemd: the machine itself, outside it, is unchanged. Root
only; elsewhere the caller skips.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from tools.pack_charms import UBUNTU_2404_OS_RELEASE, ubuntu_namespace_command

MARK = "MLOPS_UBUNTU_NAMESPACE"
LSB_RELEASE = """\
DISTRIB_ID=Ubuntu
DISTRIB_RELEASE=24.04
DISTRIB_CODENAME=noble
DISTRIB_DESCRIPTION="Ubuntu 24.04 LTS"
"""


def inside() -> bool:
    return os.environ.get(MARK) == "1"


def reexec_under_ubuntu() -> None:
    """Replace this process by the same pytest run inside the namespace (returns if inside)."""
    if inside() or os.geteuid() != 0:
        return
    scratch = Path(tempfile.mkdtemp(prefix="ubuntu-namespace-"))
    os_release = scratch / "os-release"
    os_release.write_text(UBUNTU_2404_OS_RELEASE)
    upper, work = scratch / "etc", scratch / "work"
    upper.mkdir()
    work.mkdir()
    (upper / "lsb-release").write_text(LSB_RELEASE)
    setup = (
        # /etc gains lsb-release (an overlay: nothing is written to the real /etc).
        f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc\n"
        # charmhelpers' test for systemd; /run/systemd is the machine's, covered by a tmpfs.
        "mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd && "
        "mkdir /run/systemd/system"
    )
    command = [sys.executable, "-m", "pytest", *sys.argv[1:]]
    os.environ[MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    restore_captured_fds()
    arguments = ubuntu_namespace_command(os_release, command, setup=setup)
    os.execvp(arguments[0], arguments)  # noqa: S606


def restore_captured_fds() -> None:
    """Give the new process pytest's real stdout/stderr (a conftest runs under fd capture)."""
    import gc

    from _pytest.capture import FDCapture

    for capture in [obj for obj in gc.get_objects() if isinstance(obj, FDCapture)]:
        if capture.targetfd in (1, 2) and capture._state == "started":
            os.dup2(capture.targetfd_save, capture.targetfd)
