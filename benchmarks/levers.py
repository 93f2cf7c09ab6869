"""Levers of the autoencoder family, measured against the validation-selected zoo.

For each data set and seed this runs the default tune in this process, exactly
as ``anomtune tune --trials 30 --workers 1`` does (same preparation, split,
search space, TPE sampler, median pruner, trial seeds), and keeps every
trial's network at its best validation epoch (the weights the refit of that
trial would give). From those networks it computes several anomaly scores
per trial and several ways of choosing a final score on VAL; each such
choice is a "lever", scored once on TEST:

scores of one trial (all in the trial's scaled feature space):
  ``recon``     the library's score, mean squared reconstruction error;
  ``lat1``, ``lat5``
               distance to the 1st / 5th nearest code of the training rows
               in the latent space (the VAE: posterior means);
  ``lat10m``   mean distance to the 10 nearest training codes;
  ``res1``, ``res5``
               the same on residual vectors (reconstruction minus input);
  ``mix5``     ``recon`` plus ``lat5``, each standardised by the median and
               interquartile range of its training-row scores (a training
               row's kNN distance leaves the row itself out).

levers:
  ``tune``            best trial on VAL, ``recon`` (what the library does today);
  ``tune_<score>``    the same trial, another score;
  ``pick_<family>``   the (trial, score) pair with the best VAL AUC-ROC among
                      the complete trials and the family's scores;
  ``ens<k>_<score>``  mean of the standardised scores of the k best trials;
  ``ens_auto``        of tune, ens3, ens5 and ens10 (recon), the best on VAL;
  ``top<k>_rr1``      mean of the standardised scores of the k best (trial, score)
                      pairs on VAL, scores ``recon`` and ``res1``;
  ``top<k>_all``      the same over every score;
  ``ens_near_<score>`` mean over the (at most 10) trials within 0.01 of the best
                      VAL value.

``top5_rr1`` became the default of ``anomtune tune`` (``--ensemble 5``,
:mod:`anomtune.ensemble`); ``quality.py`` measures it through the command line.

The networks' per-trial VAL/TEST scores are kept in ``--scores DIR`` (NumPy
files), so new selection rules can be measured without training again.
Rows go to ``results/levers.csv``; the zoo and anomtune rows are read from
``results/quality.csv`` (run ``quality.py --methods zoo`` first).

    OMP_NUM_THREADS=1 python benchmarks/levers.py ../shared/datasets --seeds 0,1,2
    python benchmarks/levers.py ../shared/datasets --report-only --seeds 0,1,2
    python benchmarks/levers.py ../shared/datasets --rescore --scores DIR  # no training
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.neighbors import NearestNeighbors

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adbench import LABEL, load, to_frame
from quality import (
    Results,
    log,
    markdown,
    parse_ints,
    protocol_arguments,
    protocol_split,
    select_datasets,
    versions,
)

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "levers.csv"
QUALITY = HERE / "results" / "quality.csv"
TRIALS = 30
SCORES = ("recon", "lat1", "lat5", "lat10m", "res1", "res5", "mix5")
FAMILIES = {
    "latent": ("recon", "lat1", "lat5", "lat10m"),
    "residual": ("recon", "res1", "res5"),
    "mix": ("recon", "mix5"),
    "all": SCORES,
}
# Data sets where the default tune loses most to the zoo, run first.
FIRST = ("wine", "Hepatitis", "Lymphography", "letter", "glass", "optdigits", "WBC", "vowels")
COLUMNS = [
    "dataset",
    "seed",
    "lever",
    "auc_roc",
    "auc_pr",
    "val_auc_roc",
    "choice",
    "seconds",
    "tune_seconds",
    "trials_complete",
    "trials_pruned",
    "rows",
    "features",
    "train_rows",
    "val_anomalies",
    "error",
    "anomtune",
    "torch",
    "optuna",
    "pyod",
    "sklearn",
    "date",
    "bench_command",
]


# -- the tune, keeping each trial's best network ------------------------------------


def _keeping_objective(config, prepared, space):
    """The library's objective, with each trial's network kept at its best VAL epoch."""
    from anomtune.errors import TrainingError
    from anomtune.pipeline import fit_detector
    from anomtune.tuning.objective import EpochTracker, Objective

    class KeepingTracker(EpochTracker):
        state = None

        def __call__(self, epoch, detector):
            try:
                return super().__call__(epoch, detector)
            finally:
                if self.best_epoch == epoch:
                    self.state = {
                        k: v.detach().clone() for k, v in detector.net_.state_dict().items()
                    }

    class KeepingObjective(Objective):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.kept: dict[int, tuple] = {}

        def _single(self, trial, params, seed):
            tracker = KeepingTracker(
                self.validation,
                trial,
                maximize=True,
                patience=self.config.patience,
                report=True,
            )

            def callback(epoch, detector):
                self.kept[trial.number] = (detector, tracker)
                return tracker(epoch, detector)

            detector = fit_detector(self.prepared, params, seed=seed, epoch_callback=callback)
            if tracker.best is None:
                raise TrainingError("no finite validation score")
            return tracker.best, tracker.best_epoch, tracker.epochs, detector

    return KeepingObjective(config, prepared, space)


def run_tune(csv_path: Path, seed: int, trials: int):
    """The default study on ``csv_path``: (prepared, study, kept networks, seconds)."""
    import optuna

    from anomtune.errors import AnomtuneError
    from anomtune.tuning.config import TuneConfig
    from anomtune.tuning.factories import make_pruner, make_sampler, max_epochs
    from anomtune.tuning.study import _build

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    start = time.perf_counter()
    config = TuneConfig(data=str(csv_path), label=LABEL, seed=seed, trials=trials)
    config.check()
    _, prepared, space = _build(config)
    study = optuna.create_study(
        direction="maximize",
        sampler=make_sampler(config.sampler, seed),
        pruner=make_pruner(config.pruner, cv=False, epochs=max_epochs(space)),
    )
    objective = _keeping_objective(config, prepared, space)
    study.optimize(objective, n_trials=trials, catch=(AnomtuneError,), gc_after_trial=False)
    return prepared, study, objective.kept, time.perf_counter() - start


# -- scores of one trial's network --------------------------------------------------


def _codes_and_residuals(detector, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    net = detector.net_
    net.eval()
    z = torch.from_numpy(detector.scaler_.transform(X.astype(np.float32)))
    with torch.no_grad():
        recon, extras = net.reconstruct(z)
        code = extras[0] if extras else net.encode(z)
    return code.numpy().astype(np.float64), (recon - z).numpy().astype(np.float64)


def _knn(train: np.ndarray, parts: list[np.ndarray], k: int = 10) -> list[np.ndarray]:
    """Sorted distances to the k nearest training rows; the training rows leave themselves out."""
    k = min(k, len(train) - 1)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(train)
    out = [nn.kneighbors(train, n_neighbors=k + 1)[0][:, 1:]]
    out += [nn.kneighbors(p, n_neighbors=k)[0] for p in parts]
    return out


def _knn_scores(d: np.ndarray) -> dict[str, np.ndarray]:
    k = d.shape[1]
    return {"1": d[:, 0], "5": d[:, min(4, k - 1)], "10m": d.mean(axis=1)}


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scores in units of the training scores' interquartile range, from their median."""
    q1, med, q3 = np.percentile(train, [25, 50, 75])
    scale = q3 - q1 if q3 > q1 else (np.std(train) or 1.0)
    return [(s - med) / scale for s in (train, *others)]


def trial_scores(detector, state, X_train, X_val, X_test) -> dict[str, tuple]:
    """``{score: (train, val, test)}`` of the network restored to ``state``."""
    detector.net_.load_state_dict(state)
    out = {"recon": tuple(detector.anomaly_score(X) for X in (X_train, X_val, X_test))}
    codes = [_codes_and_residuals(detector, X) for X in (X_train, X_val, X_test)]
    for name, which in (("lat", 0), ("res", 1)):
        tr, va, te = (c[which] for c in codes)
        dists = _knn(tr, [va, te])
        per = [_knn_scores(d) for d in dists]
        for suffix in ("1", "5", "10m"):
            key = f"{name}{suffix}"
            if key in SCORES:
                out[key] = tuple(p[suffix] for p in per)
    r = _standardise(*out["recon"])
    lat = _standardise(*out["lat5"])
    out["mix5"] = tuple(a + b for a, b in zip(r, lat, strict=True))
    return out


# -- levers ---------------------------------------------------------------------------


def _auc(y, s) -> float:
    return float(roc_auc_score(y, s)) if np.isfinite(s).all() else float("nan")


def network_scores(prepared, study, kept) -> dict:
    """Every complete trial's scores, best trial first, with the VAL and TEST labels.

    ``{"order": [trial numbers], "scores": {number: {score: (train, val, test)}},
    "y_val": ..., "y_test": ...}``.
    """
    from optuna.trial import TrialState

    X_train, _ = prepared.rows("train")
    X_val, y_val = prepared.rows("val")
    X_test, y_test = prepared.rows("test")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    # Best first; Optuna's best_trial is the first of the best, so a stable sort agrees.
    ranked = sorted(complete, key=lambda t: -t.value)
    assert ranked[0].number == study.best_trial.number
    scores: dict[int, dict] = {}
    for t in ranked:
        detector, tracker = kept[t.number]
        if tracker.state is None:
            continue
        try:
            with np.errstate(all="ignore"):
                scores[t.number] = trial_scores(detector, tracker.state, X_train, X_val, X_test)
        except (ValueError, RuntimeError) as exc:
            log(f"trial {t.number}: scores failed ({exc})")
    order = [t.number for t in ranked if t.number in scores]
    return {"order": order, "scores": scores, "y_val": y_val, "y_test": y_test}


def save_scores(path: Path, kept: dict) -> None:
    arrays = {
        f"t{n}_{name}_{part}": arr
        for n in kept["order"]
        for name, parts in kept["scores"][n].items()
        for part, arr in zip(("train", "val", "test"), parts, strict=True)
    }
    arrays.update(order=np.array(kept["order"]), y_val=kept["y_val"], y_test=kept["y_test"])
    np.savez_compressed(path, **arrays)


def load_scores(path: Path) -> dict:
    data = np.load(path)
    order = [int(n) for n in data["order"]]
    scores = {
        n: {
            name: tuple(data[f"t{n}_{name}_{part}"] for part in ("train", "val", "test"))
            for name in SCORES
        }
        for n in order
    }
    return {"order": order, "scores": scores, "y_val": data["y_val"], "y_test": data["y_test"]}


def evaluate_levers(kept: dict) -> list[dict]:
    """One dict per lever: test figures, the VAL figure it was chosen on, the choice."""
    order, scores = kept["order"], kept["scores"]
    y_val, y_test = kept["y_val"], kept["y_test"]
    val_auc = {(n, name): _auc(y_val, parts[1]) for n in order for name, parts in scores[n].items()}

    def result(lever, val_scores, test_scores, choice):
        return {
            "lever": lever,
            "val_auc_roc": _auc(y_val, val_scores),
            "auc_roc": _auc(y_test, test_scores),
            "auc_pr": float(average_precision_score(y_test, test_scores))
            if np.isfinite(test_scores).all()
            else float("nan"),
            "choice": choice,
        }

    out = []
    best = order[0]
    for name in SCORES:
        _, va, te = scores[best][name]
        out.append(result("tune" if name == "recon" else f"tune_{name}", va, te, f"{best}:{name}"))
    for family, names in FAMILIES.items():
        pick, pick_val = None, -np.inf
        for n in order:
            for name in names:
                v = val_auc[(n, name)]
                if v > pick_val:
                    pick, pick_val = (n, name), v
        _, va, te = scores[pick[0]][pick[1]]
        out.append(result(f"pick_{family}", va, te, f"{pick[0]}:{pick[1]}"))

    def ensemble(members, name):
        std = [_standardise(*scores[n][name]) for n in members]
        va = np.mean([s[1] for s in std], axis=0)
        te = np.mean([s[2] for s in std], axis=0)
        return va, te, "+".join(map(str, members)) + f":{name}"

    ens = {}
    for k in (3, 5, 10):
        for name in ("recon", "lat5", "mix5"):
            ens[(k, name)] = ensemble(order[:k], name)
            out.append(result(f"ens{k}_{name}", *ens[(k, name)]))
    cands = [("tune", *scores[best]["recon"][1:], f"{best}:recon")]
    cands += [(f"ens{k}", *ens[(k, "recon")]) for k in (3, 5, 10)]
    pick = max(cands, key=lambda c: _auc(y_val, c[1]))  # first of the best on a tie
    out.append(result("ens_auto", pick[1], pick[2], f"{pick[0]}={pick[3]}"))
    # The k best (trial, score) pairs on VAL, averaged (a tie keeps the earlier pair).
    for family, names in (("rr1", ("recon", "res1")), ("all", SCORES)):
        pairs = sorted(((n, name) for n in order for name in names), key=lambda p: -val_auc[p])
        for k in (3, 5):
            std = [_standardise(*scores[n][name]) for n, name in pairs[:k]]
            va = np.mean([x[1] for x in std], axis=0)
            te = np.mean([x[2] for x in std], axis=0)
            choice = "+".join(f"{n}:{name}" for n, name in pairs[:k])
            out.append(result(f"top{k}_{family}", va, te, choice))
    # Trials tied (within 0.01) with the best on VAL: a small VAL cannot tell them apart.
    top = val_auc[(best, "recon")]
    for name in ("recon", "mix5"):
        near = [n for n in order if val_auc[(n, "recon")] >= top - 0.01][:10]
        out.append(result(f"ens_near_{name}", *ensemble(near, name)))
    return out


# -- report -----------------------------------------------------------------------------


def quality_rows(path: Path, methods: tuple[str, ...]) -> dict:
    """``{(dataset, seed): {method: (auc_roc, auc_pr, seconds)}}`` from quality.csv."""
    out: dict = {}
    if not path.exists():
        return out
    with path.open(newline="") as fh:
        for r in csv.DictReader(fh):
            if r["method"] in methods and not r.get("error") and r.get("auc_roc"):
                out.setdefault((r["dataset"], int(r["seed"])), {})[r["method"]] = (
                    float(r["auc_roc"]),
                    float(r["auc_pr"]),
                    float(r["seconds"]),
                )
    return out


def _wlt(a: dict, b: dict, names) -> str:
    w = sum(a[n] > b[n] for n in names)
    losses = sum(a[n] < b[n] for n in names)
    return f"{w}/{losses}/{len(names) - w - losses}"


def report(results: Results, seeds: list[int], quality: Path) -> None:
    ref = quality_rows(quality, ("zoo", "zoo_hindsight", "anomtune"))
    rows = [r for r in results.valid() if int(r["seed"]) in seeds]
    if not rows:
        print("no results yet")
        return
    levers = list(dict.fromkeys(r["lever"] for r in rows))
    runs = sorted({(r["dataset"], int(r["seed"])) for r in rows})
    # Only runs that every lever and the zoo have.
    by = {(r["dataset"], int(r["seed"]), r["lever"]): r for r in rows}
    runs = [k for k in runs if all((*k, lv) in by for lv in levers) and "zoo" in ref.get(k, {})]
    if not runs:
        print("no run has both lever rows and a zoo row in", quality)
        return
    datasets = sorted({d for d, _ in runs}, key=str.lower)

    def per_dataset(get) -> dict[str, float]:
        return {d: statistics.fmean(get(d, s) for dd, s in runs if dd == d) for d in datasets}

    zoo = per_dataset(lambda d, s: ref[(d, s)]["zoo"][0])
    zoo_pr = per_dataset(lambda d, s: ref[(d, s)]["zoo"][1])
    has_at = all("anomtune" in ref[k] for k in runs)
    table = []
    for lv in levers:
        roc = per_dataset(lambda d, s, lv=lv: float(by[(d, s, lv)]["auc_roc"]))
        pr = per_dataset(lambda d, s, lv=lv: float(by[(d, s, lv)]["auc_pr"]))
        w = sum(roc[d] > zoo[d] for d in datasets)
        losses = sum(roc[d] < zoo[d] for d in datasets)
        secs = [float(by[(*k, lv)]["seconds"]) for k in runs]
        table.append(
            [
                lv,
                statistics.fmean(roc.values()),
                statistics.fmean(roc.values()) - statistics.fmean(zoo.values()),
                f"{w}/{losses}/{len(datasets) - w - losses}",
                statistics.fmean(pr.values()),
                f"{statistics.median(secs):.1f}",
            ]
        )
    table.append(
        [
            "zoo",
            statistics.fmean(zoo.values()),
            0.0,
            "",
            statistics.fmean(zoo_pr.values()),
            f"{statistics.median(ref[k]['zoo'][2] for k in runs):.1f}",
        ]
    )
    if all("zoo_hindsight" in ref[k] for k in runs):
        zh = per_dataset(lambda d, s: ref[(d, s)]["zoo_hindsight"][0])
        table.append(
            [
                "zoo_hindsight",
                statistics.fmean(zh.values()),
                statistics.fmean(zh.values()) - statistics.fmean(zoo.values()),
                "",
                float("nan"),
                "",
            ]
        )
    if has_at:
        at = per_dataset(lambda d, s: ref[(d, s)]["anomtune"][0])
        table.append(
            [
                "anomtune (quality.csv)",
                statistics.fmean(at.values()),
                statistics.fmean(at.values()) - statistics.fmean(zoo.values()),
                _wlt(at, zoo, datasets),
                float("nan"),
                "",
            ]
        )
    seeds_run = sorted({s for _, s in runs})
    print(
        f"### Levers: {len(datasets)} data sets, seeds {','.join(map(str, seeds_run))} "
        f"({len(runs)} runs)\n"
    )
    print(
        markdown(
            [
                "lever",
                "mean test AUC-ROC",
                "vs zoo",
                "wins/losses/ties vs zoo",
                "mean test AUC-PR",
                "median seconds per run",
            ],
            table,
        )
    )
    print("\n### Test AUC-ROC per data set (mean over seeds)\n")
    show = [
        lv
        for lv in levers
        if lv
        in ("tune", "tune_res1", "pick_all", "ens3_recon", "ens_near_recon", "top3_rr1", "top5_all")
    ]
    print(
        markdown(
            ["dataset", "zoo", *show],
            [
                [
                    d,
                    zoo[d],
                    *(
                        statistics.fmean(
                            float(by[(d, s, lv)]["auc_roc"]) for dd, s in runs if dd == d
                        )
                        for lv in show
                    ),
                ]
                for d in datasets
            ],
        )
    )
    if has_at:
        diffs = [abs(float(by[(*k, "tune")]["auc_roc"]) - ref[k]["anomtune"][0]) for k in runs]
        print(
            f"\n`tune` against the anomtune rows of quality.csv (same data set and seed): "
            f"{sum(d < 1e-9 for d in diffs)} of {len(diffs)} identical, "
            f"largest difference {max(diffs):.4f}"
        )


def rescore(results: Results, scores_dir: Path, seeds: list[int]) -> None:
    """Recompute every lever row from the kept scores (no training), keeping the timings."""
    for path in sorted(scores_dir.glob("*-s*.npz")):
        name, _, seed_text = path.stem.rpartition("-s")
        seed = int(seed_text)
        old = [r for r in results.rows if r["dataset"] == name and int(r["seed"]) == seed]
        tune = next((r for r in old if r["lever"] == "tune"), None)
        if seed not in seeds or tune is None:
            continue
        other = next((r for r in old if r["lever"] != "tune"), tune)
        keep = ("lever", "auc_roc", "auc_pr", "val_auc_roc", "choice", "seconds")
        common = {c: tune.get(c, "") for c in COLUMNS if c not in keep}
        results.add_many(
            [
                {
                    **common,
                    **lv,
                    "seconds": tune["seconds"] if lv["lever"] == "tune" else other["seconds"],
                }
                for lv in evaluate_levers(load_scores(path))
            ]
        )


# -- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    protocol_arguments(parser)
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quality", type=Path, default=QUALITY, help="rows of zoo and anomtune")
    parser.add_argument("--scores", type=Path, help="folder for the per-trial scores (.npz)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="recompute the lever rows from --scores without training, then report",
    )
    args = parser.parse_args(argv)
    results = Results(args.out, COLUMNS, ("dataset", "seed", "lever"))
    seeds = parse_ints(args.seeds)
    if args.rescore:
        if not args.scores:
            raise SystemExit("--rescore needs --scores DIR")
        rescore(results, args.scores, seeds)
    elif not args.report_only:
        import torch

        torch.set_num_threads(1)
        warnings.filterwarnings("ignore")
        chosen = select_datasets(args.datasets_root, args.datasets, args.max_rows)
        if not args.datasets:
            first = [c for name in FIRST for c in chosen if c["name"] == name]
            chosen = first + [c for c in chosen if c not in first]
        base = {**versions(), "bench_command": shlex.join(["python", *sys.argv])}
        if args.scores:
            args.scores.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="anomtune-levers-") as tmpdir:
            # Data sets outermost: a run cut short has every seed of the data sets it did.
            for info in chosen:
                for seed in seeds:
                    name = info["name"]
                    if results.done(name, seed, "tune"):
                        continue
                    X, y = load(args.datasets_root, name)
                    csv_path = Path(tmpdir) / f"{name}.csv"
                    if not csv_path.exists():
                        to_frame(X, y).to_csv(csv_path, index=False)
                    train, val, _ = protocol_split(y, seed)
                    prepared, study, kept, tune_seconds = run_tune(csv_path, seed, args.trials)
                    assert np.array_equal(np.sort(prepared.split.val), np.sort(val))
                    start = time.perf_counter()
                    kept_scores = network_scores(prepared, study, kept)
                    levers = evaluate_levers(kept_scores)
                    extra = time.perf_counter() - start
                    if args.scores:
                        save_scores(args.scores / f"{name}-s{seed}.npz", kept_scores)
                    states = [t.state.name for t in study.trials]
                    common = {
                        **base,
                        "dataset": name,
                        "seed": seed,
                        "tune_seconds": round(tune_seconds, 3),
                        "trials_complete": states.count("COMPLETE"),
                        "trials_pruned": states.count("PRUNED"),
                        "rows": len(y),
                        "features": X.shape[1],
                        "train_rows": int((y[train] == 0).sum()),
                        "val_anomalies": int(y[val].sum()),
                        "date": dt.datetime.now().isoformat(timespec="seconds"),
                    }
                    results.add_many(
                        [
                            {
                                **common,
                                **lv,
                                # Scoring every trial is the levers' cost; "tune" pays none.
                                "seconds": round(
                                    tune_seconds + (0 if lv["lever"] == "tune" else extra), 3
                                ),
                            }
                            for lv in levers
                        ]
                    )
                    by = {lv["lever"]: lv for lv in levers}
                    log(
                        f"{name} seed {seed}: tune {by['tune']['auc_roc']:.4f}, "
                        f"pick_latent {by['pick_latent']['auc_roc']:.4f}, "
                        f"pick_all {by['pick_all']['auc_roc']:.4f}, "
                        f"ens5 {by['ens5_recon']['auc_roc']:.4f} "
                        f"({tune_seconds:.0f}s tune, {extra:.1f}s levers)"
                    )
    report(results, seeds, args.quality)


if __name__ == "__main__":
    main()
