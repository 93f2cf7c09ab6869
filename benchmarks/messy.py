"""A messy table with the default tune, against the same table cleaned by hand.

The table is a card-transactions export with planted fraud (``tests/messy_tables.py``):
a text id, a row number, ISO timestamps, True/False and yes/no columns, a
merchant name with 2,000 values, a constant and an empty column. Three runs
of ``anomtune tune`` (through the real command line, the same seed and trials):

- ``default``: the messy file, no options: the roles anomtune infers;
- ``hand``: the same rows with the junk columns removed by hand (what a
  practitioner would feed in);
- ``raw``: the messy file with every column forced in as a feature (ids,
  timestamps and the merchant as categories), what reading columns by their
  type alone does.

Prints a table (test AUC-PR and AUC-ROC, features, wall time) and writes
``benchmarks/results/messy.csv`` with versions, seeds and commands.

Usage: python benchmarks/messy.py [--rows 5000] [--seeds 0,1,2] [--trials 30]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from messy_tables import TRANSACTION_JUNK, transactions  # noqa: E402

import anomtune  # noqa: E402

RAW_OPTIONS = [
    "--include",
    "row,ts,merchant",
    "--role",
    "txn_id=categorical",
    "--role",
    "ts=categorical",
    "--max-levels",
    "100000",
]


def tune(data: Path, out: Path, seed: int, trials: int, extra: list[str]) -> dict:
    args = [
        *[sys.executable, "-m", "anomtune", "tune", str(data), "--label", "is_fraud"],
        *["--seed", str(seed), "--trials", str(trials), "--quiet"],
        *["--storage", str(out) + ".journal", "--out", str(out), *extra],
    ]
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"tune failed ({' '.join(args)}):\n{done.stderr}")
    summary = json.loads((out / "summary.json").read_text())
    test = summary["metrics"]["test"]
    return {
        "auc_pr": test["auc_pr"],
        "auc_roc": test["auc_roc"],
        "features": summary["data"]["features"],
        "seconds": round(seconds, 2),
        "epochs": summary["study"]["epochs_trained"],
        "command": " ".join(args[2:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--out", default=str(HERE / "results" / "messy.csv"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for seed in seeds:
            frame = transactions(args.rows, seed=seed)
            messy, hand = folder / f"messy-{seed}.csv", folder / f"hand-{seed}.csv"
            frame.to_csv(messy, index=False)
            frame.drop(columns=TRANSACTION_JUNK).to_csv(hand, index=False)
            for setting, data, extra in (
                ("default", messy, []),
                ("hand", hand, []),
                ("raw", messy, RAW_OPTIONS),
            ):
                result = tune(data, folder / f"{setting}-{seed}", seed, args.trials, extra)
                rows.append({"setting": setting, "seed": seed, "rows": args.rows, **result})
                print(
                    f"seed {seed} {setting:<8} AUC-PR {result['auc_pr']:.4f}  "
                    f"AUC-ROC {result['auc_roc']:.4f}  features {result['features']:>4}  "
                    f"{result['seconds']:.0f}s",
                    flush=True,
                )
    print()
    print(f"{'setting':<8} {'AUC-PR':>7} {'AUC-ROC':>8} {'features':>8} {'seconds':>8}  (medians)")
    for setting in ("default", "hand", "raw"):
        mine = [r for r in rows if r["setting"] == setting]
        print(
            f"{setting:<8} {statistics.median(r['auc_pr'] for r in mine):>7.4f} "
            f"{statistics.median(r['auc_roc'] for r in mine):>8.4f} "
            f"{statistics.median(r['features'] for r in mine):>8.0f} "
            f"{statistics.median(r['seconds'] for r in mine):>8.1f}"
        )
    by = {(r["setting"], r["seed"]): r for r in rows}
    gaps = [by[("hand", s)]["auc_pr"] - by[("default", s)]["auc_pr"] for s in seeds]
    ratios = [by[("default", s)]["seconds"] / by[("hand", s)]["seconds"] for s in seeds]
    print(
        f"default vs hand: AUC-PR gap median {statistics.median(gaps):+.4f} "
        f"(max {max(gaps):+.4f}); wall time ratio median {statistics.median(ratios):.2f}x"
    )
    versions = {"anomtune": anomtune.__version__, "python": platform.python_version()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*rows[0], "versions"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "versions": json.dumps(versions)})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
