"""What the benchmarks record about the machine, and how they write their rows."""

from __future__ import annotations

import csv
import datetime
import os
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_rows(path: Path, columns: Sequence[str], rows: Iterable[dict]) -> None:
    """Write ``rows`` as CSV with the header ``columns``, making the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def machine_info(versions: dict[str, str], **extra) -> dict:
    """What a result row records of where it was measured: ``versions`` (name to
    version), Python's, the CPUs and the date, and any ``extra`` fields."""
    return {
        **versions,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_name(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        **extra,
    }


def machine_line(info: dict, versions: Iterable[str]) -> str:
    """One line for the top of a benchmark's output."""
    shown = ", ".join(f"{name} {info[name]}" for name in [*versions, "python"])
    return (
        f"{shown}; {info['cpu_count']} CPUs ({info['cpu']}); {info['date']}; "
        f"load {os.getloadavg()[0]:.2f}"
    )
