"""The best-so-far curve of a study, and whether its last third still improved."""

from __future__ import annotations

import datetime as dt

import optuna
import pytest

from anomtune.tuning.anytime import anytime, last_third, last_third_sentence


def finished(values, states=None):
    """Frozen trials finishing one second apart, with these values (None: pruned)."""
    start = dt.datetime(2026, 1, 1)
    out = []
    for i, value in enumerate(values):
        state = (states or {}).get(i)
        if state is None:
            state = "COMPLETE" if value is not None else "PRUNED"
        out.append(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState[state],
                value=value if state == "COMPLETE" else None,
                params={},
                distributions={},
            )
        )
        out[-1].number = i
        out[-1].datetime_start = start + dt.timedelta(seconds=i)
        out[-1].datetime_complete = start + dt.timedelta(seconds=i + 1)
    return out


def test_the_curve_follows_the_best_complete_value_in_finishing_order():
    trials = finished([0.5, None, 0.7, 0.6, 0.9, 0.8])
    record = anytime(trials)
    assert [p["best"] for p in record["points"]] == [0.5, 0.5, 0.7, 0.7, 0.9, 0.9]
    assert [p["seconds"] for p in record["points"]] == [1, 2, 3, 4, 5, 6]
    assert [p["state"] for p in record["points"]][:2] == ["complete", "pruned"]
    # Trials that finish out of number order (two workers) are read by finishing time.
    trials[4].datetime_complete, trials[5].datetime_complete = (
        trials[5].datetime_complete,
        trials[4].datetime_complete,
    )
    assert [p["trial"] for p in anytime(trials)["points"]][-2:] == [5, 4]
    # A loss: lower is better.
    losses = anytime(finished([3.0, 2.0, 2.5]), maximize=False)
    assert [p["best"] for p in losses["points"]] == [3.0, 2.0, 2.0]


def test_the_last_third_verdict():
    improved = anytime(finished([0.5, 0.6, 0.6, 0.6, 0.7, 0.6]))["last_third"]
    assert improved == {
        "trials": 6, "last_third_from": 5, "before": 0.6, "after": 0.7, "improved": True,
    }  # fmt: skip
    flat = anytime(finished([0.5, 0.9, 0.6, 0.7, 0.8, 0.85]))["last_third"]
    assert flat["improved"] is False and flat["after"] == 0.9
    sentence = last_third_sentence(improved, "auc-roc")
    assert "last 2 of 6" in sentence and "0.6000 to 0.7000" in sentence and "likely" in sentence
    assert "unlikely" in last_third_sentence(flat, "auc-pr")
    assert last_third([{"best": 0.5}, {"best": 0.6}])["improved"] is None
    assert "Too few" in last_third_sentence(last_third([{"best": 0.5}]), "auc-roc")
    nothing = anytime(finished([None, None, None, None, 0.5, 0.6]))["last_third"]
    assert nothing["improved"] is None
    assert "cannot be told" in last_third_sentence(nothing, "auc-roc")


def test_a_failed_trial_is_a_point_without_changing_the_best():
    record = anytime(finished([0.5, None, 0.4], states={1: "FAIL"}))
    assert [p["state"] for p in record["points"]] == ["complete", "fail", "complete"]
    assert [p["best"] for p in record["points"]] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("maximize", [True, False])
def test_an_empty_study_has_no_points(maximize):
    assert anytime([], maximize=maximize)["points"] == []


# -- every strategy, every budget, through the command line ----------------------------


@pytest.mark.parametrize("sampler", ["grid", "random", "tpe", "gp", "cmaes", "qmc"])
def test_every_strategy_runs_at_every_budget_and_records_its_curve(tmp_path, sampler):
    import json

    from conftest import FAST_SPACE, TINY_SPACE, ok, write_planted

    data = write_planted(tmp_path / "tiny.csv", n=200)
    space = tmp_path / "space.toml"
    # Grid search needs grid values: FAST_SPACE's make 20 combinations.
    space.write_text(FAST_SPACE if sampler == "grid" else TINY_SPACE)
    for budget in (10, 30, 100):
        summary = json.loads(
            ok(
                "tune",
                data,
                "--label",
                "label",
                "--space",
                space,
                "--sampler",
                sampler,
                "--trials",
                budget,
                "--seed",
                "1",
                "--study",
                f"{sampler}-{budget}",
                "--storage",
                tmp_path / f"{sampler}-{budget}.journal",
                "--out",
                tmp_path / f"run-{sampler}-{budget}",
                "--quiet",
                "--json",
            )
        )
        counts = summary["study"]["trials"]
        ran = counts["complete"] + counts["pruned"] + counts["fail"]
        # Grid search runs each of its combinations once, at most the budget.
        assert ran == budget if sampler != "grid" else 1 <= ran <= budget
        points = summary["anytime"]["points"]
        assert [p["trial"] for p in points] == sorted(p["trial"] for p in points)
        assert len(points) == ran and all(p["seconds"] is not None for p in points)
        bests = [p["best"] for p in points if p["best"] is not None]
        assert bests == sorted(bests)  # a best-so-far curve never falls (maximised)
        assert bests[-1] == pytest.approx(summary["best"]["value"])
        assert summary["anytime"]["last_third"]["trials"] == ran
