"""systemd units from Python, substrate code every machine charm shares (no charmhelpers here).

How a command line and an environment are written into a unit file so systemd passes them
through unchanged (``quote``, ``env_file``), a unit's text rendered from a charm's jinja2
template (``render_unit``: pure, so a workload test renders the very unit a charm writes), and
``systemctl`` calls that report a failure instead of raising it into a hook.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

import jinja2


def quote(word: str) -> str:
    """``word`` as one argument of a systemd command line (ExecStart=, Environment=).

    Double quotes, with C-style escapes for backslash, quote and line breaks; ``%`` (specifiers)
    and ``$`` (variables) doubled, so systemd passes the text through unchanged.
    """
    escaped = (
        word.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\t", "\\t")
        .replace("%", "%%")
        .replace("$", "$$")
    )
    return f'"{escaped}"'


def env_file(values: Mapping[str, str]) -> str:
    """An ``EnvironmentFile=`` body: ``NAME='value'`` lines (single quotes: nothing expands)."""
    lines = []
    for name, value in sorted(values.items()):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"not an environment variable name: {name!r}")
        if "\n" in value or "\r" in value or "'" in value:
            # A credential with a quote or a line break: double quotes with escapes instead.
            escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
            if "\n" in value or "\r" in value:
                raise ValueError(f"{name}: a line break cannot go into an EnvironmentFile")
            lines.append(f'{name}="{escaped}"')
        else:
            lines.append(f"{name}='{value}'")
    return "".join(line + "\n" for line in lines)


def exec_start(command: list[str]) -> str:
    """``command`` as an ``ExecStart=`` value: every word quoted."""
    return " ".join(quote(word) for word in command)


def render_unit(templates: Path, template: str, context: Mapping[str, object]) -> str:
    """The text of a unit file from a charm's jinja2 ``template`` (undefined names fail)."""
    loader = jinja2.FileSystemLoader(str(templates))
    return _jinja(loader).get_template(template).render(**context)


def render_source(source: str, context: Mapping[str, object]) -> str:
    """The text of a unit file from the jinja2 template ``source`` (undefined names fail)."""
    return _jinja().from_string(source).render(**context)


def _jinja(loader: jinja2.BaseLoader | None = None) -> jinja2.Environment:
    return jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - a unit file, not HTML
    )


def systemctl(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run systemctl; its completed process (never raises on a failure)."""
    return subprocess.run(
        ["systemctl", *arguments], capture_output=True, text=True, timeout=120, check=False
    )


def is_active(name: str) -> bool:
    """Whether the unit runs (or starts, or stops)."""
    state = systemctl("is-active", name).stdout.strip()
    return state in ("active", "activating", "deactivating", "reloading")


def reason(completed: subprocess.CompletedProcess[str]) -> str:
    """The last line systemctl said, for a one-line status or error."""
    lines = (completed.stderr or completed.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {completed.returncode}"
