"""Time per training epoch: anomtune's default detector against PyOD's AutoEncoder.

Both train the same layer sizes (anomtune's defaults, read from a fitted
detector) with the same batch size, batch norm, dropout, activation,
optimizer, learning rate and weight decay on the same rows: the normal rows
of the protocol's training split (seed 0) of each ADBench data set. Both
standardise the inputs inside ``fit``. The time per epoch is the wall time
of a whole ``fit`` divided by its epochs, repeated; the table quotes medians.

    python benchmarks/training.py ../shared/datasets
    python benchmarks/training.py ../shared/datasets --datasets cardio --threads 1

Known differences between the two networks: PyOD puts batch norm, the
activation and dropout after the bottleneck layer too (anomtune's bottleneck
is linear), and PyOD drops the last incomplete batch of an epoch.

A third column times a plain PyTorch loop over pre-built tensors: the same
network as anomtune's (``nn.Sequential`` of Linear, BatchNorm1d, ReLU and
Dropout), standardised inputs, a fresh permutation per epoch, slicing the
permuted tensor per batch, Adam; the straightforward loop a practitioner
would write, as a floor that a DataLoader-free library should reach.

The ``load`` column is the 1-minute load average around the measurement.
Above the number of CPUs, other processes competed for the cores and the
times, the multi-threaded ones above all, are inflated.

``--part paths`` times anomtune's own training paths against each other, on
one torch thread: the hand-written backward pass against autograd (the
``ANOMTUNE_TRAINING`` switch), each with several optimizer steps (see
``STEPS``), Adam and AdamW, the default detector otherwise. The variants
take turns in every round; the table quotes medians of CPU time per epoch
(which waiting for a busy core does not inflate) and of wall time, and each
variant's ratio to the library's default path measured in the same run.

    python benchmarks/training.py ../shared/datasets --part paths --repeats 9
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import platform
import shlex
import statistics
import sys
import time
from importlib.metadata import version
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adbench import load
from machine import cpu_name

import anomtune.detector
import anomtune.training
from anomtune import AutoencoderDetector
from anomtune.models import backprop

DATASETS = ("cardio", "satellite", "thyroid", "mnist")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "training.csv"
PATHS_OUT = Path(__file__).resolve().parent / "results" / "training_paths.csv"
COLUMNS = [
    "dataset",
    "rows",
    "features",
    "threads",
    "anomtune_threads",
    "epochs",
    "repeats",
    "anomtune_ms_per_epoch",
    "pyod_ms_per_epoch",
    "speedup",
    "plain_ms_per_epoch",
    "pyod_over_plain",
    "anomtune_runs_ms",
    "pyod_runs_ms",
    "plain_runs_ms",
    "torch",
    "pyod",
    "anomtune",
    "python",
    "cpu_count",
    "cpu",
    "load_1min",
]


def normal_train_rows(root: str, name: str) -> np.ndarray:
    """Normal rows of the protocol's training split (seed 0)."""
    X, y = load(root, name)
    rest_X, _, rest_y, _ = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    train_X, _, train_y, _ = train_test_split(
        rest_X, rest_y, test_size=0.25, stratify=rest_y, random_state=0
    )
    return train_X[train_y == 0]


def anomtune_detector(epochs: int) -> AutoencoderDetector:
    return AutoencoderDetector(epochs=epochs, device="cpu", random_state=0)


def pyod_detector(reference: AutoencoderDetector, epochs: int):
    """PyOD's AutoEncoder with the layer sizes and training settings of ``reference``."""
    from pyod.models.auto_encoder import AutoEncoder

    params = reference.get_params()
    return AutoEncoder(
        hidden_neuron_list=[*reference.hidden_sizes_, reference.latent_dim_],
        hidden_activation_name=params["activation"],
        batch_norm=params["batch_norm"],
        dropout_rate=params["dropout"],
        batch_size=params["batch_size"],
        epoch_num=epochs,
        lr=params["learning_rate"],
        optimizer_name=params["optimizer"],
        optimizer_params={"weight_decay": params["weight_decay"]},
        preprocessing=True,
        contamination=params["contamination"],
        device="cpu",
        random_state=0,
        verbose=0,
    )


class PlainLoop:
    """A plain PyTorch training loop over pre-built tensors, with ``fit`` like the others."""

    def __init__(self, reference: AutoencoderDetector, epochs: int):
        self.reference = reference
        self.epochs = epochs

    def fit(self, X: np.ndarray) -> PlainLoop:
        from torch import nn

        params = self.reference.get_params()
        torch.manual_seed(0)
        mean, std = X.mean(axis=0), X.std(axis=0)
        data = torch.from_numpy(((X - mean) / np.where(std > 0, std, 1.0)).astype(np.float32))
        widths = [data.shape[1], *self.reference.hidden_sizes_]

        def block(i: int, o: int) -> list:
            return [nn.Linear(i, o), nn.BatchNorm1d(o), nn.ReLU(), nn.Dropout(params["dropout"])]

        layers = [m for i, o in pairwise(widths) for m in block(i, o)]
        layers.append(nn.Linear(widths[-1], self.reference.latent_dim_))
        back = [self.reference.latent_dim_, *reversed(self.reference.hidden_sizes_)]
        layers += [m for i, o in pairwise(back) for m in block(i, o)]
        layers.append(nn.Linear(back[-1], data.shape[1]))
        net = nn.Sequential(*layers)
        optimizer = torch.optim.Adam(
            net.parameters(), lr=params["learning_rate"], weight_decay=params["weight_decay"]
        )
        n, size = data.shape[0], params["batch_size"]
        net.train()
        for _ in range(self.epochs):
            order = torch.randperm(n)
            for start in range(0, n, size):
                batch = data[order[start : start + size]]
                loss = ((net(batch) - batch) ** 2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        net.eval()
        with torch.no_grad():
            self.scores_ = ((net(data) - data) ** 2).mean(dim=1).numpy()
        return self


def ms_per_epoch(detector, X: np.ndarray, epochs: int, **fit_params) -> float:
    start = time.perf_counter()
    detector.fit(X, **fit_params)
    return (time.perf_counter() - start) * 1000.0 / epochs


def measure(
    X: np.ndarray, threads: int, epochs: int, repeats: int, budget: float
) -> tuple[list, list, list, list]:
    """Per-epoch times of both libraries and the plain loop, and the torch thread counts anomtune
    trained with (its detector may use fewer threads than the process).

    After 3 repeats, stops once ``budget`` seconds are spent: on a busy machine
    multi-threaded fits get very slow."""
    torch.set_num_threads(threads)
    # Warm-up: the first fit in a process pays one-off costs (allocator, kernels).
    reference = anomtune_detector(2).fit(X)
    pyod_detector(reference, 2).fit(X)
    PlainLoop(reference, 2).fit(X)
    ours, theirs, plain, used = [], [], [], set()

    def record_threads(epoch, detector):
        used.add(torch.get_num_threads())

    start = time.perf_counter()
    for i in range(repeats):
        # Interleaved, so that a slow spell of the machine hits both.
        ours.append(
            ms_per_epoch(anomtune_detector(epochs), X, epochs, epoch_callback=record_threads)
        )
        theirs.append(ms_per_epoch(pyod_detector(reference, epochs), X, epochs))
        plain.append(ms_per_epoch(PlainLoop(reference, epochs), X, epochs))
        if i + 1 >= min(3, repeats) and time.perf_counter() - start > budget:
            break
    return ours, theirs, plain, sorted(used)


# Optimizer steps for Adam and AdamW; the first is the library's own.
STEPS = {
    "flat_functional": "flat buffer, torch.optim.adam.adam(fused=True) (functional API)",
    "flat_private": "flat buffer, torch's private kernel torch._fused_adam_ called directly",
    "flat_fused": "flat buffer, torch.optim.Adam(fused=True) stepping it",
    "fused": "torch.optim.Adam(fused=True), parameter by parameter",
}
BACKWARDS = backprop.TRAINING_PATHS  # the library's default first
PATHS_COLUMNS = [
    "dataset",
    "rows",
    "features",
    "optimizer",
    "backward",
    "step",
    "epochs",
    "repeats",
    "cpu_ms_per_epoch",
    "wall_ms_per_epoch",
    "cpu_ratio",
    "wall_ratio",
    "final_loss",
    "cpu_runs_ms",
    "wall_runs_ms",
    "torch",
    "anomtune",
    "python",
    "cpu_count",
    "cpu",
    "load_1min",
]


@contextlib.contextmanager
def training_variant(backward: str, step: str):
    """Train with the given backward pass (the library's switch) and optimizer step.

    The steps other than the library's own replace private functions of
    ``anomtune.training`` for the duration: they exist only to be measured.
    """
    saved_env = os.environ.get(backprop.TRAINING_ENV)
    saved = (
        anomtune.training._fused_adam_step,
        anomtune.training._FlatStepper.eligible,
        anomtune.detector.make_optimizer,
    )
    os.environ[backprop.TRAINING_ENV] = backward
    if step == "flat_private":
        anomtune.training._fused_adam_step = private_adam_step
    elif step == "flat_fused":

        def public_step(optimizer):
            groups = [{**g, "fused": True} for g in optimizer.param_groups]
            return type(optimizer)(groups).step

        anomtune.training._fused_adam_step = public_step
    elif step == "fused":
        classes = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}

        def make_fused(name, params, *, lr, weight_decay, momentum):
            return classes[name](params, lr=lr, weight_decay=weight_decay, fused=True)

        anomtune.detector.make_optimizer = make_fused
        anomtune.training._FlatStepper.eligible = staticmethod(lambda optimizer: False)
    try:
        yield
    finally:
        if saved_env is None:
            del os.environ[backprop.TRAINING_ENV]
        else:
            os.environ[backprop.TRAINING_ENV] = saved_env
        (
            anomtune.training._fused_adam_step,
            anomtune.training._FlatStepper.eligible,
            anomtune.detector.make_optimizer,
        ) = saved


def private_adam_step(optimizer):
    """torch's private fused Adam kernel on the flat buffers of ``optimizer``: what
    the library called before it used the functional API, kept here to be measured."""
    kernels = {torch.optim.Adam: torch._fused_adam_, torch.optim.AdamW: torch._fused_adamw_}
    kernel = kernels.get(type(optimizer))
    if kernel is None:
        return None
    calls = []
    for group in optimizer.param_groups:
        (param,) = group["params"]
        state = optimizer.state[param]
        state["step"] = torch.zeros((), dtype=torch.float32)
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        calls.append((group, param, state))

    def step() -> None:
        for group, param, state in calls:
            state["step"].add_(1)
            beta1, beta2 = group["betas"]
            kernel(
                [param],
                [param.grad],
                [state["exp_avg"]],
                [state["exp_avg_sq"]],
                [],
                [state["step"]],
                amsgrad=False,
                lr=float(group["lr"]),
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=False,
            )

    return step


def fit_times(X: np.ndarray, optimizer: str, epochs: int) -> tuple[float, float, float]:
    """CPU and wall milliseconds per epoch of one fit of the default detector, and its
    last epoch's training loss (the same for every variant, up to float rounding)."""
    detector = AutoencoderDetector(epochs=epochs, optimizer=optimizer, device="cpu", random_state=0)
    wall, cpu = time.perf_counter(), time.process_time()
    detector.fit(X)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu * 1000.0 / epochs, wall * 1000.0 / epochs, detector.loss_curve_[-1]


def run_paths(args, machine: dict) -> list[dict]:
    torch.set_num_threads(1)
    # The library's default path first: the ratios are to it.
    variants = [(b, s) for b in BACKWARDS for s in STEPS]
    variants = [variants[0]] + [
        (b, s) for b, s in variants[1:] if b in args.backward and s in args.steps
    ]
    print(
        f"training paths, 1 thread, {args.epochs} epochs per fit, median of {args.repeats} "
        "rounds; ratio = time / time of the default path in the same run"
    )
    for step, text in STEPS.items():
        print(f"  {step}: {text}")
    header = (
        f"{'dataset':<10} {'optimizer':<9} {'backward':<11} {'step':<15} "
        f"{'CPU ms/epoch':>12} {'ratio':>6} {'wall ms/epoch':>13} {'ratio':>6} {'load':>6}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for name in args.datasets:
        X = normal_train_rows(args.shared, name)
        for optimizer in ("adam", "adamw"):
            for variant in variants:  # warm-up
                with training_variant(*variant):
                    fit_times(X, optimizer, 2)
            cpu = {v: [] for v in variants}
            loss = {}
            wall = {v: [] for v in variants}
            load_before = os.getloadavg()[0]
            for i in range(args.repeats):
                # A different order each round, so that no variant always follows another.
                for variant in variants[i % len(variants) :] + variants[: i % len(variants)]:
                    with training_variant(*variant):
                        c, w, loss[variant] = fit_times(X, optimizer, args.epochs)
                    cpu[variant].append(c)
                    wall[variant].append(w)
            load_avg = max(load_before, os.getloadavg()[0])
            base_cpu = statistics.median(cpu[variants[0]])
            base_wall = statistics.median(wall[variants[0]])
            for variant in variants:
                c, w = statistics.median(cpu[variant]), statistics.median(wall[variant])
                print(
                    f"{name:<10} {optimizer:<9} {variant[0]:<11} {variant[1]:<15} "
                    f"{c:>12.2f} {c / base_cpu:>6.2f} {w:>13.2f} {w / base_wall:>6.2f} "
                    f"{load_avg:>6.2f}",
                    flush=True,
                )
                rows.append(
                    {
                        "dataset": name,
                        "rows": X.shape[0],
                        "features": X.shape[1],
                        "optimizer": optimizer,
                        "backward": variant[0],
                        "step": variant[1],
                        "epochs": args.epochs,
                        "repeats": args.repeats,
                        "cpu_ms_per_epoch": f"{c:.3f}",
                        "wall_ms_per_epoch": f"{w:.3f}",
                        "cpu_ratio": f"{c / base_cpu:.3f}",
                        "wall_ratio": f"{w / base_wall:.3f}",
                        "final_loss": f"{loss[variant]:.7g}",
                        "cpu_runs_ms": ";".join(f"{v:.3f}" for v in cpu[variant]),
                        "wall_runs_ms": ";".join(f"{v:.3f}" for v in wall[variant]),
                        **{k: machine[k] for k in ("torch", "anomtune", "python", "cpu_count")},
                        "cpu": machine["cpu"],
                        "load_1min": f"{load_avg:.2f}",
                    }
                )
    print("geometric mean of the ratios over data sets and optimizers (CPU, wall):")
    for variant in variants:
        mine = [r for r in rows if (r["backward"], r["step"]) == variant]
        cpu_gm = statistics.geometric_mean(float(r["cpu_ratio"]) for r in mine)
        wall_gm = statistics.geometric_mean(float(r["wall_ratio"]) for r in mine)
        print(f"  {variant[0]:<11} {variant[1]:<15} {cpu_gm:.3f} {wall_gm:.3f}")
    return rows


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


def run_pyod(args, machine: dict) -> list[dict]:
    print(
        f"pyod {machine['pyod']}; {args.epochs} epochs per fit, median of up to {args.repeats} fits"
    )
    header = (
        f"{'dataset':<10} {'rows':>6} {'features':>8} {'threads':>7} "
        f"{'anomtune ms/epoch':>17} {'PyOD ms/epoch':>13} {'speed-up':>8} "
        f"{'plain ms/epoch':>14} {'PyOD/plain':>10} {'load':>6} "
        "anomtune trained on"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for name in args.datasets:
        X = normal_train_rows(args.shared, name)
        for threads in args.threads:
            load_before = os.getloadavg()[0]
            ours, theirs, plain, used = measure(X, threads, args.epochs, args.repeats, args.budget)
            load_avg = max(load_before, os.getloadavg()[0])
            a, p = statistics.median(ours), statistics.median(theirs)
            b = statistics.median(plain)
            print(
                f"{name:<10} {X.shape[0]:>6} {X.shape[1]:>8} {threads:>7} "
                f"{a:>17.1f} {p:>13.1f} {p / a:>7.2f}x {b:>14.1f} {p / b:>9.2f}x "
                f"{load_avg:>6.2f} "
                f"{'/'.join(map(str, used))} thread(s)",
                flush=True,
            )
            rows.append(
                {
                    "dataset": name,
                    "rows": X.shape[0],
                    "features": X.shape[1],
                    "threads": threads,
                    "anomtune_threads": ";".join(map(str, used)),
                    "epochs": args.epochs,
                    "repeats": len(ours),
                    "anomtune_ms_per_epoch": f"{a:.2f}",
                    "pyod_ms_per_epoch": f"{p:.2f}",
                    "speedup": f"{p / a:.2f}",
                    "plain_ms_per_epoch": f"{b:.2f}",
                    "pyod_over_plain": f"{p / b:.2f}",
                    "anomtune_runs_ms": ";".join(f"{v:.2f}" for v in ours),
                    "pyod_runs_ms": ";".join(f"{v:.2f}" for v in theirs),
                    "plain_runs_ms": ";".join(f"{v:.2f}" for v in plain),
                    **machine,
                    "load_1min": f"{load_avg:.2f}",
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shared", help="path of the shared datasets folder (holds adbench/)")
    parser.add_argument(
        "--part",
        choices=("pyod", "paths", "all"),
        default="all",
        help="pyod: anomtune against PyOD and a plain loop; paths: anomtune's training paths",
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument(
        "--threads", nargs="+", type=int, default=[1, 2], help="torch threads (pyod part)"
    )
    parser.add_argument("--epochs", type=int, default=10, help="epochs per fit")
    parser.add_argument(
        "--repeats", type=int, default=5, help="fits per library and setting, or rounds (paths)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=20.0,
        help="seconds per data set and thread count after which no further repeat starts "
        "(at least 3 repeats run; pyod part)",
    )
    parser.add_argument(
        "--backward",
        nargs="+",
        choices=BACKWARDS,
        default=list(BACKWARDS),
        help="backward passes to time (paths part)",
    )
    parser.add_argument(
        "--steps",
        nargs="+",
        choices=list(STEPS),
        default=list(STEPS),
        help="optimizer steps to time (paths part; the default path is always timed)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV of the pyod part")
    parser.add_argument("--paths-out", type=Path, default=PATHS_OUT, help="CSV of the paths part")
    args = parser.parse_args(argv)

    machine = {
        "torch": torch.__version__,
        "anomtune": version("anomtune"),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_name(),
    }
    print(
        f"torch {machine['torch']}, anomtune {machine['anomtune']}, "
        f"python {machine['python']}; {machine['cpu_count']} CPUs ({machine['cpu']}); "
        f"load average {os.getloadavg()[0]:.2f}; command: {shlex.join(sys.argv)}"
    )
    if args.part in ("pyod", "all"):
        write_csv(args.out, COLUMNS, run_pyod(args, {"pyod": version("pyod"), **machine}))
    if args.part in ("paths", "all"):
        write_csv(args.paths_out, PATHS_COLUMNS, run_paths(args, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
