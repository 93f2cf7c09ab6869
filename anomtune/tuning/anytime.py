"""How a study's best value grew: against trials and seconds, and whether it still grows.

:func:`anytime` reads the finished trials of a study in the order they
finished and records, after each, the best value so far and the seconds since
the first trial started. ``summary.json`` keeps it under ``anytime``; the
HTML report draws it and says, from :func:`last_third`, whether the last
third of the trials still improved the best value, that is whether more
trials are likely to help.
"""

from __future__ import annotations

__all__ = ["anytime", "last_third", "last_third_sentence"]


def anytime(trials, *, maximize: bool = True) -> dict:
    """The best-so-far curve of ``trials`` (Optuna FrozenTrials), with its verdict.

    ``{"points": [{"trial", "state", "seconds", "best"}, ...], "last_third": {...}}``:
    one point per finished trial (complete, pruned or failed) in the order
    they finished; ``best`` is the best value of the complete trials so far
    (None before the first), ``seconds`` the time since the first trial
    started. Only the first objective counts.
    """
    from optuna.trial import TrialState

    finished = [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        and t.datetime_complete is not None
    ]
    finished.sort(key=lambda t: (t.datetime_complete, t.number))
    starts = [t.datetime_start for t in finished if t.datetime_start is not None]
    origin = min(starts) if starts else None
    best = None
    points = []
    for t in finished:
        if t.state == TrialState.COMPLETE and t.values:
            value = float(t.values[0])
            if best is None or (value > best if maximize else value < best):
                best = value
        seconds = (t.datetime_complete - origin).total_seconds() if origin is not None else None
        points.append(
            {
                "trial": t.number,
                "state": t.state.name.lower(),
                "seconds": round(seconds, 3) if seconds is not None else None,
                "best": best,
            }
        )
    return {"points": points, "maximize": maximize, "last_third": last_third(points, maximize)}


def last_third(points: list[dict], maximize: bool = True) -> dict:
    """Whether the last third of the finished trials improved the best value.

    ``{"trials", "last_third_from", "before", "after", "improved"}``; with fewer
    than three finished trials, or no complete trial before the last third,
    ``improved`` is None (there is nothing to compare).
    """
    n = len(points)
    cut = n - n // 3  # points[:cut] are the first two thirds
    out = {"trials": n, "last_third_from": cut + 1, "before": None, "after": None}
    if n < 3:
        return {**out, "improved": None}
    before, after = points[cut - 1]["best"], points[-1]["best"]
    out.update(before=before, after=after)
    if before is None or after is None:
        return {**out, "improved": None}
    return {**out, "improved": bool(after > before if maximize else after < before)}


def last_third_sentence(verdict: dict, objective: str) -> str:
    """One sentence on :func:`last_third`'s verdict, for the report and ``tune``."""
    if objective == "val_loss":
        objective = "reconstruction error"
    n, improved = verdict["trials"], verdict["improved"]
    if improved is None:
        if n < 3:
            return f"Too few finished trials ({n}) to tell whether more would help."
        return (
            "No trial completed in the first two thirds of the study, so whether more "
            "trials would help cannot be told."
        )
    last = n - verdict["last_third_from"] + 1
    before, after = _value(verdict["before"]), _value(verdict["after"])
    if improved:
        return (
            f"The last third of the trials (the last {last} of {n}) still improved the best "
            f"validation {objective}, from {before} to {after}: more trials are "
            "likely to help."
        )
    return (
        f"The last third of the trials (the last {last} of {n}) did not improve the best "
        f"validation {objective} ({after}): more trials are unlikely to help much."
    )


def _value(value: float) -> str:
    """A metric in [0, 1] with four decimals, another value with four digits."""
    return f"{value:.4f}" if 0.0 <= value <= 1.0 else f"{value:.4g}"
