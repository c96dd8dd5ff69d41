#!/usr/bin/env python3
"""Lock a charm's Python dependencies: ``requirements.in`` -> ``requirements.txt``.

``requirements.in`` holds the charm's direct dependencies, chosen by hand. The lock is every
distribution the charm's venv will hold, pinned, one per line (a change of the lock is a
one-line diff), resolved by pip for the Python the charm runs under (Ubuntu 24.04's 3.12) in
a throw-away venv: ``pip install --dry-run --ignore-installed --report``. The charms pack
with ``charm-strict-dependencies: true``, so charmcraft installs exactly this list
(``--no-deps``) and ``pip check``s it.

    python tools/lock_charm_deps.py --all                # rewrite every charm's lock
    python tools/lock_charm_deps.py --check tracking-k8s  # exit 1 if the lock is stale
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import cast

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pack_charms import find_python
from stage import CHARMS_DIR, charm_names

INPUT = "requirements.in"
LOCK = "requirements.txt"
HEADER = f"""\
# Locked: every package the charm's venv holds, pinned, one per line. Generated from
# {INPUT} by tools/lock_charm_deps.py (tox -e lock) for Python 3.12 (Ubuntu 24.04);
# do not edit by hand. "# via" names the packages that need it.
"""


def _environment(python: Path) -> dict[str, str]:
    """The marker environment of ``python`` (so the lock is right for 3.12, not for us)."""
    script = (
        "import json, platform, sys; "
        "print(json.dumps([sys.version_info[:3], platform.python_implementation()]))"
    )
    version, implementation = json.loads(
        subprocess.run([python, "-c", script], capture_output=True, text=True, check=True).stdout
    )
    return {
        **cast("dict[str, str]", default_environment()),
        "python_version": f"{version[0]}.{version[1]}",
        "python_full_version": ".".join(map(str, version)),
        "implementation_name": implementation.lower(),
        "platform_python_implementation": implementation,
    }


def resolve(requirements_in: Path, python: Path) -> list[dict]:
    """Pip's install report for ``requirements_in`` in a fresh venv of ``python``."""
    with tempfile.TemporaryDirectory(prefix="lock-") as scratch:
        venv = Path(scratch) / "venv"
        subprocess.run([python, "-m", "venv", venv], check=True)
        report = Path(scratch) / "report.json"
        subprocess.run(
            [
                venv / "bin" / "python",
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--dry-run",
                "--ignore-installed",
                "--report",
                report,
                "--requirement",
                requirements_in,
            ],
            check=True,
        )
        return json.loads(report.read_text())["install"]


def render(install: list[dict], environment: dict[str, str]) -> str:
    """The lock file's text: a header and ``name==version  # via ...`` lines, by name."""
    pins = {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in install
    }
    needed_by: dict[str, set[str]] = defaultdict(set)
    for item in install:
        parent = canonicalize_name(item["metadata"]["name"])
        for line in item["metadata"].get("requires_dist") or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(
                {**environment, "extra": ""}
            ):
                needed_by[canonicalize_name(requirement.name)].add(parent)
    lines = []
    for name in sorted(pins):
        via = sorted(needed_by.get(name, set()) & pins.keys())
        comment = f"  # via {', '.join(via)}" if via else ""
        lines.append(f"{name}=={pins[name]}{comment}\n")
    return HEADER + "".join(lines)


def lock(charm: str, python: Path) -> str:
    """The lock ``charm``'s ``requirements.in`` resolves to today."""
    requirements_in = CHARMS_DIR / charm / INPUT
    if not requirements_in.is_file():
        raise SystemExit(f"{charm}: no {INPUT} (the charm's direct dependencies)")
    return render(resolve(requirements_in, python), _environment(python))


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check``, compare) the locks of the charms named."""
    parser = argparse.ArgumentParser(description="Lock charms' Python dependencies.")
    parser.add_argument("charms", nargs="*", help="charm folder names under charms/")
    parser.add_argument("--all", action="store_true", help="every charm under charms/")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a lock differs"
    )
    args = parser.parse_args(argv)
    charms = charm_names() if args.all else args.charms
    if not charms:
        parser.error("name at least one charm, or --all")
    python = find_python()
    stale = []
    for charm in charms:
        text = lock(charm, python)
        path = CHARMS_DIR / charm / LOCK
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(charm)
            continue
        path.write_text(text)
        print(f"{charm}: {len(text.splitlines()) - HEADER.count(chr(10))} packages -> {path}")
    if stale:
        print(f"stale locks (tox -e lock): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
