"""Load test and latency of ``anomtune serve`` on the loopback interface.

A detector with default parameters is fitted for a few epochs on an ADBench
data set from the shared datasets folder (``cardio`` by default; quality does
not matter here), exported to ONNX, and served by the real command,
``anomtune serve MODEL --host 127.0.0.1 --port FREE``, in a subprocess. A load
generator in this process then sends ``POST /invocations`` requests
(``dataframe_split`` JSON, the data set's own rows) over keep-alive
connections, one thread and one connection per client, and checks every
answer: status 200, one prediction per row, and the scores and flags that
``Scorer`` computes for those rows directly (a different answer counts as an
error).

Phases, in this order, after 500 warm-up requests:

``sequential``
    One client, one request at a time: the server's latency for one-row and
    100-row requests (``--sequential`` requests each) and its requests per
    second at that concurrency.
``concurrent``
    ``--clients`` clients (8) sharing ``--requests`` one-row requests (20,000)
    and ``--requests-100`` 100-row requests (4,000).

Latency is measured by the client from sending the request to reading the
whole answer, so it includes the client's own work (on the same 2 cores).
The server's CPU time per request (user plus system, from ``/proc/PID/stat``)
is reported too: unlike latency, it hardly depends on what else the machine
is doing. The server's resident memory (``VmRSS`` from ``/proc``) is read
after the warm-up and after every phase; its growth over the run must stay
under ``--rss-bound-mb`` (50). The script exits with status 1 if any request
failed or the bound was exceeded.

    python benchmarks/load.py ../shared/datasets
    python benchmarks/load.py ../shared/datasets --dataset pendigits --rounds 3

Writes ``benchmarks/results/load.csv`` (one row per round and phase).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import adbench

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "load.csv"
WARMUP = 500
COLUMNS = [
    "round",
    "phase",
    "clients",
    "rows_per_request",
    "requests",
    "errors",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "requests_per_s",
    "server_cpu_us",
    "rss_start_mb",
    "rss_end_mb",
    "load_1min",
    "dataset",
    "features",
    "server_threads",
    "event_loop",
    "http_parser",
    "anomtune",
    "onnxruntime",
    "uvicorn",
    "python",
    "cpu_count",
    "date",
]


# --------------------------------------------------------------------------- the model


def build_model(root: str, name: str, folder: Path, epochs: int) -> tuple[Path, np.ndarray]:
    """Fit and export a default detector on ``name``; return the ONNX path and the rows."""
    from anomtune.data import table_from_frame
    from anomtune.export import export_model
    from anomtune.pipeline import fit_detector, prepare

    X, y = adbench.load(root, name)
    frame = adbench.to_frame(X, y)
    prepared = prepare(table_from_frame(frame, label=adbench.LABEL), seed=0)
    detector = fit_detector(prepared, {"epochs": epochs}, seed=0)
    val = prepared.table.features.iloc[prepared.split.val]
    path = folder / f"{name}.onnx"
    export_model(prepared.model(detector), val, path)
    return path, X


# --------------------------------------------------------------------------- HTTP


class Connection:
    """A minimal HTTP/1.1 keep-alive client: it sends prepared request bytes and reads
    one answer (``Content-Length`` framing, which uvicorn uses for these answers)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        self.sock.sendall(request)
        buffer = self.buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            buffer += self._recv()
        head = buffer[:end].decode("latin-1")
        status = int(head[9:12])
        length = 0
        for line in head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-length":
                length = int(value)
        body_end = end + 4 + length
        while len(buffer) < body_end:
            buffer += self._recv()
        self.buffer = buffer[body_end:]
        return status, buffer[end + 4 : body_end]

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def post(body: bytes) -> bytes:
    head = (
        "POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Workload:
    """Prepared requests of ``size`` rows and the answers ``Scorer`` gives for them."""

    def __init__(self, X: np.ndarray, scorer, size: int, count: int = 64, seed: int = 0):
        import pandas as pd

        names = scorer.feature_names
        rng = np.random.default_rng(seed + size)
        self.requests, self.expected = [], []
        for _ in range(count):
            rows = X[rng.integers(0, len(X), size=size)]
            body = json.dumps({"dataframe_split": {"columns": names, "data": rows.tolist()}})
            result = scorer.score(pd.DataFrame(rows, columns=names))
            self.requests.append(post(body.encode()))
            self.expected.append((result.score, result.is_anomaly.tolist()))
        self.size = size

    def check(self, i: int, status: int, body: bytes) -> str | None:
        if status != 200:
            return f"status {status}: {body[:200]!r}"
        predictions = json.loads(body)["predictions"]
        scores, flags = self.expected[i]
        if len(predictions) != self.size:
            return f"{len(predictions)} predictions for {self.size} rows"
        got = np.array([p["score"] for p in predictions], dtype=np.float64)
        if not np.allclose(got, scores, rtol=1e-5) or [p["is_anomaly"] for p in predictions] != (
            flags
        ):
            return "scores differ from Scorer's"
        return None


def drive(port: int, workload: Workload, total: int, clients: int) -> dict:
    """Send ``total`` requests from ``clients`` threads; latencies in ms, errors, wall time."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    start_gate = threading.Barrier(clients + 1)

    def client(k: int, count: int) -> None:
        conn = Connection(port)
        times = latencies[k]
        n = len(workload.requests)
        start_gate.wait()
        try:
            for j in range(count):
                i = (k * 7919 + j) % n
                t0 = time.perf_counter()
                status, body = conn.exchange(workload.requests[i])
                times.append((time.perf_counter() - t0) * 1e3)
                problem = workload.check(i, status, body)
                if problem:
                    errors.append(problem)
        except Exception as exc:  # a dropped connection fails the rest of this client's share
            errors.append(f"client {k}: {exc!r}")
            errors.extend(["not sent"] * (count - len(times) - 1))
        finally:
            conn.close()

    shares = [total // clients + (k < total % clients) for k in range(clients)]
    threads = [threading.Thread(target=client, args=(k, c)) for k, c in enumerate(shares)]
    for thread in threads:
        thread.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    flat = np.concatenate([np.asarray(t) for t in latencies]) if total else np.zeros(0)
    return {"latencies": flat, "errors": errors, "wall": wall}


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used, from ``/proc``."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start_server(model: Path, port: int, threads: int) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("anomtune")
    command = [str(exe), "serve", str(model), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--threads", str(threads)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise SystemExit(f"anomtune serve failed: {process.stderr.read().decode()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
                if sock.recv(100).startswith(b"HTTP/1.1 200"):
                    return process
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("anomtune serve did not start within 60 s")
        time.sleep(0.2)


# --------------------------------------------------------------------------- main


def percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", help="the shared datasets folder (holds adbench/)")
    parser.add_argument("--dataset", default="cardio")
    parser.add_argument("--requests", type=int, default=20_000, help="concurrent 1-row requests")
    parser.add_argument("--requests-100", type=int, default=4_000, help="concurrent 100-row")
    parser.add_argument("--sequential", type=int, default=2_000, help="per row count")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="the server's --threads")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every phase")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rss-bound-mb", type=float, default=50.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV to write")
    args = parser.parse_args(argv)

    import importlib.util

    import onnxruntime
    import uvicorn

    import anomtune
    from anomtune.scoring import load_scorer

    # uvicorn picks uvloop and httptools when they are installed (anomtune depends on both).
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    parser_name = "httptools" if importlib.util.find_spec("httptools") else "h11"
    phases = [
        ("sequential", 1, 1, args.sequential),
        ("sequential", 1, 100, args.sequential),
        ("concurrent", args.clients, 1, args.requests),
        ("concurrent", args.clients, 100, args.requests_100),
    ]
    rows_out: list[dict] = []
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        model, X = build_model(args.datasets, args.dataset, Path(tmp), args.epochs)
        scorer = load_scorer(model)
        workloads = {size: Workload(X, scorer, size) for size in (1, 100)}
        port = free_port()
        server = start_server(model, port, args.threads)
        print(
            f"{args.dataset}: {X.shape[1]} features; anomtune serve on 127.0.0.1:{port} "
            f"(pid {server.pid}, --threads {args.threads}, {loop}, {parser_name}); "
            f"load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        try:
            warm = drive(port, workloads[1], WARMUP, 1)
            if warm["errors"]:
                raise SystemExit(f"warm-up failed: {warm['errors'][0]}")
            rss_first = rss_mb(server.pid)
            for round_ in range(1, args.rounds + 1):
                for phase, clients, size, total in phases:
                    rss_start = rss_mb(server.pid)
                    load = os.getloadavg()[0]
                    cpu = cpu_seconds(server.pid)
                    got = drive(port, workloads[size], total, clients)
                    cpu = cpu_seconds(server.pid) - cpu
                    load = max(load, os.getloadavg()[0])
                    lat = got["latencies"]
                    row = {
                        "round": round_,
                        "phase": phase,
                        "clients": clients,
                        "rows_per_request": size,
                        "requests": total,
                        "errors": len(got["errors"]),
                        "p50_ms": round(percentile(lat, 50), 3),
                        "p90_ms": round(percentile(lat, 90), 3),
                        "p99_ms": round(percentile(lat, 99), 3),
                        "max_ms": round(float(lat.max()) if len(lat) else float("nan"), 3),
                        "requests_per_s": round(total / got["wall"], 1),
                        "server_cpu_us": round(cpu / total * 1e6, 1),
                        "rss_start_mb": round(rss_start, 1),
                        "rss_end_mb": round(rss_mb(server.pid), 1),
                        "load_1min": round(load, 2),
                        "dataset": args.dataset,
                        "features": X.shape[1],
                        "server_threads": args.threads,
                        "event_loop": loop,
                        "http_parser": parser_name,
                        "anomtune": anomtune.__version__,
                        "onnxruntime": onnxruntime.__version__,
                        "uvicorn": uvicorn.__version__,
                        "python": platform.python_version(),
                        "cpu_count": os.cpu_count(),
                        "date": datetime.date.today().isoformat(),
                    }
                    rows_out.append(row)
                    print(
                        f"round {round_} {phase:10s} clients {clients} rows {size:3d}: "
                        f"{total} requests, {row['errors']} errors, p50 {row['p50_ms']:.2f} ms, "
                        f"p90 {row['p90_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
                        f"{row['requests_per_s']:.0f} requests/s, "
                        f"server CPU {row['server_cpu_us']:.0f} µs per request, "
                        f"RSS {row['rss_end_mb']:.1f} MB, "
                        f"load {load:.2f}",
                        flush=True,
                    )
                    for problem in got["errors"][:3]:
                        print(f"  error: {problem}", flush=True)
            rss_last = rss_mb(server.pid)
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows_out)

    print()
    print(f"Medians over {args.rounds} round(s):")
    print(
        "| phase | clients | rows | p50 ms | p90 ms | p99 ms | requests/s "
        "| server CPU µs/request | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for phase, clients, size, _ in phases:
        mine = [r for r in rows_out if (r["phase"], r["rows_per_request"]) == (phase, size)]

        def med(key, mine=mine):
            return statistics.median(r[key] for r in mine)

        errors = sum(r["errors"] for r in mine)
        print(
            f"| {phase} | {clients} | {size} | {med('p50_ms'):.2f} | {med('p90_ms'):.2f} | "
            f"{med('p99_ms'):.2f} | {med('requests_per_s'):.0f} | {med('server_cpu_us'):.0f} "
            f"| {errors} |"
        )
    errors = sum(r["errors"] for r in rows_out)
    growth = rss_last - rss_first
    print()
    print(f"errors: {errors} (must be 0): {'met' if errors == 0 else 'NOT MET'}")
    within = growth < args.rss_bound_mb
    print(
        f"server RSS {rss_first:.1f} MB after warm-up, {rss_last:.1f} MB at the end: growth "
        f"{growth:+.1f} MB (bound {args.rss_bound_mb:.0f} MB): {'met' if within else 'NOT MET'}"
    )
    one = [r for r in rows_out if (r["phase"], r["rows_per_request"]) == ("sequential", 1)]
    p50 = statistics.median(r["p50_ms"] for r in one)
    p99 = statistics.median(r["p99_ms"] for r in one)
    print(f"one-row p50 {p50:.2f} ms (target < 2): {'met' if p50 < 2 else 'not met'}")
    print(f"one-row p99 {p99:.2f} ms (target < 10): {'met' if p99 < 10 else 'not met'}")
    print(f"wrote {args.out}")
    failed = errors > 0 or not within
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
