"""A finished run's search space narrowed around its best quarter of completed trials."""

from __future__ import annotations

from anomtune.errors import ConfigError
from anomtune.run import RunFolder
from anomtune.space import SearchSpace, narrow, top_quartile

__all__ = ["refine_space", "refine_trials"]


def refine_trials(run: RunFolder, space: SearchSpace) -> list[dict]:
    """The parameters, typed by ``space``, of the run's best quarter of completed trials."""
    complete = [t for t in run.trials() if t.state == "complete" and t.value is not None]
    if not complete:
        raise ConfigError(f"{run.path / 'trials.csv'}: no completed trials to refine around")
    best = top_quartile([t.value for t in complete], maximize=run.summary.maximize)
    return [complete[i].typed_params(space) for i in best]


def refine_space(run: RunFolder) -> tuple[SearchSpace, int]:
    """The run's space narrowed to what its best trials used, and how many trials that was."""
    space = run.space()
    best = refine_trials(run, space)
    return narrow(space, best), len(best)
