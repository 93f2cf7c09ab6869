"""After sampled trials: the trial's own network against its refit on every row.

Runs the default tune (30 trials, sampled trials) on one large ADBench set
through the command line, then for its best complete trials builds both
networks the model can use (``anomtune.tuning.refit``): the trial's own,
rebuilt from its seed on its sample, and the refit on every training row
(at most the trial's best epoch count, its best epoch on every validation
row kept). It prints each one's validation and test AUC-ROC, and writes them
as CSV.

    python benchmarks/refit_check.py ../shared/datasets --dataset celeba --seed 1 --top 8
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adbench import LABEL, load, to_frame
from quality import log, markdown, run_tune, versions

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets_root", type=Path, help="the shared datasets folder")
    parser.add_argument("--dataset", default="celeba")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--top", type=int, default=8, help="best complete trials to check")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "refit_check.csv")
    args = parser.parse_args(argv)

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from anomtune.metrics import auc_roc
    from anomtune.pipeline import fit_detector
    from anomtune.tuning.config import TuneConfig
    from anomtune.tuning.objective import EpochTracker, Objective
    from anomtune.tuning.study import _build, trial_view

    with tempfile.TemporaryDirectory(prefix="anomtune-refit-") as tmpdir:
        tmp = Path(tmpdir)
        X, y = load(args.datasets_root, args.dataset)
        csv_path = tmp / f"{args.dataset}.csv"
        to_frame(X, y).to_csv(csv_path, index=False)
        study_name = f"{args.dataset}-s{args.seed}"
        log(f"{study_name}: tune")
        run_tune(csv_path, seed=args.seed, trials=30, workdir=tmp, study=study_name)
        config = TuneConfig(data=str(csv_path), label=LABEL, seed=args.seed)
        _, prepared, space = _build(config)
        view, _ = trial_view(config, prepared)
        objective = Objective(config, view, space)
        storage = JournalStorage(JournalFileBackend(str(tmp / f"{study_name}.journal")))
        study = optuna.load_study(study_name=study_name, storage=storage)
        done = sorted(
            (t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: -t.value
        )
        X_val, y_val = prepared.rows("val")
        X_test, y_test = prepared.rows("test")
        rows = []
        for t in done[: args.top]:
            params = space.sample(optuna.trial.FixedTrial(t.params))
            best_epoch = int(t.user_attrs.get("best_epoch") or params["epochs"])
            params = {**params, "epochs": max(1, best_epoch)}
            seed = int(t.user_attrs["seed"])
            own = fit_detector(view, params, seed=seed)
            tracker = EpochTracker(
                objective.validation_on(prepared), None, maximize=True, patience=20, report=False
            )
            refit = fit_detector(prepared, params, seed=seed, keep_best=tracker)
            rows.append(
                {
                    "dataset": args.dataset,
                    "seed": args.seed,
                    "trial": t.number,
                    "variant": params["variant"],
                    "learning_rate": params["learning_rate"],
                    "best_epoch": best_epoch,
                    "trial_value": t.value,
                    "own_val": auc_roc(y_val, own.anomaly_score(X_val)),
                    "own_test": auc_roc(y_test, own.anomaly_score(X_test)),
                    "refit_epochs": int(refit.n_epochs_),
                    "refit_val": auc_roc(y_val, refit.anomaly_score(X_val)),
                    "refit_test": auc_roc(y_test, refit.anomaly_score(X_test)),
                    **versions(),
                }
            )
            log(f"trial {t.number}: {rows[-1]['own_val']:.4f} / {rows[-1]['refit_val']:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    header = [
        "trial",
        "variant",
        "learning rate",
        "best epoch",
        "value on the sample",
        "own: val",
        "own: test",
        "refit: epochs",
        "refit: val",
        "refit: test",
    ]
    table = [
        [
            f"#{r['trial']}",
            r["variant"],
            f"{r['learning_rate']:.2g}",
            r["best_epoch"],
            r["trial_value"],
            r["own_val"],
            r["own_test"],
            r["refit_epochs"],
            r["refit_val"],
            r["refit_test"],
        ]
        for r in rows
    ]
    print(markdown(header, table))


if __name__ == "__main__":
    main()
