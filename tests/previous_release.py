r"""The charms as the previous release shipped them, for the upgrade tests.

Nothing is on Charmhub yet, so the previous release is main as it landed before TLS, labelling's
peers and tracking's backups: commit ``RELEASE``. Its charm code (``lib/mlops_charms`` and each
service charm's ``src`` and ``charmcraft.yaml``) ships beside this module as a git
archive, as a released charm would be fetched rather than rebuilt. Made with::

    git archive --format=tar.gz -o tests/previous-release.tar.gz <RELEASE> -- lib/mlops_charms \\
        charms/{tracking,labelling,data-versioning,training}{,-k8s}/{src,charmcraft.yaml}

When a release is cut, the archive and ``RELEASE`` move to it.

The released modules are imported beside the current ones under their own names: while a
``ReleasedCharm`` is active, ``sys.modules`` holds the release's ``mlops_charms`` and the charm's
own modules, so its hooks run the release's code, imports inside functions included. The
workload (the image) is the current one on both sides of the upgrade.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import importlib
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import ops
import yaml
from ops import testing

RELEASE = "56c0382"
ARCHIVE = Path(__file__).with_name("previous-release.tar.gz")


@dataclasses.dataclass
class ReleasedCharm:
    """One charm of the release: its folder, its charm class and the modules it imported."""

    root: Path
    charm_class: type[ops.CharmBase]
    modules: dict[str, ModuleType]
    ours: Callable[[str], bool]

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """``sys.modules`` names the release's modules, not the current ones, meanwhile."""
        current = _take(self.ours)
        sys.modules.update(self.modules)
        try:
            yield
        finally:
            self.modules.update(_take(self.ours))
            sys.modules.update(current)

    def module(self, name: str) -> ModuleType:
        return self.modules[name]

    def context(
        self, *, app_name: str, storage_of: testing.Context | None = None
    ) -> testing.Context:
        """An ops.testing context of the release's charm, with the release's charmcraft.yaml.

        ``storage_of``: the current charm's context, whose storage folders it uses (ops.testing
        gives each context its own): a refresh keeps the unit's storage where it was.
        """
        raw = yaml.safe_load((self.root / "charmcraft.yaml").read_text())
        context = testing.Context(
            self.charm_class,
            meta={key: value for key, value in raw.items() if key not in ("config", "actions")},
            config=raw.get("config"),
            actions=raw.get("actions"),
            app_name=app_name,
        )
        if storage_of is not None:
            context._get_storage_root = storage_of._get_storage_root  # no public way to share
        return context


def _take(ours: Callable[[str], bool]) -> dict[str, ModuleType]:
    """Remove and return the modules ``ours`` names from ``sys.modules``."""
    return {name: sys.modules.pop(name) for name in [n for n in sys.modules if ours(n)]}


@functools.cache
def _tree() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="previous-release-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    with tarfile.open(ARCHIVE) as archive:
        # Files and folders under the archive's root only (Python's data filter, which not
        # every 3.11 here has, refuses the rest too).
        for member in archive.getmembers():
            inside = not Path(member.name).is_absolute() and ".." not in Path(member.name).parts
            assert inside and (member.isfile() or member.isdir()), member.name
            archive.extract(member, folder)
    return folder


@functools.cache
def released_charm(name: str) -> ReleasedCharm:
    """The release's ``name`` charm (a folder under charms/), imported apart from the current."""
    root = _tree() / "charms" / name
    src, lib = root / "src", _tree() / "lib"
    local = {path.stem for path in src.glob("*.py")}

    def ours(module: str) -> bool:
        return module.split(".")[0] in local | {"mlops_charms"}

    current = _take(ours)
    sys.path[:0] = [str(src), str(lib)]
    try:
        charm = importlib.import_module("charm")
    finally:
        sys.path.remove(str(src))
        sys.path.remove(str(lib))
        modules = _take(ours)
        sys.modules.update(current)
    (charm_class,) = [
        value
        for value in vars(charm).values()
        if isinstance(value, type)
        and issubclass(value, ops.CharmBase)
        and value.__module__ == "charm"
    ]
    return ReleasedCharm(root, charm_class, modules, ours)
