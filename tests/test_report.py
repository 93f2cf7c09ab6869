"""The HTML report of a tuning run: content, errors, and rendering in headless Chromium."""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

from anomtune.cli import main
from anomtune.report import build_report, run_browser, screenshot

CHROMIUM = "/usr/bin/chromium"

# Small networks and few epochs: the run takes a few seconds. Successive
# halving first judges trials at epoch 10, so 14 epochs let it prune some.
SPACE = """
epochs = 14
[n_layers]
type = "int"
low = 1
high = 2
[width]
type = "int"
low = 6
high = 16
[batch_size]
choices = [32, 64]
"""

EXPECTED_PLOTS = {
    "history",
    "anytime",
    "intermediate",
    "importance",
    "slice",
    "evaluation-val",
    "evaluation-test",
    "top-rows",
}


def write_data(path: Path, n: int = 400, seed: int = 3) -> Path:
    """Rows near a plane in 6 dimensions, 10% off it, and one categorical column."""
    rng = np.random.default_rng(seed)
    n_anom = n // 10
    basis = rng.normal(size=(2, 6))
    normal = rng.normal(size=(n - n_anom, 2)) @ basis + 0.05 * rng.normal(size=(n - n_anom, 6))
    anomalies = rng.normal(scale=2.0, size=(n_anom, 6))
    frame = pd.DataFrame(np.vstack([normal, anomalies]), columns=[f"x{i}" for i in range(6)])
    frame["site"] = rng.choice(["north", "south"], size=n)
    frame["label"] = np.r_[np.zeros(n - n_anom, int), np.ones(n_anom, int)]
    frame.sample(frac=1.0, random_state=seed).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real tuning run with its report written by ``tune --report``."""
    root = tmp_path_factory.mktemp("report")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        write_data(root / "planted.csv")
        (root / "space.toml").write_text(SPACE)
        args = [
            "tune",
            "planted.csv",
            "--label",
            "label",
            "--space",
            "space.toml",
            "--trials",
            "10",
            "--seed",
            "0",
            "--study",
            "rep",
            "--storage",
            "rep.journal",
            "--out",
            "run",
            "--report",
            "report.html",
            "--quiet",
        ]
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 0
    finally:
        os.chdir(cwd)
    summary = json.loads((root / "run" / "summary.json").read_text())
    page = (root / "report.html").read_text()
    return root, summary, page


def test_report_holds_every_section_and_the_summary_numbers(run):
    _root, summary, page = run
    for section in ("summary", "search", "importance", "evaluation", "top-rows"):
        assert f'id="{section}"' in page
    found = set(re.findall(r'<figure class="plot" data-plot="([^"]+)">\s*<svg', page))
    assert found == EXPECTED_PLOTS
    # Self-contained: nothing fetched, no script needed.
    assert "<script" not in page
    assert not re.search(r'(?:src|href)="(?!#|data:image/png;base64,)', page)
    assert "<link" not in page
    # Numbers from summary.json.
    data = summary["data"]
    assert data["fingerprint"] in page
    assert f"{data['rows']:,}" in page
    assert f"{data['anomaly_rate']:.2%}" in page
    for part in ("val", "test"):
        for name in ("auc_roc", "auc_pr", "f1", "precision", "recall"):
            assert f'<td class="n">{summary["metrics"][part][name]:.4f}</td>' in page
        caption = f"AUC-ROC {summary['metrics'][part]['auc_roc']:.4f}, AUC-PR"
        assert caption in page
    assert f"Best trial #{summary['best']['number']}" in page
    # The shipped ensemble's members, as summary.json records them.
    section = page[page.index('id="ensemble"') :]
    for member in summary["ensemble"]["members"]:
        assert f"#{member['trial']}</td><td>{member['score']}</td>" in section
    assert f"of the ensemble: {summary['ensemble']['val_value']:.4f}" in section
    assert f"<code>{summary['threshold']:.6g}</code>" in page
    counts = summary["study"]["trials"]
    assert counts["pruned"] > 0, "the run should exercise the pruned-trial marks"
    assert f"{counts['pruned']} pruned" in page
    assert summary["versions"]["torch"] in page
    command = html.unescape(re.search(r'<pre id="command">(.*?)</pre>', page, re.S).group(1))
    assert command == " ".join(summary["command"])
    assert 'class="warning"' not in page  # recomputed AUCs equal the recorded ones


def test_the_anytime_plot_and_its_verdict_come_from_the_study(run):
    from anomtune.tuning.anytime import last_third_sentence

    _, summary, page = run
    record = summary["anytime"]
    assert len(record["points"]) == 10
    sentence = last_third_sentence(record["last_third"], "auc-roc")
    assert f'<p class="verdict" id="more-trials">{html.escape(sentence)}</p>' in page
    assert "last 3 of 10" in sentence
    # Its figures: the best complete value before the last third and at the end.
    values = [t for t in summary_trials(run) if t["state"] == "complete"]
    last = max(float(t["value"]) for t in values)
    assert record["last_third"]["after"] == pytest.approx(last)


def summary_trials(run) -> list[dict]:
    import csv

    root, _, _ = run
    with (root / "run" / "trials.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_confusion_matrices_agree_with_the_recorded_metrics(run):
    _, summary, page = run
    for part in ("val", "test"):
        table = re.search(rf'<table class="confusion confusion-{part}">(.*?)</table>', page, re.S)
        tn, fp, fn, tp = (int(v) for v in re.findall(r"<td>(\d+)</td>", table.group(1)))
        assert tn + fp + fn + tp == summary["split"]["rows"][part]
        metrics = summary["metrics"][part]
        assert tp / (tp + fn) == pytest.approx(metrics["recall"])
        assert tp / (tp + fp) == pytest.approx(metrics["precision"])


def test_top_rows_are_the_highest_scores_with_their_largest_errors(run):
    _, _summary, page = run
    table = re.search(r'<table class="top-rows">(.*?)</table>', page, re.S).group(1)
    rows = re.findall(r"<tr><td>(val|test)</td><td>(\d+)</td><td>([^<]+)</td>(.*?)</tr>", table)
    assert len(rows) == 10
    scores = [float(r[2]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    frame = pd.read_csv(Path(run[0]) / "planted.csv")
    top_row = frame.iloc[int(rows[0][1]) - 1]
    # The first listed column of the top row shows that row's value in the file.
    name, value = re.search(r"<b>(\w+)</b> = ([-\d.]+)", rows[0][3]).groups()
    assert float(value) == pytest.approx(float(top_row[name]), abs=1e-4)
    shares = [float(s) for s in re.findall(r"\((\d+)%\)", rows[0][3])]
    assert shares == sorted(shares, reverse=True)


def test_without_the_study_the_history_comes_from_trials_csv(run):
    root, _, _ = run
    cwd = os.getcwd()
    os.chdir(root)
    try:
        page = build_report("run", storage="moved.journal")
    finally:
        os.chdir(cwd)
    assert "the study storage moved.journal is not there" in page
    found = set(re.findall(r'data-plot="([^"]+)"', page))
    assert {"history", "evaluation-val", "evaluation-test", "top-rows"} <= found
    assert "intermediate" not in found and "importance" not in found


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["report", "missing"], "missing: not a run folder (no such folder)"),
        (["report", "planted.csv"], "is a file"),
        (["report", "."], "not a run folder (no summary.json)"),
        (["report", "run", "-o", "nowhere/r.html"], "no folder nowhere"),
        (["report", "run", "-o", "out.html", "--data", "other.csv"], "not the data the run"),
        (["report", "run", "-o", "out.html", "--top", "0"], "at least 1"),
    ],
)
def test_bad_run_folders_and_options_are_one_line_errors(run, capsys, monkeypatch, args, needle):
    root, _, _ = run
    monkeypatch.chdir(root)
    write_data(root / "other.csv", seed=4)
    code, _out, err = run_cli(args, capsys)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert not (root / "out.html").exists()


def test_tune_refuses_a_report_path_it_cannot_write_before_tuning(run, capsys, monkeypatch):
    root, _, _ = run
    monkeypatch.chdir(root)
    args = ["tune", "planted.csv", "--label", "label", "--space", "space.toml", "--trials", "1"]
    code, _, err = run_cli([*args, "--study", "x", "--report", "nowhere/r.html"], capsys)
    assert code == 2
    assert "--report nowhere/r.html: no folder nowhere" in err
    assert not Path("runs/x").exists()


# -- in a real browser ----------------------------------------------------------

# Recorded into the page: script errors from the first moment, then for every
# plot its size on the page, how many shapes it holds and how many pixels it
# paints when the browser draws it as an image.
PROBE_HEAD = """<script>
window.__errors = [];
addEventListener('error', function (e) { window.__errors.push(String(e.message || e.type)); });
addEventListener('unhandledrejection', function (e) { window.__errors.push(String(e.reason)); });
</script>"""

PROBE_BODY = """<script>
addEventListener('load', function () {
  var figures = document.querySelectorAll('figure.plot');
  var result = {errors: window.__errors, plots: []};
  var pending = figures.length;
  function finish() {
    var out = document.createElement('pre');
    out.id = 'probe';
    out.textContent = JSON.stringify(result);
    document.body.appendChild(out);
  }
  function settle() { if (--pending === 0) finish(); }
  figures.forEach(function (figure) {
    var svg = figure.querySelector('svg');
    var box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    var record = {name: figure.dataset.plot, width: box.width, height: box.height,
                  shapes: svg ? svg.querySelectorAll('path, use, image').length : 0,
                  painted: -1};
    result.plots.push(record);
    if (!svg) { settle(); return; }
    var image = new Image();
    image.onload = function () {
      var canvas = document.createElement('canvas');
      canvas.width = 300; canvas.height = 200;
      var ctx = canvas.getContext('2d');
      ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, 300, 200);
      ctx.drawImage(image, 0, 0, 300, 200);
      var px = ctx.getImageData(0, 0, 300, 200).data, n = 0;
      for (var i = 0; i < px.length; i += 4) {
        if (px[i] < 200 || px[i + 1] < 200 || px[i + 2] < 200) n++;
      }
      record.painted = n;
      settle();
    };
    image.onerror = function () { record.painted = -2; settle(); };
    image.src = 'data:image/svg+xml;charset=utf-8,' +
      encodeURIComponent(new XMLSerializer().serializeToString(svg));
  });
  if (!pending) finish();
});
</script>"""


@pytest.fixture()
def chromium():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI (.ci/run installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    return CHROMIUM


def test_every_plot_renders_in_headless_chromium_without_script_errors(run, chromium, tmp_path):
    root, _, page = run
    probed = page.replace("<head>", "<head>" + PROBE_HEAD, 1).replace(
        "</body>", PROBE_BODY + "</body>", 1
    )
    target = tmp_path / "probed.html"
    target.write_text(probed)
    dom = run_browser(
        chromium,
        [
            "--window-size=1200,900",
            "--virtual-time-budget=15000",
            "--dump-dom",
            target.as_uri(),
        ],
    )
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the page's load handler never ran"
    result = json.loads(html.unescape(found.group(1)))
    assert result["errors"] == []
    plots = {p["name"]: p for p in result["plots"]}
    assert set(plots) == EXPECTED_PLOTS
    for name, plot in plots.items():
        assert plot["width"] > 300 and plot["height"] > 100, (name, plot)
        assert plot["shapes"] > 10, (name, plot)
        assert plot["painted"] > 1000, (name, plot)  # -2: the SVG did not load as an image

    png = screenshot(root / "report.html", tmp_path / "report.png", browser=chromium)
    from PIL import Image

    with Image.open(png) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width == 1200 and height > 2000  # the whole page, not one window
        colours = image.convert("L").getextrema()
        assert colours[0] < 50 and colours[1] > 200  # text and plots on a light page


def test_unlabeled_run_and_moved_data_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_data(tmp_path / "rows.csv")
    (tmp_path / "space.toml").write_text(SPACE.replace("epochs = 14", "epochs = 4"))
    args = ["tune", "rows.csv", "--exclude", "label", "--space", "space.toml", "--trials", "2"]
    code, _, err = run_cli([*args, "--study", "u", "--out", "u", "--quiet"], capsys)
    assert code == 0, err
    (tmp_path / "moved").mkdir()
    os.replace("rows.csv", "moved/rows.csv")
    code, _, err = run_cli(["report", "u", "-o", "u.html"], capsys)
    assert code == 2 and "give its current path with --data" in err
    assert not Path("u.html").exists()
    code, out, err = run_cli(["report", "u", "-o", "u.html", "--data", "moved/rows.csv"], capsys)
    assert code == 0, err
    assert out.strip() == "wrote u.html"
    page = Path("u.html").read_text()
    found = set(re.findall(r'data-plot="([^"]+)"', page))
    assert found == {
        *("history", "anytime", "intermediate", "slice"),
        *("scores-val", "scores-test", "top-rows"),
    }
    assert "fANOVA importances need at least 4 complete trials; this run has 2." in page
    assert "RECONSTRUCTION-ERROR" in page
