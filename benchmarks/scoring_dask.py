"""A partitioned dataset scored on a local Dask cluster against one ``anomtune score``.

The model and rows are those of ``benchmarks/scoring_csv.py``: the default
detector (3 epochs) fitted on 32 numeric features (the normal rows of ADBench
``letter`` when the shared datasets folder is given, else correlated random
rows) and exported to ONNX; ``--rows`` rows (2,000,000 by default) drawn like
them are written as ``--partitions`` Parquet files (8 by default, float64
columns) and, for the single-process baseline, as one Parquet file holding
all of them.

Each measured run is a fresh process (interpreter start and imports
included), timed by the wall clock:

``one_process``
    ``anomtune score MODEL.onnx all.parquet -o out.parquet --quiet --json``:
    one process over the same rows in one file.
``per_file``
    ``anomtune score`` on each partition file in turn, one process each
    (the figure is the sum).
``dask``
    ``anomtune score MODEL.onnx 'parts/*.parquet' --dask ADDRESS -o DIR
    --quiet --json`` against a cluster of ``--workers`` worker processes of one
    thread each on 127.0.0.1, started once by this script before the rounds
    (its start-up time is printed, not counted).
``dask_local``
    ``--dask local:N`` instead: the command starts and stops its own cluster
    of N worker processes, so the figure includes that.

"data s" is the span the command reports as ``seconds`` (from the first
read, or the first task submitted, to the last output in place). "cpu s" is
the CPU time (user plus system) of the command's process and the processes
it waited for; for ``dask``, plus that of the worker processes and of this
script's process, which runs the scheduler, over the run (``psutil`` and
``getrusage``). On a busy machine the CPU time is the steadier figure. The
implementations take turns, ``--repeats`` rounds; the table quotes medians
and each one's throughput relative to ``one_process`` (wall time). The
Dask outputs are checked against ``per_file``'s, file by file.

    python benchmarks/scoring_dask.py                     # generated rows
    python benchmarks/scoring_dask.py ../shared/datasets  # trained on letter
    python benchmarks/scoring.py ../shared/datasets --part dask
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line, write_rows
from scoring_csv import LAUNCHER, N_FEATURES, training_rows

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "scoring_dask.csv"
NAMES = ("one_process", "per_file", "dask", "dask_local")
COLUMNS = [
    "implementation",
    "workers",
    "partitions",
    "rows",
    "input_mb",
    "runs",
    "median_s",
    "min_s",
    "max_s",
    "median_data_s",
    "median_cpu_s",
    "rows_per_s",
    "x_one_process",
    "cluster_start_s",
    "training_rows",
    "anomtune",
    "dask",
    "distributed",
    "onnxruntime",
    "pyarrow",
    "python",
    "cpu_count",
    "cpu",
    "load_1min_min",
    "load_1min_max",
    "date",
    "command",
]


def build(workdir: Path, datasets: Path | None, rows: int, parts: int, seed: int, epochs: int):
    """Fit and export the model; write the partitions and the one whole file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from anomtune import AutoencoderDetector
    from anomtune.data import table_from_frame
    from anomtune.export import export_model
    from anomtune.model import AnomalyModel
    from anomtune.preprocess import InputEncoder

    train, sample, source = training_rows(datasets, seed)
    table = table_from_frame(train)
    encoder = InputEncoder(table.schema).fit(table.features)
    detector = AutoencoderDetector(epochs=epochs, device="cpu", random_state=seed)
    detector.fit(encoder.encode(table.features))
    onnx_path = workdir / "model.onnx"
    export_model(AnomalyModel(encoder, detector), table.features.iloc[:512], onnx_path)

    names = list(train.columns)
    schema = pa.schema([(n, pa.float64()) for n in names])
    part_dir = workdir / "parts"
    part_dir.mkdir(exist_ok=True)
    whole = workdir / "all.parquet"
    sizes = [rows // parts + (1 if i < rows % parts else 0) for i in range(parts)]
    with pq.ParquetWriter(str(whole), schema) as all_writer:
        for i, n in enumerate(sizes):
            block = np.round(sample(n), 5)
            part = pa.table({name: block[:, j] for j, name in enumerate(names)}, schema=schema)
            pq.write_table(part, part_dir / f"part-{i:03d}.parquet", row_group_size=200_000)
            all_writer.write_table(part, row_group_size=200_000)
    return {"onnx": onnx_path, "parts": part_dir, "whole": whole, "source": source}


def run_child(argv: list[str]) -> tuple[float, float, float]:
    """Wall seconds of one child, the ``seconds`` its ``--json`` summary reports,
    and its CPU seconds (user plus system, with those of the processes it
    started and waited for)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with tempfile.TemporaryFile() as err:
        done = subprocess.run(
            [sys.executable, "-c", LAUNCHER, *argv], stdout=subprocess.PIPE, stderr=err, env=env
        )
        err.seek(0)
        message = err.read().decode(errors="replace")
    report = json.loads(done.stdout) if done.returncode == 0 else {"code": done.returncode}
    if report["code"] != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({report['code']}):\n{message}")
    # The summary is the JSON object printed from the start of a line; Dask
    # may log lines around it.
    start = message.index("{\n") if message.startswith("{\n") else message.index("\n{\n") + 1
    summary, _ = json.JSONDecoder().raw_decode(message[start:])
    return report["seconds"], summary["seconds"], report["cpu"]


def _process_cpu() -> float:
    import psutil

    times = psutil.Process().cpu_times()
    return times.user + times.system


def cluster_cpu(client) -> float:
    """CPU seconds used so far by the cluster's worker processes and by this
    process, which runs the scheduler."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return sum(client.run(_process_cpu).values()) + usage.ru_utime + usage.ru_stime


def anomtune(*args) -> list[str]:
    return [sys.executable, "-m", "anomtune", "score", *map(str, args), "--quiet", "--json"]


def run_one(name: str, paths: dict, out: Path, client, workers: int):
    """``(wall, data, cpu)`` seconds of one run."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if name == "one_process":
        return run_child(anomtune(paths["onnx"], paths["whole"], "-o", out / "all.parquet"))
    if name == "per_file":
        totals = [0.0, 0.0, 0.0]
        for part in sorted(paths["parts"].iterdir()):
            one = run_child(anomtune(paths["onnx"], part, "-o", out / part.name))
            totals = [t + x for t, x in zip(totals, one, strict=True)]
        return tuple(totals)
    pattern = paths["parts"] / "*.parquet"
    if name == "dask_local":
        return run_child(anomtune(paths["onnx"], pattern, "--dask", f"local:{workers}", "-o", out))
    before = cluster_cpu(client)
    address = client.scheduler.address
    wall, data, cpu = run_child(anomtune(paths["onnx"], pattern, "--dask", address, "-o", out))
    return wall, data, cpu + cluster_cpu(client) - before


def same_outputs(a: Path, b: Path) -> str:
    import pyarrow.parquet as pq

    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return "different files"
    differ = [n for n in names if not pq.read_table(a / n).equals(pq.read_table(b / n))]
    return "identical" if not differ else f"{len(differ)} file(s) differ"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "datasets", nargs="?", type=Path, help="shared datasets folder (train on letter)"
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="training epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep the model and data files here")
    parser.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV to write")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore")
    import dask
    import distributed
    import onnxruntime as ort
    import pyarrow as pa

    import anomtune

    versions = {
        "anomtune": anomtune.__version__,
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "onnxruntime": ort.__version__,
        "pyarrow": pa.__version__,
    }
    command = " ".join(["python", "benchmarks/scoring_dask.py", *(argv or sys.argv[1:])])
    machine = machine_info(versions, command=command)
    print(machine_line(machine, versions))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="anomtune-scoring-dask-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = client = None
    try:
        start = time.perf_counter()
        paths = build(workdir, args.datasets, args.rows, args.partitions, args.seed, args.epochs)
        size_mb = sum(p.stat().st_size for p in paths["parts"].iterdir()) / 1e6
        print(
            f"{args.rows:,} rows x {N_FEATURES} columns in {args.partitions} Parquet files "
            f"({size_mb:.0f} MB; model trained on {paths['source']}; built in "
            f"{time.perf_counter() - start:.0f} s)"
        )
        cluster_start = None
        if "dask" in args.only:
            start = time.perf_counter()
            cluster = distributed.LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                env={"OMP_NUM_THREADS": "1"},
            )
            client = distributed.Client(cluster)
            client.wait_for_workers(args.workers)
            cluster_start = time.perf_counter() - start
            print(
                f"Dask cluster of {args.workers} worker processes at "
                f"{cluster.scheduler_address}: "
                f"started in {cluster_start:.1f} s"
            )
        walls = {name: [] for name in args.only}
        datas = {name: [] for name in args.only}
        cpus = {name: [] for name in args.only}
        loads = []
        outs = {name: workdir / f"out_{name}" for name in args.only}
        for rep in range(args.repeats):
            for name in args.only:
                loads.append(os.getloadavg()[0])
                wall, data, cpu = run_one(name, paths, outs[name], client, args.workers)
                loads.append(os.getloadavg()[0])
                walls[name].append(wall)
                datas[name].append(data)
                cpus[name].append(cpu)
                print(
                    f"  round {rep + 1} {name:<12} {wall:6.2f} s  data {data:6.2f} s  "
                    f"cpu {cpu:6.2f} s  {args.rows / wall:10,.0f} rows/s  load {loads[-1]:.2f}",
                    flush=True,
                )
            if rep == 0 and "per_file" in args.only:
                for name in ("dask", "dask_local"):
                    if name in args.only:
                        print(f"  {name} vs per_file: {same_outputs(outs[name], outs['per_file'])}")
        med = {name: statistics.median(walls[name]) for name in args.only}
        base = med.get("one_process")
        header = (
            f"\n{'implementation':<13} {'workers':>7} {'wall s':>7} {'data s':>7} "
            f"{'cpu s':>6} {'rows/s':>10} {'x one process':>13}"
        )
        print(header)
        print("-" * (len(header) - 1))
        out_rows = []
        for name in args.only:
            workers = args.workers if name.startswith("dask") else 1
            ratio = base / med[name] if base else None
            data = statistics.median(datas[name])
            cpu = statistics.median(cpus[name])
            print(
                f"{name:<13} {workers:>7} {med[name]:7.2f} {data:7.2f} {cpu:6.2f} "
                f"{args.rows / med[name]:10,.0f} {(f'{ratio:.2f}' if ratio else '-'):>13}"
            )
            out_rows.append(
                {
                    "implementation": name,
                    "workers": workers,
                    "partitions": 1 if name == "one_process" else args.partitions,
                    "rows": args.rows,
                    "input_mb": f"{size_mb:.0f}",
                    "runs": len(walls[name]),
                    "median_s": f"{med[name]:.3f}",
                    "min_s": f"{min(walls[name]):.3f}",
                    "max_s": f"{max(walls[name]):.3f}",
                    "median_data_s": f"{data:.3f}",
                    "median_cpu_s": f"{cpu:.3f}",
                    "rows_per_s": f"{args.rows / med[name]:.0f}",
                    "x_one_process": f"{ratio:.2f}" if ratio else "",
                    "cluster_start_s": f"{cluster_start:.2f}" if name == "dask" else "",
                    "training_rows": paths["source"],
                    **machine,
                    "load_1min_min": f"{min(loads):.2f}",
                    "load_1min_max": f"{max(loads):.2f}",
                }
            )
        print(f"load average (1 min) during the runs: {min(loads):.2f} to {max(loads):.2f}")
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    write_rows(args.out, COLUMNS, out_rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
