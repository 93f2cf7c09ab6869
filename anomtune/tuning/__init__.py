"""Tuning: search autoencoders with Optuna against labeled validation data.

:func:`tune` is the public face (the ``anomtune tune`` command is a thin
layer over it). The parts: :mod:`~anomtune.tuning.config` (the settings),
:mod:`~anomtune.tuning.storage` (Optuna storages, read-write and
read-only), :mod:`~anomtune.tuning.factories` (samplers and pruners),
:mod:`~anomtune.tuning.objective` (what a trial runs),
:mod:`~anomtune.tuning.study` (the study lifecycle and workers),
:mod:`~anomtune.tuning.refit` (the best trial refitted) and
:mod:`~anomtune.tuning.refine` (a narrower space from a finished run).
"""

from __future__ import annotations

from anomtune.tuning.api import tune
from anomtune.tuning.config import SPACE_HEADER, TuneConfig
from anomtune.tuning.factories import make_pruner, make_sampler, pruner_settings
from anomtune.tuning.refine import refine_space, refine_trials
from anomtune.tuning.refit import select_best
from anomtune.tuning.storage import (
    count_states,
    fail_orphaned_trials,
    open_existing_storage,
    open_storage,
)
from anomtune.tuning.study import TuneResult, run_study, trial_rows

# The names accepted (samplers, pruners, metrics) and the defaults are
# anomtune.tuning.config's.
__all__ = [
    "SPACE_HEADER",
    "TuneConfig",
    "TuneResult",
    "count_states",
    "fail_orphaned_trials",
    "make_pruner",
    "make_sampler",
    "open_existing_storage",
    "open_storage",
    "pruner_settings",
    "refine_space",
    "refine_trials",
    "run_study",
    "select_best",
    "trial_rows",
    "tune",
]
