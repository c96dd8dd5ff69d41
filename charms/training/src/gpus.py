"""NVIDIA GPUs of this machine: what is there, whether a driver runs them, and who has which.

``nvidia-smi`` (the driver's own tool) names the GPUs a driver runs; without it,
``/proc/driver/nvidia/gpus/`` says a kernel driver is loaded, and the PCI bus
(``/sys/bus/pci/devices/*``, vendor ``0x10de``, a display or 3D controller) says whether there
is a card at all, so the status can tell "no GPU" from "a GPU without a driver". Allocation is
per unit: a job gets GPUs no running job of this unit holds (``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

NVIDIA_VENDOR = "0x10de"
# PCI classes: 0x0300 VGA, 0x0302 3D controller (data-centre cards have no display).
GPU_CLASSES = ("0x0300", "0x0302")
QUERY = [
    "nvidia-smi",
    "--query-gpu=index,name,memory.total,driver_version",
    "--format=csv,noheader,nounits",
]


@dataclass(frozen=True)
class Gpu:
    """One GPU as the driver reports it."""

    index: int
    name: str
    memory_mib: int
    driver: str


@dataclass(frozen=True)
class Inventory:
    """The GPUs a driver runs, and the NVIDIA cards on the PCI bus (with or without one)."""

    gpus: tuple[Gpu, ...]
    pci_cards: int
    problem: str | None = None

    @property
    def indices(self) -> list[int]:
        return [gpu.index for gpu in self.gpus]

    def summary(self) -> str:
        """One line for the unit's status."""
        if self.gpus:
            names = sorted({gpu.name for gpu in self.gpus})
            return f"{len(self.gpus)} GPU(s): {', '.join(names)}, driver {self.gpus[0].driver}"
        if self.pci_cards:
            why = f" ({self.problem})" if self.problem else ""
            return f"{self.pci_cards} NVIDIA card(s) without a working driver{why}"
        return "no NVIDIA GPU: CPU only"


def parse_query(text: str) -> tuple[Gpu, ...]:
    """``nvidia-smi --query-gpu=index,name,memory.total,driver_version`` CSV, without units."""
    gpus = []
    for line in text.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 4 or not fields[0].isdigit():
            continue
        memory = int(fields[2]) if fields[2].isdigit() else 0
        gpus.append(Gpu(int(fields[0]), fields[1], memory, fields[3]))
    return tuple(gpus)


def pci_cards(sys_root: Path = Path("/")) -> int:
    """NVIDIA display or 3D controllers on the PCI bus, driver or not."""
    count = 0
    for device in (sys_root / "sys/bus/pci/devices").glob("*"):
        try:
            vendor = (device / "vendor").read_text().strip()
            device_class = (device / "class").read_text().strip()
        except OSError:
            continue
        if vendor == NVIDIA_VENDOR and device_class[:6] in GPU_CLASSES:
            count += 1
    return count


def detect(root: Path = Path("/")) -> Inventory:
    """The GPUs of this machine, through ``nvidia-smi``; never raises."""
    cards = pci_cards(root)
    try:
        completed = subprocess.run(QUERY, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        loaded = (root / "proc/driver/nvidia/gpus").is_dir()
        problem = "nvidia-smi is missing" if loaded else "no NVIDIA driver loaded"
        return Inventory((), cards, problem)
    except subprocess.TimeoutExpired:
        return Inventory((), cards, "nvidia-smi did not answer in 60 s")
    if completed.returncode != 0:
        reason = (completed.stdout + completed.stderr).strip().splitlines()
        return Inventory(
            (), cards, reason[0] if reason else f"nvidia-smi: exit {completed.returncode}"
        )
    gpus = parse_query(completed.stdout)
    return Inventory(gpus, max(cards, len(gpus)))


def allocate(available: Sequence[int], busy: Collection[int], count: int) -> list[int] | None:
    """``count`` GPUs of ``available`` that no running job holds, lowest first; None: too few."""
    free = [index for index in available if index not in busy]
    return free[:count] if len(free) >= count else None


def parse_allocation(text: str) -> list[int]:
    """The GPUs a job holds, from its ``CUDA_VISIBLE_DEVICES`` (``"0,2"``; ``""``: none)."""
    return [int(part) for part in text.split(",") if part.strip().isdigit()]
