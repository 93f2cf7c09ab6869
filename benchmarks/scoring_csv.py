"""End-to-end file scoring: ``anomtune score`` against pandas plus torch.

A default-architecture detector (64-32 hidden, latent 16) is fitted on 32
numeric features and exported with ``anomtune.export.export_model``; its
torch form is saved with ``anomtune.persist.save_model``. A CSV of
``--rows`` rows (1,000,000 by default) and the 32 feature columns is written
(values with 5 decimals, about 290 MB), and the same rows as Parquet
(float64 columns, what ``pandas.read_csv(...).to_parquet()`` gives). The
training rows are the ADBench ``letter`` set when the shared datasets folder
is given (the big file then holds its rows resampled with Gaussian jitter),
else correlated random rows.

Each measured run is a separate process, started fresh (interpreter start
and imports included), timed by the wall clock, with its CPU time (user plus
system, all threads) and peak resident memory read from the kernel's
accounting of that child (``os.wait4`` in a small launcher process, so that
the benchmark's own memory is not counted); on a busy machine the CPU time
is the steadier figure:

``anomtune_csv``
    ``anomtune score MODEL.onnx big.csv -o out.csv --quiet``.
``anomtune_parquet``
    ``anomtune score MODEL.onnx big.parquet -o out.csv --quiet``.
``pandas_torch``
    The baseline: ``pandas.read_csv``, the preprocessing the model was
    trained with (``InputEncoder.encode``: missing values to medians),
    ``detector.module_`` in eager mode under ``torch.no_grad()`` on the whole
    float32 matrix with 2 torch threads (scaling, the autoencoder, the mean
    squared error), the threshold, and ``DataFrame.to_csv`` of the same three
    output columns (row, score, is_anomaly).

The implementations take turns, ``--repeats`` rounds; the table quotes
medians. Speed-ups are the baseline's median over each one's: of the wall
time (``x wall``), of the CPU time (``x cpu``) and of the data path
(``x data``: the seconds from the first read to the last score written,
without interpreter start, imports and model loading; ``anomtune score``
reports them with ``--json``, the baseline prints them). The input files
stay in the page cache, so all runs read them from memory.

    python benchmarks/scoring_csv.py                     # generated rows
    python benchmarks/scoring_csv.py ../shared/datasets  # trained on letter
    python benchmarks/scoring.py ../shared/datasets --part csv
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from machine import machine_info, machine_line, write_rows

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "scoring_csv.csv"
N_FEATURES = 32
TRAIN_ROWS = 5000
WRITE_ROWS = 200_000
NAMES = ("anomtune_csv", "anomtune_parquet", "pandas_torch")
COLUMNS = [
    "implementation",
    "input",
    "rows",
    "input_mb",
    "runs",
    "median_s",
    "min_s",
    "max_s",
    "median_cpu_s",
    "median_data_path_s",
    "rows_per_s",
    "median_peak_mb",
    "max_peak_mb",
    "speedup_wall",
    "speedup_cpu",
    "speedup_data_path",
    "training_rows",
    "anomtune",
    "onnxruntime",
    "torch",
    "pyarrow",
    "pandas",
    "numpy",
    "python",
    "cpu_count",
    "cpu",
    "load_1min_min",
    "load_1min_max",
    "date",
]


def training_rows(datasets: Path | None, seed: int):
    """``(train, sample)``: a training frame and a function drawing ``n`` similar rows."""
    import pandas as pd

    names = [f"f{i}" for i in range(N_FEATURES)]
    rng = np.random.default_rng(seed)
    if datasets is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from adbench import load

        X, y = load(datasets, "letter")
        if X.shape[1] != N_FEATURES:
            raise SystemExit(f"letter has {X.shape[1]} columns, expected {N_FEATURES}")
        normal = X[y == 0]
        scale = 0.25 * normal.std(axis=0) + 1e-3

        def sample(n: int) -> np.ndarray:
            picks = normal[rng.integers(0, len(normal), size=n)]
            return picks + rng.normal(size=(n, N_FEATURES)) * scale

        return pd.DataFrame(normal, columns=names), sample, "ADBench letter (normal rows)"
    mixing = rng.normal(size=(8, N_FEATURES))

    def sample(n: int) -> np.ndarray:
        latent = rng.normal(size=(n, mixing.shape[0]))
        return latent @ mixing + rng.normal(scale=0.3, size=(n, N_FEATURES))

    return pd.DataFrame(sample(TRAIN_ROWS), columns=names), sample, "generated"


def build(workdir: Path, datasets: Path | None, rows: int, seed: int, epochs: int) -> dict:
    """Fit and export the model, save its torch form, write the CSV and Parquet inputs."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from anomtune import AutoencoderDetector
    from anomtune.data import table_from_frame
    from anomtune.export import export_model
    from anomtune.model import AnomalyModel
    from anomtune.persist import save_model
    from anomtune.preprocess import InputEncoder

    train, sample, source = training_rows(datasets, seed)
    table = table_from_frame(train)
    pre = InputEncoder(table.schema).fit(table.features)
    detector = AutoencoderDetector(epochs=epochs, device="cpu", random_state=seed)
    detector.fit(pre.encode(table.features))
    onnx_path = workdir / "model.onnx"
    export_model(AnomalyModel(pre, detector), table.features.iloc[:512], onnx_path)
    save_model(AnomalyModel(pre, detector), workdir / "torch_model")

    csv_path, parquet_path = workdir / "big.csv", workdir / "big.parquet"
    names = list(train.columns)
    schema = pa.schema([(n, pa.float64()) for n in names])
    with (
        pacsv.CSVWriter(str(csv_path), schema) as cw,
        pq.ParquetWriter(str(parquet_path), schema) as pw,
    ):
        for start in range(0, rows, WRITE_ROWS):
            n = min(WRITE_ROWS, rows - start)
            block = np.round(sample(n), 5)
            part = pa.table({name: block[:, j] for j, name in enumerate(names)}, schema=schema)
            cw.write_table(part)
            pw.write_table(part)
    return {
        "onnx": onnx_path,
        "torch": workdir / "torch_model",
        "csv": csv_path,
        "parquet": parquet_path,
        "source": source,
        "training_rows": len(train),
    }


def baseline(model_dir: str, data: str, out: str, threads: int) -> None:
    """pandas ``read_csv``, the model's preprocessing and torch module, pandas ``to_csv``.

    Prints ``{"seconds": ...}`` on stderr: the time from reading to written
    scores, without imports and model loading.
    """
    import pandas as pd
    import torch

    from anomtune.persist import load_model

    torch.set_num_threads(threads)
    model, _ = load_model(model_dir)
    detector, pre = model.detector, model.encoder
    start = time.perf_counter()
    frame = pd.read_csv(data)
    X = torch.from_numpy(pre.encode(frame))
    with torch.no_grad():
        score, _ = detector.module_.eval()(X)
    score = score.numpy()
    pd.DataFrame(
        {
            "row": np.arange(1, len(score) + 1),
            "score": score,
            "is_anomaly": (score > detector.threshold_).astype(np.int8),
        }
    ).to_csv(out, index=False)
    print(json.dumps({"seconds": time.perf_counter() - start}), file=sys.stderr)


def command(name: str, paths: dict, out: Path, threads: int) -> list[str]:
    if name == "pandas_torch":
        return [
            sys.executable,
            str(Path(__file__).resolve()),
            "--run-baseline",
            str(paths["torch"]),
            str(paths["csv"]),
            str(out),
            "--threads",
            str(threads),
        ]
    data = paths["parquet" if name == "anomtune_parquet" else "csv"]
    return [
        sys.executable,
        "-m",
        "anomtune",
        "score",
        str(paths["onnx"]),
        str(data),
        "-o",
        str(out),
        "--quiet",
        "--json",
        "--threads",
        str(threads),
    ]


# Runs the command given as its arguments and prints the command's wall time,
# CPU time and peak resident memory as JSON. The command is started from this
# small interpreter, not from the benchmark's: Linux counts the memory of the
# process a child was forked from in the child's peak (``ru_maxrss``).
LAUNCHER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps({
    "seconds": time.perf_counter() - start,
    "code": os.waitstatus_to_exitcode(status),
    "cpu": usage.ru_utime + usage.ru_stime,
    "maxrss_kib": usage.ru_maxrss,
}))
"""


def run_child(argv: list[str]) -> tuple[float, float, float, float]:
    """Wall seconds, CPU seconds (user + system), peak resident MB and the
    seconds of the data path (the ``seconds`` the child prints as JSON on
    stderr) of one child."""
    with tempfile.TemporaryFile() as err:
        done = subprocess.run(
            [sys.executable, "-c", LAUNCHER, *argv], stdout=subprocess.PIPE, stderr=err
        )
        err.seek(0)
        message = err.read().decode(errors="replace")
    report = json.loads(done.stdout) if done.returncode == 0 else {"code": done.returncode}
    if report["code"] != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({report['code']}):\n{message}")
    inner = json.loads(message)["seconds"]
    return report["seconds"], report["cpu"], report["maxrss_kib"] / 1024, inner


def agreement(a: Path, b: Path) -> str:
    """How closely two score files agree."""
    import pandas as pd

    x, y = pd.read_csv(a), pd.read_csv(b)
    if len(x) != len(y) or x["row"].tolist() != y["row"].tolist():
        return "row counts or ids differ"
    rel = np.abs(x["score"] - y["score"]) / np.maximum(np.abs(y["score"]), 1e-6)
    flips = int((x["is_anomaly"] != y["is_anomaly"]).sum())
    return f"largest relative score difference {rel.max():.2g}, {flips} label flip(s)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "datasets", nargs="?", type=Path, help="shared datasets folder (train on letter)"
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime and torch threads")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep the model and data files here")
    parser.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV to write")
    # Internal: the baseline's child process.
    parser.add_argument("--run-baseline", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_baseline:
        baseline(*args.run_baseline, threads=args.threads)
        return 0

    warnings.filterwarnings("ignore")
    import onnxruntime as ort
    import pandas as pd
    import pyarrow as pa
    import torch

    import anomtune

    versions = {
        "anomtune": anomtune.__version__,
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "pyarrow": pa.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
    }
    machine = machine_info(versions)
    print(machine_line(machine, versions))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="anomtune-scoring-csv-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        paths = build(workdir, args.datasets, args.rows, args.seed, args.epochs)
        sizes = {k: paths[k].stat().st_size / 1e6 for k in ("csv", "parquet")}
        print(
            f"model trained on {paths['training_rows']} rows ({paths['source']}); "
            f"{args.rows:,} rows x {N_FEATURES} columns: CSV {sizes['csv']:.0f} MB, "
            f"Parquet {sizes['parquet']:.0f} MB (built in {time.perf_counter() - start:.0f} s)"
        )
        times = {name: [] for name in args.only}
        peaks = {name: [] for name in args.only}
        cpus = {name: [] for name in args.only}
        inners = {name: [] for name in args.only}
        loads = []
        outs = {name: workdir / f"out_{name}.csv" for name in args.only}
        for rep in range(args.repeats):
            for name in args.only:
                loads.append(os.getloadavg()[0])
                seconds, cpu, peak, inner = run_child(
                    command(name, paths, outs[name], args.threads)
                )
                loads.append(os.getloadavg()[0])
                times[name].append(seconds)
                peaks[name].append(peak)
                cpus[name].append(cpu)
                inners[name].append(inner)
                print(
                    f"  round {rep + 1} {name:<17} {seconds:6.2f} s  data path {inner:6.2f} s  "
                    f"cpu {cpu:6.2f} s  "
                    f"{peak:6.0f} MB  "
                    f"load {loads[-1]:.2f}",
                    flush=True,
                )
            if rep == 0 and "pandas_torch" in outs:
                for name in args.only:
                    if name != "pandas_torch":
                        print(
                            f"  {name} vs pandas_torch: "
                            f"{agreement(outs[name], outs['pandas_torch'])}"
                        )
        med = {
            key: {name: statistics.median(values[name]) for name in args.only}
            for key, values in (("wall", times), ("cpu", cpus), ("data", inners), ("peak", peaks))
        }

        def ratio(key: str, name: str) -> float | None:
            if "pandas_torch" not in args.only:
                return None
            return med[key]["pandas_torch"] / med[key][name]

        header = (
            f"\n{'implementation':<17} {'input':<8} {'wall s':>7} {'rows/s':>9} {'cpu s':>6} "
            f"{'data s':>7} {'peak MB':>8} {'x wall':>7} {'x cpu':>6} {'x data':>7}"
        )
        print(header)
        print("-" * (len(header) - 1))
        out_rows = []
        for name in args.only:
            kind = "parquet" if name == "anomtune_parquet" else "csv"
            wall = med["wall"][name]
            ratios = [ratio(key, name) for key in ("wall", "cpu", "data")]
            print(
                f"{name:<17} {kind:<8} {wall:7.2f} {args.rows / wall:9,.0f} "
                f"{med['cpu'][name]:6.2f} {med['data'][name]:7.2f} {med['peak'][name]:8.0f} "
                + " ".join(
                    f"{(f'{r:.2f}' if r else '-'):>{w}}"
                    for r, w in zip(ratios, (7, 6, 7), strict=True)
                )
            )
            out_rows.append(
                {
                    "implementation": name,
                    "input": kind,
                    "rows": args.rows,
                    "input_mb": f"{sizes[kind]:.0f}",
                    "runs": len(times[name]),
                    "median_s": f"{wall:.3f}",
                    "min_s": f"{min(times[name]):.3f}",
                    "max_s": f"{max(times[name]):.3f}",
                    "median_cpu_s": f"{med['cpu'][name]:.3f}",
                    "median_data_path_s": f"{med['data'][name]:.3f}",
                    "rows_per_s": f"{args.rows / wall:.0f}",
                    "median_peak_mb": f"{med['peak'][name]:.0f}",
                    "max_peak_mb": f"{max(peaks[name]):.0f}",
                    "speedup_wall": f"{ratios[0]:.2f}" if ratios[0] else "",
                    "speedup_cpu": f"{ratios[1]:.2f}" if ratios[1] else "",
                    "speedup_data_path": f"{ratios[2]:.2f}" if ratios[2] else "",
                    "training_rows": paths["source"],
                    **machine,
                    "load_1min_min": f"{min(loads):.2f}",
                    "load_1min_max": f"{max(loads):.2f}",
                }
            )
        print(f"load average (1 min) during the runs: {min(loads):.2f} to {max(loads):.2f}")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    write_rows(args.out, COLUMNS, out_rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
