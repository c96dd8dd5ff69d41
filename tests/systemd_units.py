"""Reading a unit file as systemd reads it, for tests that run a rendered unit without systemd.

This machine has no running systemd: a test takes the unit a charm renders apart with these
(its ``ExecStart=`` words, its ``Key=value`` settings, its ``EnvironmentFile=``) and does what
systemd would do with them.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping
from pathlib import Path

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"'}


def systemd_words(line: str) -> list[str]:
    """A command line split as systemd splits it: double quotes, C escapes, %% and $$."""
    words = []
    for match in re.finditer(r'"((?:[^"\\]|\\.)*)"|(\S+)', line):
        quoted, bare = match.groups()
        word = bare if quoted is None else re.sub(r"\\(.)", lambda m: _ESCAPES[m[1]], quoted)
        words.append(word.replace("%%", "%").replace("$$", "$"))
    return words


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file, every value of a key in order."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def environment_file(text: str) -> dict[str, str]:
    """What systemd reads from ``env_file``'s lines: ``NAME='value'`` or ``NAME="value"``."""
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if value.startswith("'"):
            values[name] = value[1:-1]
        else:
            values[name] = re.sub(r"\\(.)", r"\1", value[1:-1])
    return values


def assert_secrets_only_in_environment_file(unit_file: str, secrets: Mapping[str, str]) -> None:
    """The unit's one ``EnvironmentFile=`` (mode 0600) holds ``secrets``; its text, none."""
    text = Path(unit_file).read_text()
    (env_path,) = unit_settings(text)["EnvironmentFile"]
    env = Path(env_path)
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert environment_file(env.read_text()) == dict(secrets)
    for value in secrets.values():
        assert value not in text
