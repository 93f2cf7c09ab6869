"""The Optuna samplers and pruners that ``--sampler`` and ``--pruner`` name."""

from __future__ import annotations

import warnings

from anomtune.space import SearchSpace

__all__ = [
    "STARTUP_TRIALS",
    "make_pruner",
    "make_sampler",
    "max_epochs",
    "pruner_settings",
    "startup_trials",
]


#: Random trials each model-based sampler runs before it models the results.
STARTUP_TRIALS = {"tpe": 10, "gp": 10, "cmaes": 5}


def startup_trials(name: str, requested: int | None = None) -> int | None:
    """The startup trials of sampler ``name``: ``requested``, else its default
    (None for the samplers that do not model earlier trials)."""
    if name not in STARTUP_TRIALS:
        return None
    return STARTUP_TRIALS[name] if requested is None else requested


def make_sampler(name: str, seed: int, startup: int | None = None):
    """The Optuna sampler called ``name``, seeded, with ``startup`` random trials
    first (its :data:`STARTUP_TRIALS` default when None)."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    n_startup = startup_trials(name, startup)
    if name in ("random", "grid"):
        # Grid combinations are enqueued; random sampling only fills any gap.
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed,
            multivariate=True,
            group=True,
            n_startup_trials=n_startup,
        )
    if name == "gp":
        return optuna.samplers.GPSampler(
            seed=seed, n_startup_trials=n_startup, warn_independent_sampling=False
        )
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(
            seed=seed,
            n_startup_trials=n_startup,
            warn_independent_sampling=False,
            independent_sampler=optuna.samplers.TPESampler(seed=seed),
        )
    return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)


def pruner_settings(name: str, *, cv: bool, epochs: int) -> dict:
    """The Optuna pruner class and arguments that ``--pruner name`` stands for."""
    if name == "none":
        return {"class": "NopPruner"}
    if cv:
        return {"class": "WilcoxonPruner", "p_threshold": 0.1, "n_startup_steps": 2}
    if name == "median":
        return {"class": "MedianPruner", "n_startup_trials": 5, "n_warmup_steps": 5}
    if name == "sha":
        return {
            "class": "SuccessiveHalvingPruner",
            "min_resource": 4,
            "reduction_factor": 4,
            "min_early_stopping_rate": 0,
        }
    return {
        "class": "HyperbandPruner",
        "min_resource": 10,
        "max_resource": max(epochs, 11),
        "reduction_factor": 3,
    }


def make_pruner(name: str, *, cv: bool, epochs: int):
    """The Optuna pruner called ``name`` (Wilcoxon over folds with ``cv``)."""
    import optuna

    settings = dict(pruner_settings(name, cv=cv, epochs=epochs))
    return getattr(optuna.pruners, settings.pop("class"))(**settings)


def max_epochs(space: SearchSpace) -> int:
    """The most epochs a trial of ``space`` trains (Hyperband's maximum resource)."""
    try:
        p = space["epochs"]
    except KeyError:
        return 50
    return int(p.value if p.type == "fixed" else p.high)
