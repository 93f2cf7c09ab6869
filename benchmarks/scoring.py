"""Scoring speed: the exported ONNX graph under onnxruntime against torch eager.

For each feature count, the default detector (64-32 hidden, latent 16, batch
norm, dropout 0.2) is fitted for a couple of epochs on seeded random rows of
an all-numeric table (training quality does not matter here) and exported
with ``anomtune.export.export_model``. Then, with 1 and 2 threads, it times:

- latency at batch 1 (median and p99 over ``--calls`` calls, after warm-up);
- throughput (rows/s, from the median call time) at batch 4,096 and 65,536.

What each implementation includes:

``ort``
    ``Scorer.session.run`` on prepared float32 feeds: the shipped graph, that
    is NaN imputation, per-column encoding, scaling, the autoencoder, squared
    errors, their mean (score), regrouping of the errors into table columns
    (a matrix product with the column membership matrix) and the threshold.
``ort_chunks``
    The shipped graph's session called on consecutive slices of
    :data:`CHUNK` rows, the outputs copied into arrays for the whole batch.
    Batches larger than :data:`CHUNK` only.
``ort_lean``
    The same call as ``ort`` on a graph exported (with export's own settings)
    from a leaner module that computes the same outputs: NaN imputation as
    one ``Where``, then ``module_`` and the threshold; no per-column encoding
    and no regrouping, which are identities when every column is numeric. It
    shows what the shipped graph pays for those two steps.
``lean_chunks``
    ``ort_chunks`` on the lean graph: both changes together.
``scorer``
    ``Scorer.score(DataFrame)``, what users call: reading the columns into
    the feeds (with the numeric checks), the session call and the label cast.
    Large batches only.
``torch``
    ``detector.module_`` in eager mode under ``torch.no_grad()``, float32, on
    the raw numeric matrix (which, for an all-numeric table without missing
    values, is also the encoded matrix): scaling, the autoencoder, squared
    errors and their mean. No imputation, no regrouping, no threshold.
``torch_graph``
    The module that export traces (``anomtune.export._graph_module``) in
    eager mode: exactly the shipped graph's computation.

The speed-ups printed are ``torch`` and ``torch_graph`` time over ``ort``
time, from medians. The implementations take turns in rounds (a pause, then
a block of warm-up and timed calls) so that a busy spell of the machine hits
all of them.

    python benchmarks/scoring.py
    python benchmarks/scoring.py --features 32 --threads 1 --calls 500
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import torch
from torch import nn

import anomtune
from anomtune import AutoencoderDetector
from anomtune.data import table_from_frame
from anomtune.export import _export_core, _graph_module, export_model
from anomtune.preprocess import Preprocessor
from anomtune.scoring import Scorer

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "scoring.csv"
TRAIN_ROWS = 2000
LATENCY_ROUNDS = 4
# Seconds of idle time before each block of calls (see time_calls).
PAUSE = 0.05
# Rows per session call of ``ort_chunks``: small enough that a layer's
# activations stay in the CPU cache.
CHUNK = 4096
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
    "date",
]
NAMES = ("ort", "ort_chunks", "ort_lean", "lean_chunks", "scorer", "torch", "torch_graph")
LABELS = {
    "ort": "onnxruntime, shipped graph (session.run)",
    "ort_lean": "onnxruntime, graph without per-column encoding and regrouping",
    "ort_chunks": f"onnxruntime, shipped graph, session.run on {CHUNK}-row slices",
    "lean_chunks": f"onnxruntime, lean graph, session.run on {CHUNK}-row slices",
    "scorer": "Scorer.score(DataFrame)",
    "torch": "torch eager, detector.module_",
    "torch_graph": "torch eager, the module export traces",
}


class LeanGraph(nn.Module):
    """Imputation, ``module_`` and the threshold: the shipped outputs for an
    all-numeric table, without the per-column encoding and regrouping."""

    def __init__(self, medians: np.ndarray, scorer: nn.Module, threshold: float):
        super().__init__()
        self.register_buffer("medians", torch.as_tensor(medians, dtype=torch.float32))
        self.scorer = scorer
        self.threshold = threshold

    def forward(self, numeric):
        x = torch.where(torch.isnan(numeric), self.medians, numeric)
        score, errors = self.scorer(x)
        return score, errors, score > self.threshold


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def rows(rng: np.random.Generator, n_rows: int, mixing: np.ndarray) -> np.ndarray:
    """Correlated rows: a few latent factors mixed into the features, plus noise."""
    latent = rng.normal(size=(n_rows, mixing.shape[0]))
    noise = rng.normal(scale=0.3, size=(n_rows, mixing.shape[1]))
    return (latent @ mixing + noise).astype(np.float32)


def build(n_features: int, seed: int, epochs: int, max_batch: int) -> dict:
    """Fit one model, export its shipped and lean graphs; return them with rows to score."""
    rng = np.random.default_rng([seed, n_features])
    mixing = rng.normal(size=(8, n_features))
    names = [f"f{i}" for i in range(n_features)]
    train = pd.DataFrame(rows(rng, TRAIN_ROWS, mixing), columns=names)
    table = table_from_frame(train)
    pre = Preprocessor(table.schema).fit(table.features)
    detector = AutoencoderDetector(epochs=epochs, device="cpu", random_state=seed)
    detector.fit(pre.transform(table.features))
    shipped, _ = export_model(detector, pre, table.features.iloc[:256])

    lean_module = LeanGraph(
        np.asarray([pre.medians_[c] for c in pre.schema_.numeric], dtype=np.float32),
        detector.module_,
        float(detector.threshold_),
    ).eval()
    lean = _export_core(lean_module, False, n_features, 0)
    meta = onnx.load_from_string(shipped).metadata_props
    del lean.metadata_props[:]
    lean.metadata_props.extend(meta)

    frame = pd.DataFrame(rows(rng, max_batch, mixing), columns=names)
    graph_module, _ = _graph_module(detector, pre)
    return {
        "detector": detector,
        "graph_module": graph_module,
        "shipped": shipped,
        "lean": lean.SerializeToString(),
        "frame": frame,
    }


def lean_difference(model: dict) -> float:
    """Largest absolute difference between the lean and the shipped graph's outputs."""
    a, b = Scorer(model["shipped"]), Scorer(model["lean"])
    feeds = a.feeds(model["frame"].iloc[:2048])
    return max(
        float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))))
        for x, y in zip(a.session.run(None, feeds), b.session.run(None, feeds), strict=True)
    )


def callables(model: dict, threads: int, batch: int) -> dict:
    """Zero-argument calls, one per implementation, scoring ``batch`` rows."""
    shipped = Scorer(model["shipped"], threads=threads)
    lean = Scorer(model["lean"], threads=threads)
    module = model["detector"].module_.eval()
    graph = model["graph_module"].eval()
    if batch == 1:
        # Distinct single rows, cycled, so that no call reuses the previous input.
        frames = [model["frame"].iloc[i : i + 1] for i in range(64)]
    else:
        frames = [model["frame"].iloc[:batch]]
    feeds = [shipped.feeds(f) for f in frames]
    tensors = [torch.from_numpy(f["numeric"]) for f in feeds]

    def cycle(items, call):
        state = {"i": 0}

        def run():
            i = state["i"]
            state["i"] = (i + 1) % len(items)
            return call(items[i])

        return run

    calls = {
        "ort": cycle(feeds, lambda f: shipped.session.run(None, f)),
        "ort_lean": cycle(feeds, lambda f: lean.session.run(None, f)),
        "torch": cycle(tensors, module),
        "torch_graph": cycle(tensors, graph),
    }
    if batch > CHUNK:
        calls["ort_chunks"] = cycle(feeds, lambda f: run_in_chunks(shipped.session, f["numeric"]))
        calls["lean_chunks"] = cycle(feeds, lambda f: run_in_chunks(lean.session, f["numeric"]))
    if batch > 1:
        calls["scorer"] = cycle(frames, shipped.score)
    return calls


def run_in_chunks(session, numeric: np.ndarray) -> tuple:
    """The graph's outputs for ``numeric``, computed :data:`CHUNK` rows at a time."""
    n = len(numeric)
    score = np.empty(n, dtype=np.float32)
    errors = np.empty((n, numeric.shape[1]), dtype=np.float32)
    label = np.empty(n, dtype=bool)
    for start in range(0, n, CHUNK):
        stop = start + CHUNK
        s, e, a = session.run(None, {"numeric": numeric[start:stop]})
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", nargs="+", type=int, default=[20, 100, 500])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batches", nargs="+", type=int, default=[4096, 65536])
    parser.add_argument("--calls", type=int, default=2000, help="batch-1 calls per timing")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV to write")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore")
    ort.set_default_logger_severity(3)
    machine = {
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "anomtune": anomtune.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_name(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    print(
        f"onnxruntime {machine['onnxruntime']}, torch {machine['torch']}, "
        f"anomtune {machine['anomtune']}, python {machine['python']}; "
        f"{machine['cpu_count']} CPUs ({machine['cpu']}); {machine['date']}; "
        f"load {os.getloadavg()[0]:.2f}"
    )
    for key, label in LABELS.items():
        print(f"  {key:<12} {label}")
    header = (
        f"{'features':>8} {'threads':>7} {'batch':>6} {'measure':<10} {'ort':>9} "
        f"{'ort_chunks':>10} {'ort_lean':>9} {'lean_chunks':>11} {'scorer':>9} {'torch':>9} "
        f"{'torch_graph':>11} "
        f"{'torch/ort':>9} {'graph/ort':>9} {'load':>5}"
    )
    out_rows = []
    for n_features in args.features:
        model = build(n_features, args.seed, args.epochs, max(args.batches))
        print(
            f"\n{n_features} features: lean and shipped graph outputs differ by at most "
            f"{lean_difference(model):.2g}"
        )
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
                    cells = [
                        spec.format(stats[name][key]) if name in stats else "-" for name in NAMES
                    ]
                    ratios = ["", ""]
                    if key != "p99_us":
                        ratios = [
                            fmt_ratio(stats["torch"], stats["ort"]),
                            fmt_ratio(stats["torch_graph"], stats["ort"]),
                        ]
                    print(
                        f"{n_features:>8} {threads:>7} {batch:>6} {label:<10} {cells[0]:>9} "
                        f"{cells[1]:>10} {cells[2]:>9} {cells[3]:>11} {cells[4]:>9} {cells[5]:>9} "
                        f"{cells[6]:>11} "
                        f"{ratios[0]:>9} {ratios[1]:>9} {load:>5.2f}",
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
                        }
                    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(out_rows)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
