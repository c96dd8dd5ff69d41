"""Prometheus' text exposition format (0.0.4): families written, and read back from a target."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")


@dataclass
class Family:
    """One metric family: its name, type (``gauge``, ``counter``), help, and its samples."""

    name: str
    kind: str
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, labels: Mapping[str, str] | None = None, suffix: str = "") -> None:
        self.samples.append((self.name + suffix, dict(labels or {}), float(value)))


def gauge(name: str, help_text: str, value: float | None = None) -> Family:
    """A gauge family, with one unlabelled sample when ``value`` is given."""
    family = Family(name, "gauge", help_text)
    if value is not None:
        family.add(value)
    return family


def counter(name: str, help_text: str, value: float | None = None) -> Family:
    """A counter family, with one unlabelled sample when ``value`` is given."""
    family = Family(name, "counter", help_text)
    if value is not None:
        family.add(value)
    return family


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def render(families: Iterable[Family]) -> str:
    """The families as one exposition; a family without samples is left out."""
    lines = []
    for family in families:
        if not family.samples:
            continue
        help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines += [f"# HELP {family.name} {help_text}", f"# TYPE {family.name} {family.kind}"]
        for name, labels, value in family.samples:
            text = ",".join(f'{key}="{_escape(v)}"' for key, v in sorted(labels.items()))
            lines.append(
                f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}"
            )
    return "\n".join(lines) + "\n"


def parse(text: str, prefix: str = "") -> dict[str, Family]:
    """The families of an exposition whose names start with ``prefix``, by name.

    Enough of the format for a target's own metrics (rclone's): HELP, TYPE, samples with
    labels; a sample of an undeclared family is untyped; timestamps are dropped.
    """
    families: dict[str, Family] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE") and parts[2].startswith(prefix):
                family = families.setdefault(parts[2], Family(parts[2], "untyped", ""))
                rest = parts[3] if len(parts) > 3 else ""
                if parts[1] == "HELP":
                    family.help = rest
                else:
                    family.kind = rest.strip()
            continue
        match = _SAMPLE.match(line.strip())
        if not match or not match.group(1).startswith(prefix):
            continue
        name, labels, value = match.groups()
        family_name = next((f for f in families if name == f or name.startswith(f + "_")), name)
        family = families.setdefault(family_name, Family(family_name, "untyped", ""))
        try:
            number = float(value)
        except ValueError:
            continue
        family.samples.append((name, dict(_LABEL.findall(labels or "")), number))
    return families
