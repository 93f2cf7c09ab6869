"""``anomtune score --dask`` and ``score_dataset`` on a real local Dask cluster.

The cluster has two worker processes on 127.0.0.1, started and stopped here;
the model comes from a one-trial tune registered in a temporary registry.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import TINY_SPACE as FAST_SPACE
from conftest import ok, refused, run, write_planted

from anomtune.distributed import ClusterError, score_dataset
from anomtune.errors import DataError


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# `make test` installs the dask extra; elsewhere these tests skip without it,
# except under CI, where a missing extra is an error.
if in_ci():
    import distributed
else:
    distributed = pytest.importorskip("distributed", reason="needs anomtune[dask]")


FEATURES = [f"x{i}" for i in range(6)]
# A scheduler's HTTP server (on 127.0.0.1) takes another port when 8787 is
# in use, as it is when two clusters run at once (pytest-xdist), and warns.
pytestmark = pytest.mark.filterwarnings("ignore:Port 8787 is already in use:UserWarning")


@pytest.fixture(autouse=True)
def _no_registry_env(monkeypatch):
    monkeypatch.delenv("ANOMTUNE_REGISTRY", raising=False)
    monkeypatch.delenv("ANOMTUNE_REGISTRY_FILES", raising=False)


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> dict:
    """A one-trial tune registered as ``tiny`` and promoted to ``tiny@champion``."""
    base = tmp_path_factory.mktemp("dask-model")
    data = write_planted(base / "planted.csv")
    (base / "space.toml").write_text(FAST_SPACE)
    run_dir = base / "run"
    ok(
        "tune", data, "--label", "label", "--space", base / "space.toml", "--trials", "1",
        "--study", "tiny", "--storage", base / "studies.journal", "--out", run_dir, "--quiet",
    )  # fmt: skip
    registry = base / "registry"
    info = json.loads(
        ok("registry", "register", run_dir, "--name", "tiny", "--registry", registry, "--json")
    )
    ok("registry", "promote", "tiny", "1", "--registry", registry)
    return {"registry": registry, "file": Path(info["file"]), "sha256": info["sha256"]}


@pytest.fixture(scope="module")
def cluster():
    """A Dask cluster of two worker processes on 127.0.0.1 and a client of it."""
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as local,
        distributed.Client(local, set_as_default=False) as client,
    ):
        client.wait_for_workers(2, timeout=60)
        yield client


def partition(n: int, seed: int) -> pd.DataFrame:
    """Rows like the training rows (and some far off them), with an id column."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 6)), columns=FEATURES)
    frame.insert(0, "id", [f"p{seed}-{i}" for i in range(n)])
    return frame


@pytest.fixture()
def dataset(tmp_path) -> Path:
    """Four Parquet and two CSV partitions of different sizes; one CSV has its
    columns in another order and an extra column."""
    folder = tmp_path / "data"
    folder.mkdir()
    for i, n in enumerate([700, 1200, 50, 3000]):
        partition(n, i).to_parquet(folder / f"part-{i}.parquet", index=False)
    partition(400, 4).to_csv(folder / "part-4.csv", index=False)
    odd = partition(900, 5)[["x3", "id", "x0", "x5", "x1", "x4", "x2"]].assign(note="extra")
    odd.to_csv(folder / "part-5.csv", index=False)
    return folder


def read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def test_cluster_scores_equal_anomtune_score_on_each_file(registered, cluster, dataset, tmp_path):
    address = cluster.scheduler.address
    out = tmp_path / "scores"
    code, _, err = run(
        "score", "tiny@champion", dataset / "part-*", "--dask", address, "-o", out,
        "--registry", registered["registry"], "--id-column", "id", "--explain", "2", "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(err)
    inputs = sorted(dataset.iterdir())
    assert summary["files"] == len(inputs) == 6
    assert summary["model"] == "tiny/1" and summary["sha256"] == registered["sha256"]
    # Both worker processes scored partitions, and each opened the model once.
    assert summary["workers"] == 2
    assert summary["model_opens"] == 2
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in inputs]

    rows = anomalies = 0
    for source in inputs:
        expected = tmp_path / "one" / source.name
        ok(
            "score", "tiny@champion", source, "-o", expected, "--registry",
            registered["registry"], "--id-column", "id", "--explain", "2", "--quiet",
        )  # fmt: skip
        mine, theirs = read(out / source.name), read(expected)
        pd.testing.assert_frame_equal(mine, theirs, check_exact=True)
        assert list(mine.columns[:3]) == ["id", "score", "is_anomaly"]
        if source.suffix == ".csv":
            assert (out / source.name).read_bytes() == expected.read_bytes()
        else:
            assert pq.read_table(out / source.name).equals(pq.read_table(expected))
        rows += len(mine)
        anomalies += int(mine["is_anomaly"].sum())
    assert summary["rows"] == rows == 700 + 1200 + 50 + 3000 + 400 + 900
    assert summary["anomalies"] == anomalies > 0
    parts = {Path(p["input"]).name: p for p in summary["partitions"]}
    assert parts["part-3.parquet"]["rows"] == 3000

    # The workers kept the model open: a second run opens it no more.
    again = score_dataset(
        "tiny@champion", dataset, tmp_path / "again", scheduler=cluster,
        registry=str(registered["registry"]), output_format="parquet",
    )  # fmt: skip
    assert again.model_opens == 0
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == [
        f"part-{i}.parquet" for i in range(6)
    ]
    first = pd.read_parquet(tmp_path / "again" / "part-5.parquet")
    assert first["row"].tolist() == list(range(1, 901))
    # The CSV holds float32 scores as their shortest text: equal once read as float32.
    csv_scores = read(out / "part-5.csv")["score"].to_numpy(np.float32)
    np.testing.assert_array_equal(first["score"].to_numpy(), csv_scores)

    # The scoring path on the workers loaded none of torch, Optuna, scikit-learn.
    heavy = cluster.run(
        lambda: sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "optuna", "sklearn"))
    )
    assert list(heavy.values()) == [[], []]


def test_model_file_from_another_process_without_torch(registered, cluster, dataset, tmp_path):
    """A plain .onnx path, from a separate client process that imports no torch."""
    model = tmp_path / "model.onnx"
    model.write_bytes(registered["file"].read_bytes())
    out = tmp_path / "scores"
    script = f"""
import json, sys
from anomtune.distributed import score_dataset
result = score_dataset({str(model)!r}, {str(dataset / "*.parquet")!r}, {str(out)!r},
                       scheduler={cluster.scheduler.address!r})
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "optuna", "sklearn"))
print(json.dumps({{"summary": result.to_dict(), "heavy": heavy}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["heavy"] == []
    assert report["summary"]["files"] == 4 and report["summary"]["rows"] == 4950
    assert report["summary"]["model"] == str(model)
    assert report["summary"]["sha256"] == registered["sha256"]
    for i in range(4):
        expected = tmp_path / f"one-{i}.parquet"
        ok("score", model, dataset / f"part-{i}.parquet", "-o", expected, "--quiet")
        assert pq.read_table(out / f"part-{i}.parquet").equals(pq.read_table(expected))


def test_a_bad_partition_leaves_no_output(registered, cluster, dataset, tmp_path):
    partition(100, 9).drop(columns=["x4"]).to_parquet(dataset / "part-9.parquet", index=False)
    out = tmp_path / "new" / "scores"
    err = refused(
        "score", "tiny@champion", dataset, "--dask", cluster.scheduler.address, "-o", out,
        "--registry", registered["registry"],
    )  # fmt: skip
    assert "part-9.parquet: missing column 'x4'" in err
    assert not (tmp_path / "new").exists()

    # An output folder that held files keeps them as they were.
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "part-0.parquet").write_text("old")
    with pytest.raises(DataError, match="missing column 'x4'"):
        score_dataset(
            "tiny@champion", dataset, kept, scheduler=cluster,
            registry=str(registered["registry"]),
        )  # fmt: skip
    assert [p.name for p in kept.iterdir()] == ["part-0.parquet"]
    assert (kept / "part-0.parquet").read_text() == "old"


def test_bad_requests_are_one_line(registered, dataset, tmp_path):
    reg = registered["registry"]
    out = tmp_path / "out"
    err = refused("score", "tiny@champion", tmp_path / "none-*.csv", "--dask", "local", "-o", out,
                  "--registry", reg)  # fmt: skip
    assert "no data files match" in err
    err = refused("score", "tiny@champion", dataset, "--dask", "local", "--registry", reg)
    assert "give a folder with -o" in err
    err = refused("score", "tiny@champion", dataset, "--dask", "local", "-o", out,
                  "--registry", reg, "--evaluate", "--label", "id")  # fmt: skip
    assert "not --dask" in err
    err = refused("score", "tiny@champion", dataset, "--dask", "", "-o", out, "--registry", reg)
    assert "scheduler's address" in err
    err = refused("score", "tiny@champion", dataset, "--dask", "nowhere", "-o", out,
                  "--registry", reg)  # fmt: skip
    assert "not a Dask scheduler address" in err
    err = refused("score", "tiny@champion", dataset, "--dask", "local", "-o", dataset,
                  "--registry", reg)  # fmt: skip
    assert "is an input file" in err
    err = refused("score", "nosuch@champion", dataset, "--dask", "local", "-o", out,
                  "--registry", reg)  # fmt: skip
    assert "nosuch" in err
    assert not out.exists()


def test_an_address_without_a_scheduler(registered, dataset, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port once the socket is closed.
    with pytest.raises(
        ClusterError, match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"
    ):
        score_dataset(
            "tiny@champion", dataset, tmp_path / "out", scheduler=f"tcp://127.0.0.1:{port}",
            registry=str(registered["registry"]), connect_timeout=1,
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_without_dask_installed_the_error_names_the_extra(registered, dataset, tmp_path):
    script = f"""
import sys
sys.modules["distributed"] = None  # as if the dask extra were not installed
from anomtune.cli import main
main(["score", "tiny@champion", {str(dataset)!r}, "--dask", "local", "-o",
      {str(tmp_path / "out")!r}, "--registry", {str(registered["registry"])!r}])
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "anomtune: error: scoring on a Dask cluster needs Dask: install the Dask extra: "
        "pip install 'anomtune[dask]'"
    ]


# -- the README's Spark recipe ------------------------------------------------------


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    """A local Spark session (two cores, 127.0.0.1) whose Python workers run this
    interpreter; skipped without pyspark, except under CI."""
    if in_ci():
        import pyspark  # noqa: F401
    else:
        pytest.importorskip("pyspark", reason="needs anomtune[spark]")
    from pyspark.sql import SparkSession

    previous = {k: os.environ.get(k) for k in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    os.environ["PYSPARK_PYTHON"] = os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("anomtune-test")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.local.dir", str(tmp_path_factory.mktemp("spark-local")))
        .getOrCreate()
    )
    try:
        yield session
    finally:
        session.stop()
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def readme_spark_recipe() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    found = [b for b in blocks if "mapInPandas" in b]
    assert len(found) == 1, "the README has one Spark recipe"
    return found[0]


@pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")
def test_the_readme_spark_recipe_scores_like_anomtune_score(registered, spark, dataset, tmp_path):
    out = tmp_path / "spark-scores"
    code = readme_spark_recipe()
    for old, new in [
        ('"/shared/anomtune/registry"', repr(str(registered["registry"]))),
        ('"fraud@champion"', '"tiny@champion"'),
        ('"data/*.parquet"', repr(str(dataset / "*.parquet"))),
        ('.write.parquet("scores")', f".write.parquet({str(out)!r})"),
    ]:
        assert code.count(old) == 1, old
        code = code.replace(old, new)
    namespace = {"__name__": "readme_spark_recipe"}
    exec(compile(code, "README.md (Spark recipe)", "exec"), namespace)
    assert namespace["MODEL"] == "tiny/1"

    got = pd.read_parquet(out).sort_values("id").reset_index(drop=True)
    expected = []
    for i in range(4):
        one = tmp_path / f"one-{i}.csv"
        ok(
            "score", "tiny@champion", dataset / f"part-{i}.parquet", "-o", one, "--registry",
            registered["registry"], "--id-column", "id", "--quiet",
        )  # fmt: skip
        expected.append(pd.read_csv(one))
    want = pd.concat(expected).sort_values("id").reset_index(drop=True)
    assert got["id"].tolist() == want["id"].tolist() and len(got) == 4950
    np.testing.assert_allclose(got["score"], want["score"].astype(np.float32), rtol=1e-6)
    np.testing.assert_array_equal(got["is_anomaly"], want["is_anomaly"])
