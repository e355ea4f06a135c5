"""The machine a figure came from: CPU model, the instruction sets int8 and fp32 speed depend on,
core count and load, for every benchmark and demo report."""

from __future__ import annotations

import os
from pathlib import Path

# int8 convolutions are much faster with VNNI (Intel Cascade Lake and later, AMD Zen 4) or AMX;
# AVX2-only CPUs gain less.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_name() -> str:
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "cpu"


def cpu_flags() -> list[str]:
    """Which of :data:`SPEED_FLAGS` this CPU has, in that order."""
    for line in _cpuinfo():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in SPEED_FLAGS if flag in present]
    return []


def describe_machine() -> dict:
    """CPU model, flags, CPU count and the 1-minute load average now."""
    return {"cpu": cpu_name(), "flags": cpu_flags(), "cpus": os.cpu_count(), "loadavg_1min": os.getloadavg()[0]}


def machine_line(machine: dict | None = None) -> str:
    machine = machine or describe_machine()
    flags = ", ".join(machine["flags"]) or "none of " + ", ".join(SPEED_FLAGS)
    return (f"Machine: {machine['cpu']} ({machine['cpus']} CPUs; {flags}); 1-minute load average "
            f"{machine['loadavg_1min']:.2f}.")
