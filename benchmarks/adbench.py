"""Read ADBench ``.npz`` files and write them as CSV, the format anomtune reads.

Used by the benchmarks (which drive the real command line on CSV files) and
to produce the small CSVs shipped in ``datasets/``.

    python benchmarks/adbench.py ../shared/datasets cardio OUT.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pandas as pd

LABEL = "is_anomaly"


def index(root: str | Path) -> list[dict]:
    """Rows of ``adbench/INDEX.csv`` under the shared datasets folder."""
    path = Path(root) / "adbench" / "INDEX.csv"
    if not path.exists():
        raise SystemExit(f"{path}: not found; pass the path of the shared datasets folder")
    with path.open() as fh:
        return list(csv.DictReader(fh))


def load(root: str | Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of the ADBench data set called ``name``."""
    for row in index(root):
        if row["name"].lower() == name.lower():
            data = np.load(Path(root) / "adbench" / row["file"], allow_pickle=False)
            return np.asarray(data["X"], dtype=np.float64), np.asarray(data["y"]).astype(int)
    raise SystemExit(f"no ADBench data set called {name!r}")


def to_frame(X: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    frame[LABEL] = y
    return frame


def write_csv(root: str | Path, name: str, out: str | Path) -> Path:
    X, y = load(root, name)
    out = Path(out)
    to_frame(X, y).to_csv(out, index=False)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    print(write_csv(sys.argv[1], sys.argv[2], sys.argv[3]))
