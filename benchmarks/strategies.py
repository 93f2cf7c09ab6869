"""Search strategies side by side: every ``--sampler`` at budgets of 10, 30 and 100 trials.

For each data set (the ADBench sets of at most ``--max-rows`` rows) and seed
this runs the real command line once per strategy::

    anomtune tune DATA.csv --label is_anomaly --seed S --sampler X --trials B \
        --ensemble 1 --json --quiet --study NAME --storage JOURNAL --out RUN_DIR

with the default pruner and ``--ensemble 1``, so that what is compared is the
search: the model is the best trial alone. One study of the largest budget
gives every smaller budget of a sequential, seeded search: its first b trials
are exactly the trials a b-trial study would run (the samplers and the
pruner see only earlier trials). Grid search is the exception: it runs once
per budget, on a grid of about that many combinations (:func:`grid_space`).

The anytime curve: after each trial, the best trial so far on validation,
refitted as ``tune`` refits it (its seed, its best epoch count, every
training row) and scored once on the test rows. Each distinct best trial is
refitted once. The figure of a budget b is the curve's value after b
trials, and its time the study's elapsed seconds at that trial.

Rows go to ``results/strategies.csv`` (one per data set, seed, strategy and
budget) and the curves to ``results/strategies_curves.csv`` (one per trial);
a run cut short resumes. ``--report-only`` prints the tables and draws
the curves beside the results CSV (``results/strategies.png``).

    python benchmarks/strategies.py ../shared/datasets --seeds 0,1,2
    python benchmarks/strategies.py ../shared/datasets --datasets cardio,wine --seeds 0 \
        --budgets 10,30
    python benchmarks/strategies.py ../shared/datasets --report-only --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adbench import LABEL, load, to_frame
from quality import (
    Results,
    log,
    markdown,
    parse_ints,
    protocol_arguments,
    run_tune,
    select_datasets,
    shown_command,
    versions,
)

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "strategies.csv"
DEFAULT_CURVES = HERE / "results" / "strategies_curves.csv"
STRATEGIES = ("grid", "random", "tpe", "gp", "cmaes", "qmc")
#: Besides the six: ``NAME:N`` is sampler NAME with ``--startup-trials N``.
SPEC_HELP = "comma-separated; tpe:5 is tpe with --startup-trials 5"
BUDGETS = "10,30,100"
BASELINE = "tpe"
COLUMNS = [
    "dataset",
    "seed",
    "sampler",
    "budget",
    "study_trials",
    "auc_roc",
    "best_trial",
    "val_value",
    "seconds",
    "study_seconds",
    "trials_complete",
    "trials_pruned",
    "rows",
    "features",
    "error",
    "anomtune",
    "torch",
    "optuna",
    "sklearn",
    "date",
    "command",
    "bench_command",
]
CURVE_COLUMNS = [
    "dataset",
    "seed",
    "sampler",
    "study_trials",
    "trial",
    "seconds",
    "best_trial",
    "best_value",
    "auc_roc",
]


def grid_space(budget: int) -> str:
    """A space whose grid holds about ``budget`` combinations.

    The default space's grid has 10 combinations for one learning rate
    (the variants and their own choices); the learning rate and the
    bottleneck multiply them.
    """
    if budget <= 15:
        rates, latents = [0.003], None
    elif budget <= 60:
        rates, latents = [0.001, 0.003, 0.01], None
    else:
        rates, latents = [0.001, 0.003, 0.01], [4, 8, 16]
    text = f"[learning_rate]\ngrid = {rates}\n"
    if latents:
        text += f"[latent_dim]\ngrid = {latents}\n"
    return text


def refit_curve(csv_path: Path, journal: Path, study_name: str, seed: int, sampler: str):
    """Per finished trial: (number, seconds, best trial, its value, its test AUC-ROC)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from anomtune.tuning.config import TuneConfig
    from anomtune.tuning.objective import Objective
    from anomtune.tuning.refit import refit_best
    from anomtune.tuning.study import _build, trial_view

    config = TuneConfig(data=str(csv_path), label=LABEL, seed=seed, sampler=sampler, ensemble=1)
    _, prepared, space = _build(config)
    view, _ = trial_view(config, prepared)
    objective = Objective(config, view, space)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name=study_name, storage=storage)
    finished = [t for t in study.trials if t.state.is_finished() and t.datetime_complete]
    finished.sort(key=lambda t: t.datetime_complete)
    start = min(t.datetime_start for t in finished)
    tested: dict[int, float] = {}
    best = None
    rows = []
    for t in finished:
        if t.state == optuna.trial.TrialState.COMPLETE and (best is None or t.value > best.value):
            best = t
        if best is not None and best.number not in tested:
            tested[best.number] = float(
                refit_best(best, config, prepared, space, objective).metrics["test"]["auc_roc"]
            )
        rows.append(
            {
                "trial": len(rows) + 1,
                "seconds": round((t.datetime_complete - start).total_seconds(), 3),
                "best_trial": best.number if best else "",
                "best_value": best.value if best else "",
                "auc_roc": tested[best.number] if best else "",
            }
        )
    return rows


def run_strategy(info, seed, sampler, budget, args, results, curves, tmp, base) -> None:
    name = info["name"]
    study_budget = budget if sampler == "grid" else max(args.budget_list)
    if all(
        results.done(name, seed, sampler, b)
        for b in ([budget] if sampler == "grid" else args.budget_list)
    ):
        return
    X, y = load(args.datasets_root, name)
    csv_path = tmp / f"{name}.csv"
    if not csv_path.exists():
        to_frame(X, y).to_csv(csv_path, index=False)
    study = f"{name}-s{seed}-{sampler.replace(':', '_')}-{study_budget}-{os.getpid()}"
    base_sampler, _, startup = sampler.partition(":")
    extra = ["--sampler", base_sampler, "--ensemble", "1"]
    if startup:
        extra += ["--startup-trials", startup]
    if sampler == "grid":
        space = tmp / f"grid-{budget}.toml"
        space.write_text(grid_space(budget))
        extra += ["--space", str(space)]
    row = {
        **base,
        "dataset": name,
        "seed": seed,
        "sampler": sampler,
        "study_trials": study_budget,
        "rows": len(y),
        "features": X.shape[1],
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    try:
        summary, cmd, wall, _ = run_tune(
            csv_path, seed=seed, trials=study_budget, workdir=tmp, study=study, extra=extra
        )
        row["command"] = shown_command(cmd, tmp)
        row["study_seconds"] = round(wall, 3)
        counts = summary["study"]["trials"]
        row.update(trials_complete=counts["complete"], trials_pruned=counts["pruned"])
        curve = refit_curve(csv_path, tmp / f"{study}.journal", study, seed, base_sampler)
    except (RuntimeError, OSError) as exc:
        for b in [budget] if sampler == "grid" else args.budget_list:
            results.add({**row, "budget": b, "error": str(exc)[:500]})
        log(f"{name} seed {seed} {sampler}: FAILED {exc}")
        return
    finally:
        shutil.rmtree(tmp / f"run-{study}", ignore_errors=True)
    keys = {k: row[k] for k in ("dataset", "seed", "sampler", "study_trials")}
    curves.add_many([{**keys, **point} for point in curve])
    for b in [budget] if sampler == "grid" else args.budget_list:
        point = curve[min(b, len(curve)) - 1]
        results.add(
            {
                **row,
                "budget": b,
                "auc_roc": point["auc_roc"],
                "best_trial": point["best_trial"],
                "val_value": point["best_value"],
                "seconds": point["seconds"],
            }
        )
        log(f"{name} seed {seed} {sampler} {b} trials: test AUC-ROC {point['auc_roc']:.4f}")


# -- report ----------------------------------------------------------------------------


def ordered(samplers) -> list[str]:
    """The six strategies in :data:`STRATEGIES` order, each followed by its startup variants."""

    def key(spec: str):
        name, _, startup = spec.partition(":")
        return STRATEGIES.index(name), int(startup or 0)

    return sorted(set(samplers), key=key)


def report(results: Results, curves: Results, seeds: list[int], budgets: list[int]) -> None:
    """The tables of each budget, and the plot beside the results CSV."""
    rows = [
        r
        for r in results.rows
        if int(r["seed"]) in seeds and not r.get("error") and r.get("auc_roc") not in ("", None)
    ]
    if not rows:
        print("no rows yet")
        return
    print(f"### Search strategies: seeds {','.join(map(str, seeds))}\n")
    for b in budgets:
        per: dict[str, dict[str, list[float]]] = {}
        times: dict[str, list[float]] = {}
        for r in rows:
            if int(r["budget"]) != b:
                continue
            per.setdefault(r["sampler"], {}).setdefault(r["dataset"], []).append(
                float(r["auc_roc"])
            )
            times.setdefault(r["sampler"], []).append(float(r["seconds"]))
        # Only data sets every strategy has, so the means compare.
        common = set.intersection(*(set(d) for d in per.values())) if per else set()
        if not common:
            continue
        means = {s: {d: statistics.mean(v[d]) for d in common} for s, v in per.items()}
        ranks = {s: [] for s in means}
        for d in common:
            order = sorted(means, key=lambda s: -means[s][d])
            for s in means:
                better = sum(means[o][d] > means[s][d] for o in order)
                ties = sum(means[o][d] == means[s][d] for o in order)
                ranks[s].append(better + (ties + 1) / 2)
        table = []
        for s in ordered(means):
            wlt = ""
            if BASELINE in means and s != BASELINE:
                w = sum(means[s][d] > means[BASELINE][d] for d in common)
                lo = sum(means[s][d] < means[BASELINE][d] for d in common)
                wlt = f"{w}/{lo}/{len(common) - w - lo}"
            table.append(
                [
                    s,
                    f"{statistics.mean(means[s].values()):.4f}",
                    f"{statistics.mean(ranks[s]):.2f}",
                    wlt,
                    f"{statistics.median(times[s]):.1f}",
                ]
            )
        print(f"{b} trials, {len(common)} data sets:\n")
        print(
            markdown(
                [
                    "strategy",
                    "mean test AUC-ROC",
                    "average rank",
                    f"wins/losses/ties vs {BASELINE}",
                    "median seconds",
                ],
                table,
            )
        )
        print()
    plot(curves, seeds, results.path.with_suffix(".png"))


def plot(curves: Results, seeds: list[int], out: Path) -> None:
    """Mean anytime test AUC-ROC against trials and seconds, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: dict[tuple, list[dict]] = {}
    for r in curves.rows:
        if int(r["seed"]) in seeds and r["auc_roc"] not in ("", None):
            key = (r["sampler"], r["dataset"], r["seed"], r["study_trials"])
            runs.setdefault(key, []).append(r)
    if not runs:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for sampler in ordered(k[0] for k in runs):
        longest = max(int(k[3]) for k in runs if k[0] == sampler)
        mine = [v for k, v in runs.items() if k[0] == sampler and int(k[3]) == longest]
        n = min(len(v) for v in mine)
        xs = list(range(1, n + 1))
        ys = [statistics.mean(float(v[i]["auc_roc"]) for v in mine) for i in range(n)]
        secs = [statistics.median(float(v[i]["seconds"]) for v in mine) for i in range(n)]
        left.plot(xs, ys, label=sampler)
        right.plot(secs, ys, label=sampler)
    left.set(xlabel="trials", ylabel="mean test AUC-ROC of the best-on-validation trial")
    right.set(xlabel="median seconds", xscale="log")
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"plot: {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    protocol_arguments(parser)
    parser.add_argument("--samplers", default=",".join(STRATEGIES), help=SPEC_HELP)
    parser.add_argument("--budgets", default=BUDGETS, help=f"default: {BUDGETS}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--curves", type=Path, default=DEFAULT_CURVES)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    args.budget_list = parse_ints(args.budgets)
    results = Results(args.out, COLUMNS, ("dataset", "seed", "sampler", "budget"))
    curves = Results(
        args.curves, CURVE_COLUMNS, ("dataset", "seed", "sampler", "study_trials", "trial")
    )
    seeds = parse_ints(args.seeds)
    if not args.report_only:
        samplers = [s for s in args.samplers.split(",") if s]
        unknown = {s for s in samplers if s.partition(":")[0] not in STRATEGIES}
        if unknown:
            raise SystemExit(f"unknown sampler(s): {', '.join(sorted(unknown))}")
        chosen = select_datasets(args.datasets_root, args.datasets, args.max_rows)
        base = {**versions(), "bench_command": shlex.join(["python", *sys.argv])}
        with tempfile.TemporaryDirectory(prefix="anomtune-strategies-") as tmpdir:
            tmp = Path(tmpdir)
            for seed in seeds:
                for info in chosen:
                    for sampler in samplers:
                        budgets = args.budget_list if sampler == "grid" else [max(args.budget_list)]
                        for budget in budgets:
                            run_strategy(
                                info, seed, sampler, budget, args, results, curves, tmp, base
                            )
    report(results, curves, seeds, args.budget_list)


if __name__ == "__main__":
    main()
