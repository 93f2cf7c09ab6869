"""Scoring speed: the exported ONNX graph under onnxruntime against torch eager.

For each feature count, the default detector (64-32 hidden, latent 16, batch
norm, dropout 0.2) is fitted for a couple of epochs on seeded random rows of
an all-numeric table (training quality does not matter here) and exported
with ``anomtune.export.export_model``, which is what ``anomtune export``
and ``tune --register`` write. Then, with 1 and 2 threads, it times:

- latency at batch 1 (median and p99 over ``--calls`` calls, after warm-up);
- throughput (rows/s, from the median call time) at batch 4,096 and 65,536.

What each implementation includes:

``ort``
    ``Scorer.session.run`` on prepared float32 feeds, one call on one thread:
    the exported graph (NaN imputation, scaling, the autoencoder, squared
    errors, their mean as the score, the per-column errors and the
    threshold).
``ort_sliced``
    ``Scorer.run`` on the same feeds, what ``Scorer.score`` does: the session
    called on slices of ``Scorer.slice_rows`` rows (4,096 at 20 features,
    2,048 at 100, 512 at 500), the outputs written into whole-batch arrays;
    with 2 threads and at least 4 slices, the slices are scored side by
    side. Batches larger than a slice only.
``ort_intra``
    The same slices one after another on a session whose intra-op pool
    splits each operator over the threads (spinning off): how ``Scorer`` used
    two threads before it scored slices side by side. Two threads only.
``scorer``
    ``Scorer.score(DataFrame)``, what users call: reading the columns into
    the feeds (with the numeric checks), the sliced session calls and the
    label. Large batches only.
``torch_graph``
    The module that export traces (``anomtune.export._graph_module``) in
    eager mode under ``torch.no_grad()``, float32, one call: the same
    preprocessing and the same three outputs as the graph.
``torch_sliced``
    ``torch_graph`` on the same slices, outputs written into whole-batch
    arrays (batches larger than a slice only): whether slicing alone
    explains the large-batch gap.
``torch``
    ``detector.module_`` alone on the raw matrix (scaling, autoencoder,
    squared errors, score): the plain model, without imputation and
    threshold.

The speed-ups printed are torch time over onnxruntime time, from medians:
``torch_graph`` over ``ort_sliced`` when the batch is larger than a slice
and over ``ort`` otherwise (what ``Scorer`` runs), ``torch_sliced`` over
``ort_sliced``, and ``torch`` over the same onnxruntime figure. The
implementations take turns in rounds (a pause, then a block of warm-up and
timed calls) so that a busy spell of the machine hits all of them.

    python benchmarks/scoring.py
    python benchmarks/scoring.py --features 32 --threads 1 --calls 500
    python benchmarks/scoring.py --features 100 --threads 2 --busy 1 --out busy.csv
    python benchmarks/scoring.py ../shared/datasets --part csv      # scoring_csv.py
    python benchmarks/scoring.py ../shared/datasets --part server   # load.py
    python benchmarks/scoring.py ../shared/datasets --part dask     # scoring_dask.py

``--busy N`` keeps N cores busy (one Python busy loop per process) while
measuring: scoring on cores it shares, as a server does with its own
request handling or a machine with other jobs.
"""

from __future__ import annotations

import argparse
import atexit
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import torch
from machine import machine_info, machine_line, write_rows

import anomtune
from anomtune import AutoencoderDetector
from anomtune.data import table_from_frame
from anomtune.export import _graph_module, export_model
from anomtune.model import AnomalyModel
from anomtune.preprocess import InputEncoder
from anomtune.scoring import Scorer

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "scoring.csv"
TRAIN_ROWS = 2000
LATENCY_ROUNDS = 4
# Seconds of idle time before each block of calls (see time_calls).
PAUSE = 0.05
# (rounds, timed calls per round) of each implementation, by batch size;
# other batch sizes get (3, 2).
THROUGHPUT_CALLS = {4096: (4, 5), 65536: (3, 2)}
COLUMNS = [
    "features",
    "threads",
    "batch",
    "implementation",
    "calls",
    "median_us",
    "p99_us",
    "rows_per_s",
    "onnxruntime",
    "torch",
    "anomtune",
    "numpy",
    "python",
    "cpu_count",
    "cpu",
    "load_1min",
    "busy_processes",
    "date",
]
NAMES = ("ort", "ort_sliced", "ort_intra", "scorer", "torch_graph", "torch_sliced", "torch")
LABELS = {
    "ort": "onnxruntime, exported graph, one session.run",
    "ort_sliced": "Scorer.run: slices of Scorer.slice_rows rows, side by side on 2 threads",
    "ort_intra": "the slices one after another, each operator split over the threads",
    "scorer": "Scorer.score(DataFrame)",
    "torch_graph": "torch eager, the module export traces, one call",
    "torch_sliced": "torch_graph on the same slices",
    "torch": "torch eager, detector.module_ alone",
}


def start_busy(n: int) -> list:
    """``n`` processes that each spin one core until :func:`stop_busy`."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    atexit.register(stop_busy, procs)
    return procs


def stop_busy(procs: list) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def rows(rng: np.random.Generator, n_rows: int, mixing: np.ndarray) -> np.ndarray:
    """Correlated rows: a few latent factors mixed into the features, plus noise."""
    latent = rng.normal(size=(n_rows, mixing.shape[0]))
    noise = rng.normal(scale=0.3, size=(n_rows, mixing.shape[1]))
    return (latent @ mixing + noise).astype(np.float32)


def build(n_features: int, seed: int, epochs: int, max_batch: int) -> dict:
    """Fit one model and export it; return it with rows to score."""
    rng = np.random.default_rng([seed, n_features])
    mixing = rng.normal(size=(8, n_features))
    names = [f"f{i}" for i in range(n_features)]
    train = pd.DataFrame(rows(rng, TRAIN_ROWS, mixing), columns=names)
    table = table_from_frame(train)
    pre = InputEncoder(table.schema).fit(table.features)
    detector = AutoencoderDetector(epochs=epochs, device="cpu", random_state=seed)
    detector.fit(pre.encode(table.features))
    start = time.perf_counter()
    graph, _ = export_model(AnomalyModel(pre, detector), table.features.iloc[:256])
    export_seconds = time.perf_counter() - start
    frame = pd.DataFrame(rows(rng, max_batch, mixing), columns=names)
    graph_module, _ = _graph_module(AnomalyModel(pre, detector))
    return {
        "detector": detector,
        "graph_module": graph_module,
        "graph": graph,
        "frame": frame,
        "export_seconds": export_seconds,
    }


def intra_op_scorer(graph: bytes, threads: int) -> Scorer:
    """A Scorer whose session splits each operator over ``threads`` threads.

    It scores slices one after the other, each call using the session's
    intra-op pool with thread spinning off: how ``Scorer`` used its threads
    before it scored slices side by side.
    """
    scorer = Scorer(graph, threads=1)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    scorer.session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
    return scorer


def callables(model: dict, threads: int, batch: int) -> dict:
    """Zero-argument calls, one per implementation, scoring ``batch`` rows."""
    scorer = Scorer(model["graph"], threads=threads)
    module = model["detector"].module_.eval()
    graph = model["graph_module"].eval()
    if batch == 1:
        # Distinct single rows, cycled, so that no call reuses the previous input.
        frames = [model["frame"].iloc[i : i + 1] for i in range(64)]
    else:
        frames = [model["frame"].iloc[:batch]]
    feeds = [scorer.feeds(f) for f in frames]
    tensors = [torch.from_numpy(f["numeric"]) for f in feeds]

    def cycle(items, call):
        state = {"i": 0}

        def run():
            i = state["i"]
            state["i"] = (i + 1) % len(items)
            return call(items[i])

        return run

    calls = {
        "ort": cycle(feeds, lambda f: scorer.session.run(None, f)),
        "torch_graph": cycle(tensors, graph),
        "torch": cycle(tensors, module),
    }
    if batch > scorer.slice_rows:
        calls["ort_sliced"] = cycle(feeds, scorer.run)
        if threads > 1:
            calls["ort_intra"] = cycle(feeds, intra_op_scorer(model["graph"], threads).run)
        rows = scorer.slice_rows
        calls["torch_sliced"] = cycle(tensors, lambda t: torch_in_slices(graph, t, rows))
    if batch > 1:
        calls["scorer"] = cycle(frames, scorer.score)
    return calls


def torch_in_slices(module, numeric: torch.Tensor, rows: int) -> tuple:
    """The module's outputs for ``numeric``, computed ``rows`` rows at a time."""
    n = len(numeric)
    score = torch.empty(n)
    errors = torch.empty((n, numeric.shape[1]))
    label = torch.empty(n, dtype=torch.bool)
    for start in range(0, n, rows):
        stop = start + rows
        s, e, a = module(numeric[start:stop])
        score[start:stop], errors[start:stop], label[start:stop] = s, e, a
    return score, errors, label


def time_calls(calls: dict, rounds: int, per_round: int, warmup: int) -> dict:
    """Seconds per call for each implementation.

    Each round runs every implementation in turn, as a block of untimed
    warm-up calls then ``per_round`` timed calls, after a pause of
    :data:`PAUSE` seconds. The thread pools of onnxruntime sessions and of
    torch keep spinning for a moment after a call; without the pause, a pool
    still spinning from the previous block takes a core from the next one
    (with 2 threads on 2 cores that halves the next session's throughput).
    """
    times = {name: [] for name in calls}
    with torch.no_grad():
        for _ in range(rounds):
            for name, call in calls.items():
                time.sleep(PAUSE)
                for _ in range(warmup):
                    call()
                out = times[name]
                for _ in range(per_round):
                    start = time.perf_counter()
                    call()
                    out.append(time.perf_counter() - start)
    return times


def summarise(seconds: list[float], batch: int) -> dict:
    median = statistics.median(seconds)
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(np.ceil(0.99 * len(ordered))) - 1)]
    return {
        "calls": len(seconds),
        "median_us": median * 1e6,
        "p99_us": p99 * 1e6,
        "rows_per_s": batch / median,
    }


def measure(model: dict, threads: int, batch: int, n_calls: int) -> dict:
    torch.set_num_threads(threads)
    calls = callables(model, threads, batch)
    if batch == 1:
        rounds, per_round, warmup = LATENCY_ROUNDS, max(1, n_calls // LATENCY_ROUNDS), 50
    else:
        rounds, per_round = THROUGHPUT_CALLS.get(batch, (3, 2))
        warmup = 1
    times = time_calls(calls, rounds, per_round, warmup)
    return {name: summarise(t, batch) for name, t in times.items()}


def fmt_ratio(torch_stats: dict, ort_stats: dict) -> str:
    return f"{torch_stats['median_us'] / ort_stats['median_us']:.1f}x"


def speedups(stats: dict) -> list[str]:
    """torch_graph, torch_sliced and torch time over what Scorer runs (see the docstring)."""
    ort_best = stats.get("ort_sliced", stats["ort"])
    sliced = fmt_ratio(stats["torch_sliced"], stats["ort_sliced"]) if "ort_sliced" in stats else ""
    return [
        fmt_ratio(stats["torch_graph"], ort_best),
        sliced,
        fmt_ratio(stats["torch"], ort_best),
    ]


PARTS = ("model", "csv", "server", "dask")


def main(argv: list[str] | None = None) -> int:
    # --part csv, --part server and --part dask hand the other arguments to
    # benchmarks/scoring_csv.py, benchmarks/load.py and benchmarks/scoring_dask.py.
    part = argparse.ArgumentParser(add_help=False)
    part.add_argument("--part", choices=PARTS, default="model")
    chosen, rest = part.parse_known_args(argv)
    if chosen.part != "model":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        if chosen.part == "csv":
            from scoring_csv import main as other_main
        elif chosen.part == "dask":
            from scoring_dask import main as other_main
        else:
            from load import main as other_main
        return other_main(rest)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part",
        choices=PARTS,
        default="model",
        help="model: this benchmark; csv: anomtune score end to end on a file "
        "(benchmarks/scoring_csv.py); server: anomtune serve's latency and load test "
        "(benchmarks/load.py); dask: a partitioned dataset on a local Dask cluster "
        "(benchmarks/scoring_dask.py); those three take the other arguments",
    )
    parser.add_argument("--features", nargs="+", type=int, default=[20, 100, 500])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batches", nargs="+", type=int, default=[4096, 65536])
    parser.add_argument("--calls", type=int, default=2000, help="batch-1 calls per timing")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV to write")
    parser.add_argument(
        "--busy",
        type=int,
        default=0,
        help="processes that each keep one core busy while measuring (scoring on shared cores)",
    )
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore")
    ort.set_default_logger_severity(3)
    versions = {
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "anomtune": anomtune.__version__,
        "numpy": np.__version__,
    }
    machine = machine_info(versions)
    print(machine_line(machine, versions))
    for key, label in LABELS.items():
        print(f"  {key:<12} {label}")
    widths = {name: max(9, len(name)) for name in NAMES}
    ratio_names = ("graph/ort", "sliced/ort", "plain/ort")
    header = (
        f"{'features':>8} {'threads':>7} {'batch':>6} {'measure':<10} "
        + " ".join(f"{name:>{widths[name]}}" for name in NAMES)
        + " "
        + " ".join(f"{name:>10}" for name in ratio_names)
        + f" {'load':>5}"
    )
    out_rows = []
    busy = start_busy(args.busy)
    for n_features in args.features:
        model = build(n_features, args.seed, args.epochs, max(args.batches))
        print(f"\n{n_features} features: exported in {model['export_seconds']:.1f} s")
        print(header)
        print("-" * len(header))
        for threads in args.threads:
            for batch in [1, *args.batches]:
                load_before = os.getloadavg()[0]
                stats = measure(model, threads, batch, args.calls)
                load = max(load_before, os.getloadavg()[0])
                lines = (
                    [("median us", "median_us", "{:.1f}"), ("p99 us", "p99_us", "{:.1f}")]
                    if batch == 1
                    else [("rows/s", "rows_per_s", "{:.3g}")]
                )
                for label, key, spec in lines:
                    cells = " ".join(
                        f"{spec.format(stats[name][key]) if name in stats else '-':>{widths[name]}}"
                        for name in NAMES
                    )
                    ratios = ["", "", ""]
                    if key != "p99_us":
                        ratios = speedups(stats)
                    print(
                        f"{n_features:>8} {threads:>7} {batch:>6} {label:<10} {cells} "
                        + " ".join(f"{r:>10}" for r in ratios)
                        + f" {load:>5.2f}",
                        flush=True,
                    )
                for name, s in stats.items():
                    out_rows.append(
                        {
                            "features": n_features,
                            "threads": threads,
                            "batch": batch,
                            "implementation": name,
                            "calls": s["calls"],
                            "median_us": f"{s['median_us']:.2f}",
                            "p99_us": f"{s['p99_us']:.2f}",
                            "rows_per_s": f"{s['rows_per_s']:.0f}",
                            **machine,
                            "load_1min": f"{load:.2f}",
                            "busy_processes": args.busy,
                        }
                    )
    stop_busy(busy)
    write_rows(args.out, COLUMNS, out_rows)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
